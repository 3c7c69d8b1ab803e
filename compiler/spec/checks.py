"""Semantic checks of a schema-valid spec: an ordered tuple of small functions, one code each."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from compiler.diagnostics import Diagnostic, Span, SpecError, did_you_mean, excerpt, quote
from compiler.ir.routing import unreachable
from compiler.rollout.policy import assign
from compiler.spec.load import MESH_FILE, Document
from compiler.spec.model import (
    DISCOVERY_NAMESPACE,
    Dependency,
    ServiceSpec,
    Spec,
    deep_merge,
    duration_ms,
    mesh_from_document,
    service_from_document,
)
from compiler.spec.schema import validate_document

Check = Callable[[Spec], Iterator[Diagnostic]]


def _error(span: Span, code: str, message: str) -> Diagnostic:
    return Diagnostic(span=span, code=code, message=message)


def check_datacenter_refs(spec: Spec) -> Iterator[Diagnostic]:
    """VM placements and clusters name datacenters that mesh.yaml defines."""
    known = spec.mesh.datacenters
    for name, cluster in spec.mesh.clusters.items():
        if cluster.datacenter not in known:
            yield _error(
                spec.at(spec.mesh.file, "clusters", name, "datacenter"),
                "unknown-datacenter",
                f"cluster {quote(name)} is in unknown datacenter {quote(cluster.datacenter)}"
                f"{did_you_mean(cluster.datacenter, known)}",
            )
    for service in spec.services.values():
        for i, dc in enumerate(service.vm_datacenters):
            if dc not in known:
                yield _error(
                    spec.at(service.file, "deploy", "vm", "datacenters", i),
                    "unknown-datacenter",
                    f"unknown datacenter {quote(dc)}{did_you_mean(dc, known)}; "
                    f"mesh.yaml defines {', '.join(sorted(known))}",
                )


def check_cluster_refs(spec: Spec) -> Iterator[Diagnostic]:
    """Kubernetes placements name clusters that mesh.yaml defines."""
    known = spec.mesh.clusters
    for service in spec.services.values():
        for placement in service.kubernetes:
            if placement.cluster not in known:
                yield _error(
                    spec.at(service.file, "deploy", "kubernetes", placement.index, "cluster"),
                    "unknown-cluster",
                    f"unknown cluster {quote(placement.cluster)}{did_you_mean(placement.cluster, known)}",
                )


def check_dependency_refs(spec: Spec) -> Iterator[Diagnostic]:
    """Dependencies name services that have a file in services/."""
    for service in spec.services.values():
        for dep in service.dependencies:
            if dep.service not in spec.services and dep.service != service.name:
                yield _error(
                    dep.span,
                    "unknown-dependency",
                    f"unknown dependency {quote(dep.service)}{did_you_mean(dep.service, spec.services)}; "
                    f"add services/{dep.service}.yaml or fix the name",
                )


def check_self_dependency(spec: Spec) -> Iterator[Diagnostic]:
    """A service does not list itself: calls within a service never leave its pod or VM."""
    for service in spec.services.values():
        for dep in service.dependencies:
            if dep.service == service.name:
                yield _error(
                    dep.span,
                    "self-dependency",
                    f"service {quote(service.name)} depends on itself; remove this entry",
                )


def check_duplicate_dependency(spec: Spec) -> Iterator[Diagnostic]:
    """Each dependency is listed once, since it gets one listener and one cluster."""
    for service in spec.services.values():
        seen: dict[str, Dependency] = {}
        for dep in service.dependencies:
            if dep.service in seen:
                yield _error(
                    dep.span,
                    "duplicate-dependency",
                    f"dependency {quote(dep.service)} is already listed at line {seen[dep.service].span.line}; "
                    "merge the two entries",
                )
            seen.setdefault(dep.service, dep)


def check_failover_lists(spec: Spec) -> Iterator[Diagnostic]:
    """Failover lists name other, known datacenters, each once."""
    known = spec.mesh.datacenters
    for name, dc in known.items():
        seen: set[str] = set()
        for i, target in enumerate(dc.failover):
            span = spec.at(spec.mesh.file, "datacenters", name, "failover", i)
            if target not in known:
                yield _error(
                    span,
                    "failover-unknown",
                    f"failover of {quote(name)} names unknown datacenter {quote(target)}{did_you_mean(target, known)}",
                )
            elif target == name:
                yield _error(
                    span,
                    "failover-self",
                    f"failover of {quote(name)} names {quote(name)} itself; "
                    "a datacenter is always tried first, remove it",
                )
            elif target in seen:
                yield _error(
                    span,
                    "failover-duplicate",
                    f"failover of {quote(name)} names {quote(target)} twice; keep the first",
                )
            seen.add(target)


def check_local_ports(spec: Spec) -> Iterator[Diagnostic]:
    """Every local_port is unique mesh-wide: a client binds the local ports of all its dependencies."""
    owners: dict[int, ServiceSpec] = {}
    for service in sorted(spec.services.values(), key=lambda s: s.file):
        first = owners.setdefault(service.local_port, service)
        if first is not service:
            yield _error(
                spec.at(service.file, "local_port"),
                "duplicate-local-port",
                f"local_port {service.local_port} is already used by service {quote(first.name)} ({first.file}); "
                "pick an unused port",
            )


def check_workload_ports(spec: Spec) -> Iterator[Diagnostic]:
    """Within one workload, the app port, mesh port, admin port and dependency local ports all differ."""
    admin = spec.mesh.sidecar.admin_port
    for service in spec.services.values():
        # The admin port comes first, so a clash with it is reported at the service's own port.
        claims: list[tuple[int, str, Span]] = [
            (
                admin,
                "the Envoy admin port (mesh.yaml sidecar.admin_port)",
                spec.at(spec.mesh.file, "sidecar", "admin_port"),
            ),
            (service.port, "port", spec.at(service.file, "port")),
            (service.mesh_port, "mesh_port", spec.at(service.file, "mesh_port")),
        ]
        # A dependency listed twice is reported by check_duplicate_dependency, not as a port clash.
        first_entries: dict[str, Dependency] = {}
        for dep in service.dependencies:
            first_entries.setdefault(dep.service, dep)
        for dep in first_entries.values():
            server = spec.services.get(dep.service)
            if server is not None and server is not service:
                claims.append((server.local_port, f"local_port of dependency {quote(server.name)}", dep.span))
        yield from _port_clashes(service, claims)


def _port_clashes(service: ServiceSpec, claims: list[tuple[int, str, Span]]) -> Iterator[Diagnostic]:
    first: dict[int, str] = {}
    for port, what, span in claims:
        if port in first:
            yield _error(
                span,
                "port-clash",
                f"{what} {port} of service {quote(service.name)} clashes with {first[port]}; "
                "every port of a workload must differ",
            )
        else:
            first[port] = what


def check_placements(spec: Spec) -> Iterator[Diagnostic]:
    """A service runs somewhere, and at most once per datacenter's VMs and per cluster."""
    for service in spec.services.values():
        if not service.vm_datacenters and not service.kubernetes:
            yield _error(
                spec.key_at(service.file, "deploy"),
                "no-placement",
                f"service {quote(service.name)} is placed nowhere; add deploy.vm.datacenters or deploy.kubernetes",
            )
        for i, dc in enumerate(service.vm_datacenters):
            if dc in service.vm_datacenters[:i]:
                yield _error(
                    spec.at(service.file, "deploy", "vm", "datacenters", i),
                    "duplicate-placement",
                    f"datacenter {quote(dc)} is listed twice",
                )
        clusters: set[str] = set()
        for placement in service.kubernetes:
            if placement.cluster in clusters:
                yield _error(
                    placement.span,
                    "duplicate-placement",
                    f"cluster {quote(placement.cluster)} is listed twice; a service runs in one namespace per cluster",
                )
            clusters.add(placement.cluster)


