"""Nerve document of a VM workload: register host:mesh_port in the datacenter's ZooKeeper while healthy.

Per-host values are not rendered: the platform fills the top-level `instance_id` and each
service's `host` at apply time (Puppet from facts).
"""

from __future__ import annotations

from typing import Any

from compiler.ir.model import HealthCheck, Registration, Workload

LOOPBACK = "127.0.0.1"


def seconds(ms: int) -> int | float:
    """Milliseconds as Nerve's seconds: an int when whole, so `2s` renders as 2, `250ms` as 0.25."""
    return ms // 1000 if ms % 1000 == 0 else ms / 1000


def nerve(workload: Workload) -> dict[str, Any] | None:
    """The Nerve config of a VM workload; None for workloads that do not register (pods)."""
    registration = workload.registration
    if registration is None:
        return None
    return {"services": {workload.service: service_entry(workload, registration)}}


def service_entry(workload: Workload, registration: Registration) -> dict[str, Any]:
    """One registration: the sidecar's mesh port, under the path Synapse watches, while checks pass."""
    check = registration.health_check
    return {
        "port": registration.port,
        "reporter_type": "zookeeper",
        "zk_hosts": list(registration.zk_hosts),
        "zk_path": registration.zk_path,
        "check_interval": seconds(check.interval_ms),
        "checks": [app_check(workload, check), sidecar_check(registration, check)],
        "labels": dict(sorted(registration.labels.items())),
    }


def app_check(workload: Workload, check: HealthCheck) -> dict[str, Any]:
    """The app's own health, asked directly on loopback (not through Envoy, which requires mTLS)."""
    entry: dict[str, Any] = {
        "type": check.kind,
        "name": "app",
        "host": LOOPBACK,
        "port": workload.ingress.app_port,
    }
    if check.kind == "http":
        entry["uri"] = check.path
    return entry | _thresholds(check)


def sidecar_check(registration: Registration, check: HealthCheck) -> dict[str, Any]:
    """Envoy's ingress listener is up: the registered port must accept connections too."""
    return {"type": "tcp", "name": "sidecar", "host": LOOPBACK, "port": registration.port} | _thresholds(
        check
    )


def _thresholds(check: HealthCheck) -> dict[str, Any]:
    return {"timeout": seconds(check.timeout_ms), "rise": check.rise, "fall": check.fall}
