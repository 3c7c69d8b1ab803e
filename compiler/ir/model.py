"""IR types: the resolved mesh every renderer and backend reads. All frozen; each keeps a span."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from compiler.diagnostics import Span
from compiler.spec.model import Cluster, Datacenter, Issuer, Sidecar


@dataclass(frozen=True, kw_only=True, slots=True)
class Retries:
    """Retry policy; `attempts` counts the first try too."""

    attempts: int
    per_try_timeout_ms: int
    retry_on: tuple[str, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class CircuitBreaker:
    """Envoy circuit-breaker thresholds."""

    max_connections: int
    max_pending_requests: int
    max_requests: int
    max_retries: int


@dataclass(frozen=True, kw_only=True, slots=True)
class OutlierDetection:
    """Envoy outlier detection; without it, priority failover never triggers."""

    consecutive_5xx: int
    interval_ms: int
    base_ejection_time_ms: int
    max_ejection_percent: int


@dataclass(frozen=True, kw_only=True, slots=True)
class Policy:
    """The effective resiliency policy of one edge: mesh defaults overlaid by the edge's overrides."""

    connect_timeout_ms: int
    timeout_ms: int
    retries: Retries
    circuit_breaker: CircuitBreaker
    outlier_detection: OutlierDetection


@dataclass(frozen=True, kw_only=True, slots=True)
class HealthCheck:
    """How Nerve checks the app: `http` with a path, or `tcp`."""

    kind: str
    path: str | None
    interval_ms: int
    timeout_ms: int
    rise: int
    fall: int


@dataclass(frozen=True, kw_only=True, slots=True)
class ZookeeperSource:
    """Discovery of a VM pool: the pool's datacenter ensemble and the path Nerve registers under."""

    name: str
    datacenter: str
    region: str
    priority: int
    hosts: tuple[str, ...]
    path: str
    kind: Literal["zookeeper"] = "zookeeper"  # the tag that tells the two sources apart


@dataclass(frozen=True, kw_only=True, slots=True)
class KubernetesSource:
    """Discovery of a cluster workload: the Endpoints of its Service through the API server."""

    name: str
    datacenter: str
    region: str
    priority: int
    cluster: str
    api_server: str
    namespace: str
    service: str
    kind: Literal["kubernetes"] = "kubernetes"


Source = ZookeeperSource | KubernetesSource


@dataclass(frozen=True, kw_only=True, slots=True)
class Egress:
    """One dependency of a workload: where clients reach it locally and where it really runs."""

    service: str
    local_port: int
    protocol: str
    locality: str
    server_identities: tuple[str, ...]
    policy: Policy
    sources: tuple[Source, ...]
    span: Span


@dataclass(frozen=True, kw_only=True, slots=True)
class Ingress:
    """The sidecar's mTLS listener in front of the app, and who may call through it."""

    mesh_port: int
    app_port: int
    protocol: str
    allowed_clients: tuple[str, ...]
    client_services: tuple[str, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class Registration:
    """Nerve's registration of a VM instance in its datacenter's ZooKeeper."""

    zk_hosts: tuple[str, ...]
    zk_path: str
    port: int
    health_check: HealthCheck
    labels: Mapping[str, str]


@dataclass(frozen=True, kw_only=True, slots=True)
class Workload:
    """One deployment unit and unit of rollout: a VM pool or a cluster/namespace deployment."""

    id: str
    platform: str
    service: str
    datacenter: str
    region: str
    cluster: str | None
    namespace: str
    identity: str
    ingress: Ingress
    egress: tuple[Egress, ...]
    registration: Registration | None
    restart_sensitive: bool
    owner: str
    span: Span


@dataclass(frozen=True, kw_only=True, slots=True)
class Mesh:
    """The resolved mesh: its settings and every workload, sorted by id."""

    name: str
    trust_domain: str
    sidecar: Sidecar
    issuer: Issuer
    datacenters: Mapping[str, Datacenter]
    clusters: Mapping[str, Cluster]
    workloads: tuple[Workload, ...]
    # Workload id -> wave name, from the wave policy of the revision being built ({} without one).
    waves: Mapping[str, str] = field(default_factory=dict)
    # Identities of workloads that exist only in other revisions live in a rollout: the allow-lists
    # of a rollout build admit them too (expand before contract).
    rollout_identities: frozenset[str] = frozenset()
    # (cluster, service, namespace) of the pods other revisions live in a rollout run, where this revision has none
    # (a client that is new, or moved to another namespace): a NetworkPolicy of a rollout build admits them too.
    rollout_pods: frozenset[tuple[str, str, str]] = frozenset()
    # (cluster, client service, namespace) that other live revisions' external readers watch: a reader this revision
    # lays out keeps granting those namespaces too, so an older client still reading one keeps its grant
    rollout_readers: frozenset[tuple[str, str, str]] = frozenset()
    # Views of this very object that the stages after lowering compute from it alone, each once, by the name of the
    # function computing it (compiler.backends.kubernetes.readers.external_readers). Not part of the value: a
    # changed mesh (dataclasses.replace) starts without any.
    derived: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def workloads_of(self, service: str) -> tuple[Workload, ...]:
        """The workloads of one service, sorted by id."""
        return tuple(w for w in self.workloads if w.service == service)