def check_reserved_namespaces(spec: Spec) -> Iterator[Diagnostic]:
    """No service is placed in the namespace that holds external discovery readers' identities."""
    for service in spec.services.values():
        for placement in service.kubernetes:
            if placement.namespace == DISCOVERY_NAMESPACE:
                yield _error(
                    spec.at(service.file, "deploy", "kubernetes", placement.index, "namespace"),
                    "reserved-namespace",
                    f"namespace {quote(DISCOVERY_NAMESPACE)} holds the identities of discovery readers outside the "
                    "cluster; place the service in another namespace",
                )


def check_routing(spec: Spec) -> Iterator[Diagnostic]:
    """Every client DC reaches its dependencies: `local` ones in its own DC, `failover` ones everywhere they run."""
    datacenters = spec.mesh.datacenters
    for service in spec.services.values():
        client_dcs = _datacenters(spec, service)
        for dep in service.dependencies:
            server = spec.services.get(dep.service)
            if server is None or server is service:
                continue
            server_dcs = _datacenters(spec, server)
            for dc in sorted(client_dcs):
                missing = unreachable(dc, server_dcs, server.locality, datacenters)
                if missing and server.locality == "local":
                    yield _error(
                        dep.span,
                        "local-unavailable",
                        f"{quote(service.name)} runs in {quote(dc)} but its `local` dependency "
                        f"{quote(server.name)} does not; "
                        f"run {quote(server.name)} in {quote(dc)} or make it `failover`",
                    )
                elif missing:
                    yield _error(
                        dep.span,
                        "failover-unreachable",
                        f"{quote(service.name)} in {quote(dc)} cannot reach {quote(server.name)} "
                        f"in {', '.join(map(quote, missing))}; "
                        f"add {', '.join(missing)} to the failover list of {quote(dc)} in mesh.yaml",
                    )


