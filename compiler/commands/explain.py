"""`meshc explain`: where a service runs, how each workload reaches its dependencies, who may call it."""

from __future__ import annotations

from typing import Any

from compiler.diagnostics import unknown_service
from compiler.ir.model import Egress, Mesh, Policy, Source, Workload, ZookeeperSource


def explain(mesh: Mesh, service: str) -> dict[str, Any]:
    """A JSON-ready account of one service's workloads, routes and callers."""
    workloads = mesh.workloads_of(service)
    if not workloads:
        raise unknown_service(service, {w.service for w in mesh.workloads})
    first = workloads[0]
    return {
        "service": service,
        "owner": first.owner,
        "protocol": first.ingress.protocol,
        "restart_sensitive": first.restart_sensitive,
        "callers": list(first.ingress.client_services),
        "allowed_identities": list(first.ingress.allowed_clients),
        "workloads": [_workload(w, mesh.waves.get(w.id)) for w in workloads],
    }


def _workload(workload: Workload, wave: str | None) -> dict[str, Any]:
    return {
        "id": workload.id,
        "wave": wave,
        "platform": workload.platform,
        "datacenter": workload.datacenter,
        "region": workload.region,
        "identity": workload.identity,
        "ingress": {"mesh_port": workload.ingress.mesh_port, "app_port": workload.ingress.app_port},
        "dependencies": [_egress(e) for e in workload.egress],
    }


def _egress(egress: Egress) -> dict[str, Any]:
    return {
        "service": egress.service,
        "listener": f"127.0.0.1:{egress.local_port}",
        "locality": egress.locality,
        "protocol": egress.protocol,
        "policy": _tcp_policy(egress.policy) if egress.protocol == "tcp" else _policy(egress.policy),
        "sources": [_source(s) for s in egress.sources],
    }


def _policy(policy: Policy) -> dict[str, Any]:
    return {
        "connect_timeout_ms": policy.connect_timeout_ms,
        "timeout_ms": policy.timeout_ms,
        "retries": {
            "attempts": policy.retries.attempts,
            "per_try_timeout_ms": policy.retries.per_try_timeout_ms,
            "on": list(policy.retries.retry_on),
        },
        "circuit_breaker": {
            k: getattr(policy.circuit_breaker, k)
            for k in ("max_connections", "max_pending_requests", "max_requests", "max_retries")
        },
        "outlier_detection": {
            k: getattr(policy.outlier_detection, k)
            for k in ("consecutive_5xx", "interval_ms", "base_ejection_time_ms", "max_ejection_percent")
        },
    }


def _tcp_policy(policy: Policy) -> dict[str, Any]:
    """What Envoy's TCP proxy applies: no request timeout or retry conditions, only connection attempts."""
    return {
        "connect_timeout_ms": policy.connect_timeout_ms,
        "max_connect_attempts": policy.retries.attempts,
        "circuit_breaker": {"max_connections": policy.circuit_breaker.max_connections},
        "outlier_detection": {
            k: getattr(policy.outlier_detection, k)
            for k in ("consecutive_5xx", "interval_ms", "base_ejection_time_ms", "max_ejection_percent")
        },
    }


def _source(source: Source) -> dict[str, Any]:
    common = {
        "priority": source.priority,
        "name": source.name,
        "kind": source.kind,
        "datacenter": source.datacenter,
    }
    if isinstance(source, ZookeeperSource):
        return {**common, "hosts": list(source.hosts), "path": source.path}
    return {
        **common,
        "cluster": source.cluster,
        "api_server": source.api_server,
        "namespace": source.namespace,
        "service": source.service,
    }


def format_explain(report: dict[str, Any]) -> str:
    """The explain report as indented text for a terminal."""
    lines = [
        f"{report['service']}  owner {report['owner']}, protocol {report['protocol']}"
        + (", restart-sensitive" if report["restart_sensitive"] else ""),
        f"  called by: {', '.join(report['callers']) or 'nobody'}",
    ]
    lines += [f"    accepts {identity}" for identity in report["allowed_identities"]]
    for workload in report["workloads"]:
        wave = f"  wave {workload['wave']}" if workload["wave"] else ""
        lines.append(
            f"  {workload['id']}  [{workload['datacenter']}, {workload['region']}]  {workload['identity']}{wave}"
        )
        lines.append(
            f"    ingress :{workload['ingress']['mesh_port']} (mTLS) -> 127.0.0.1:{workload['ingress']['app_port']}"
        )
        for dep in workload["dependencies"]:
            lines += _format_dependency(dep)
    return "\n".join(lines)


def _format_dependency(dep: dict[str, Any]) -> list[str]:
    policy = dep["policy"]
    if dep["protocol"] == "tcp":
        attempts, connect = policy["max_connect_attempts"], policy["connect_timeout_ms"]
        effect = f"tcp, {attempts} connection attempt(s), connect {connect}ms"
    else:
        retries = policy["retries"]
        effect = (
            f"timeout {policy['timeout_ms']}ms, {retries['attempts']} attempt(s) × {retries['per_try_timeout_ms']}ms, "
            f"connect {policy['connect_timeout_ms']}ms"
        )
    lines = [f"    -> {dep['service']} on {dep['listener']} ({dep['locality']}): {effect}"]
    for source in dep["sources"]:
        where = (
            f"zookeeper {','.join(source['hosts'])} {source['path']}"
            if source["kind"] == "zookeeper"
            else f"kubernetes {source['api_server']} {source['namespace']}/{source['service']}"
        )
        lines.append(f"         p{source['priority']}  {source['datacenter']:<10} {where}")
    return lines