def _datacenters(spec: Spec, service: ServiceSpec) -> set[str]:
    known = spec.mesh.datacenters
    dcs = {dc for dc in service.vm_datacenters if dc in known}
    for placement in service.kubernetes:
        cluster = spec.mesh.clusters.get(placement.cluster)
        if cluster is not None and cluster.datacenter in known:
            dcs.add(cluster.datacenter)
    return dcs


# Policy keys only an HTTP route can apply: Envoy's tcp_proxy has no request timeout, no per-try
# timeout and no retry conditions (it retries connecting, `retries.attempts` times, and nothing else).
TCP_IGNORED = (("timeout",), ("retries", "per_try_timeout"), ("retries", "on"))


def check_tcp_policy(spec: Spec) -> Iterator[Diagnostic]:
    """A dependency on a `tcp` service sets no HTTP-only policy key, which would never reach Envoy."""
    for service in spec.services.values():
        for dep in service.dependencies:
            server = spec.services.get(dep.service)
            if server is None or server.protocol != "tcp":
                continue
            for path in TCP_IGNORED:
                holder = dep.overrides.get(path[0]) if len(path) > 1 else dep.overrides
                if isinstance(holder, Mapping) and path[-1] in holder:
                    yield _error(
                        spec.key_at(service.file, "dependencies", dep.index, *path),
                        "tcp-http-policy",
                        f"{'.'.join(path)} has no effect on {quote(dep.service)}, a tcp service: Envoy's TCP proxy "
                        "has no request timeout or retry conditions; remove it (tcp takes connect_timeout and "
                        "retries.attempts, the number of connection attempts)",
                    )


def check_retry_budget(spec: Spec) -> Iterator[Diagnostic]:
    """Per-try timeout × attempts fits in the request timeout, for the defaults and every overriding edge."""
    message = _budget_problem(spec.mesh.defaults)
    if message:
        yield _error(spec.key_at(spec.mesh.file, "defaults"), "retry-budget", f"defaults: {message}")
        return
    for service in spec.services.values():
        for dep in service.dependencies:
            server = spec.services.get(dep.service)
            # a tcp server has no request timeout to budget
            if dep.overrides and (server is None or server.protocol != "tcp"):
                message = _budget_problem(deep_merge(spec.mesh.defaults, dep.overrides))
                if message:
                    yield _error(dep.span, "retry-budget", f"dependency {quote(dep.service)}: {message}")


def _budget_problem(policy: Mapping[str, Any]) -> str | None:
    retries = policy["retries"]
    per_try, attempts, timeout = (
        duration_ms(retries["per_try_timeout"]),
        retries["attempts"],
        duration_ms(policy["timeout"]),
    )
    if per_try * attempts <= timeout:
        return None
    return (
        f"{attempts} attempts × {retries['per_try_timeout']} per try = {per_try * attempts}ms exceeds the timeout "
        f"{policy['timeout']}; set per_try_timeout to at most {timeout // attempts}ms or raise timeout"
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class SpecTarget:
    """A target (VM pool or cluster workload) as the spec places it, for wave matching before lowering."""

    id: str
    platform: str
    service: str
    datacenter: str
    cluster: str | None
    restart_sensitive: bool


def spec_targets(spec: Spec) -> list[SpecTarget]:
    """Every target the spec places, with ids as lowering names them."""
    found = []
    for svc in spec.services.values():
        for dc in svc.vm_datacenters:
            found.append(
                SpecTarget(
                    id=f"vm/{svc.name}/{dc}",
                    platform="vm",
                    service=svc.name,
                    datacenter=dc,
                    cluster=None,
                    restart_sensitive=svc.restart_sensitive,
                )
            )
        for placement in svc.kubernetes:
            cluster = spec.mesh.clusters.get(placement.cluster)
            found.append(
                SpecTarget(
                    id=f"k8s/{placement.cluster}/{placement.namespace}/{svc.name}",
                    platform="kubernetes",
                    service=svc.name,
                    datacenter=cluster.datacenter if cluster else "",
                    cluster=placement.cluster,
                    restart_sensitive=svc.restart_sensitive,
                )
            )
    return found


def check_wave_names(spec: Spec) -> Iterator[Diagnostic]:
    """Wave names are unique, and a wave's match names datacenters, clusters and services that exist."""
    policy = spec.mesh.rollout
    if policy is None:
        return
    known = {"datacenters": spec.mesh.datacenters, "clusters": spec.mesh.clusters, "services": spec.services}
    seen: dict[str, int] = {}
    for wave in policy.waves:
        if wave.name in seen:
            yield _error(
                wave.span,
                "rollout-duplicate-wave",
                f"wave {wave.name!r} is already defined as wave {seen[wave.name] + 1}; rename one",
            )
        seen.setdefault(wave.name, wave.index)
        for key, names in known.items():
            for i, name in enumerate(getattr(wave.match, key) or ()):
                if name not in names:
                    yield _error(
                        spec.at(spec.mesh.file, "rollout", "waves", wave.index, "match", key, i),
                        "rollout-unknown-name",
                        f"wave {wave.name!r} matches unknown {key[:-1]} {name!r}{did_you_mean(name, names)}",
                    )


def check_wave_coverage(spec: Spec) -> Iterator[Diagnostic]:
    """Every target belongs to a wave: the last wave must take every target the others leave."""
    policy = spec.mesh.rollout
    if policy is None:
        return
    last = policy.waves[-1]
    if last.takes_hosts:
        yield _error(
            spec.at(spec.mesh.file, "rollout", "waves", last.index, "hosts_per_pool"),
            "rollout-uncovered",
            f"the last wave {last.name!r} takes canary hosts only; "
            "add a last wave without hosts_per_pool that takes every target left",
        )
        return
    targets = spec_targets(spec)
    assigned = assign(policy, targets)
    left = sorted(t.id for t in targets if t.id not in assigned)
    if left:
        more = f" and {len(left) - 5} more" if len(left) > 5 else ""
        yield _error(
            last.span,
            "rollout-uncovered",
            f"no wave takes {', '.join(left[:5])}{more}; the last wave {last.name!r} must match every target left "
            "(drop its match)",
        )


SEMANTIC_CHECKS: tuple[Check, ...] = (
    check_datacenter_refs,
    check_cluster_refs,
    check_dependency_refs,
    check_self_dependency,
    check_duplicate_dependency,
    check_failover_lists,
    check_local_ports,
    check_workload_ports,
    check_placements,
    check_reserved_namespaces,
    check_routing,
    check_tcp_policy,
    check_retry_budget,
    check_wave_names,
    check_wave_coverage,
)


def run_checks(spec: Spec) -> list[Diagnostic]:
    """Every diagnostic of every semantic check, in check order."""
    return [diagnostic for check in SEMANTIC_CHECKS for diagnostic in check(spec)]


def check(documents: Mapping[str, Document]) -> Spec:
    """Schema-check every document, build the model, run the semantic checks; raise SpecError with all findings."""
    problems: list[Diagnostic] = []
    mesh_doc = next(
        doc for name, doc in documents.items() if name.endswith("/" + MESH_FILE) or name == MESH_FILE
    )
    problems += validate_document(mesh_doc, "mesh")
    service_docs = [doc for doc in documents.values() if doc is not mesh_doc]
    for doc in service_docs:
        problems += validate_document(doc, "service")
        problems += _name_mismatch(doc)
    if problems:
        raise SpecError(problems)
    services = {svc.name: svc for svc in map(service_from_document, service_docs)}
    spec = Spec(mesh=mesh_from_document(mesh_doc), services=services, documents=documents)
    problems = run_checks(spec)
    if problems:
        raise SpecError(problems)
    return spec


def _name_mismatch(doc: Document) -> Iterator[Diagnostic]:
    stem = PurePosixPath(doc.file).stem
    name = doc.data.get("service") if isinstance(doc.data, dict) else None
    if isinstance(name, str) and name != stem:
        yield _error(
            doc.span(("service",)),
            "service-name-mismatch",
            f"service {quote(name)} is defined in {quote(PurePosixPath(doc.file).name)}; "
            f"rename the file to {excerpt(name)}.yaml or fix `service:`",
        )
