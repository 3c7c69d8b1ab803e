"""Typed, frozen views of a schema-valid spec; each object remembers its file for diagnostics."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from compiler.diagnostics import Span
from compiler.spec.document import DataPath, Document
from compiler.spec.wave_policy import WavePolicy, policy_from_document

_DURATION = re.compile(r"(\d+)(ms|s|m|h)")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}

# meshc's own defaults, under whatever mesh.yaml `defaults:` says. Chosen to match Envoy's
# documented defaults except where a mesh needs more (retries on connect failure and reset).
BUILTIN_DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {
        "connect_timeout": "1s",
        "timeout": "15s",
        "retries": {"attempts": 2, "per_try_timeout": "5s", "on": ["connect-failure", "reset", "5xx"]},
        "circuit_breaker": {
            "max_connections": 1024,
            "max_pending_requests": 1024,
            "max_requests": 1024,
            "max_retries": 3,
        },
        "outlier_detection": {
            "consecutive_5xx": 5,
            "interval": "10s",
            "base_ejection_time": "30s",
            "max_ejection_percent": 50,
        },
        "health_check": {"http": "/health", "interval": "2s", "timeout": "1s", "rise": 3, "fall": 2},
    }
)
# The namespace meshc keeps, in every cluster, for the identities of discovery readers outside it
# (VM pools and other clusters' pods): no service may be placed there.
DISCOVERY_NAMESPACE = "meshc-discovery"
POLICY_KEYS = ("connect_timeout", "timeout", "retries", "circuit_breaker", "outlier_detection")


def duration_ms(text: str) -> int:
    """`250ms`, `2s`, `5m`, `1h` -> milliseconds (the schema guarantees the form)."""
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r}")
    return int(match.group(1)) * _UNIT_MS[match.group(2)]


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`override` laid over `base`, recursively for mappings; lists and scalars are replaced."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


@dataclass(frozen=True, kw_only=True, slots=True)
class Datacenter:
    """A datacenter (or public-cloud region) with its ZooKeeper ensemble and failover order."""

    name: str
    region: str
    zookeeper: tuple[str, ...]
    failover: tuple[str, ...]
    public_cloud: bool
    span: Span


@dataclass(frozen=True, kw_only=True, slots=True)
class Cluster:
    """A Kubernetes cluster in one datacenter."""

    name: str
    datacenter: str
    api_server: str
    network_policy: bool
    off_cluster_cidrs: tuple[str, ...]
    span: Span


@dataclass(frozen=True, kw_only=True, slots=True)
class Sidecar:
    """Where sidecar files live, the same on a VM and in a pod."""

    admin_port: int = 9901
    config_dir: str = "/etc/mesh"
    runtime_dir: str = "/var/run/mesh"


@dataclass(frozen=True, kw_only=True, slots=True)
class Issuer:
    """The cert-manager issuer that signs workload certificates."""

    kind: str
    name: str
    duration: str = "2160h"
    renew_before: str = "360h"


@dataclass(frozen=True, kw_only=True, slots=True)
class MeshSpec:
    """mesh.yaml."""

    name: str
    trust_domain: str
    datacenters: Mapping[str, Datacenter]
    clusters: Mapping[str, Cluster]
    issuer: Issuer
    sidecar: Sidecar
    defaults: Mapping[str, Any]
    file: str
    rollout: WavePolicy | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class KubePlacement:
    """One `deploy.kubernetes` entry."""

    cluster: str
    namespace: str
    index: int
    span: Span


@dataclass(frozen=True, kw_only=True, slots=True)
class Dependency:
    """One `dependencies` entry: the service called and the policy keys it overrides."""

    service: str
    overrides: Mapping[str, Any]
    index: int
    span: Span


@dataclass(frozen=True, kw_only=True, slots=True)
class ServiceSpec:
    """services/<name>.yaml."""

    name: str
    owner: str
    description: str
    port: int
    mesh_port: int
    local_port: int
    protocol: str
    locality: str
    restart_sensitive: bool
    health_check: Mapping[str, Any]
    vm_datacenters: tuple[str, ...]
    kubernetes: tuple[KubePlacement, ...]
    dependencies: tuple[Dependency, ...]
    file: str
    span: Span


@dataclass(frozen=True, kw_only=True, slots=True)
class Spec:
    """The whole spec: mesh.yaml, the services by name, and the documents for positions."""

    mesh: MeshSpec
    services: Mapping[str, ServiceSpec]
    documents: Mapping[str, Document]
    # The services whose files the semantic checks look at (None: every one). A partial build
    # (compiler.partial) checks a few, and holds their neighbours only to look them up.
    focus: frozenset[str] | None = None

    def checked(self) -> tuple[ServiceSpec, ...]:
        """The services the semantic checks look at, in spec order."""
        if self.focus is None:
            return tuple(self.services.values())
        return tuple(found for name, found in self.services.items() if name in self.focus)

    def at(self, file: str, *path: str | int) -> Span:
        """The span of the value at `path` in `file`."""
        return self.documents[file].span(path)

    def key_at(self, file: str, *path: str | int) -> Span:
        """The span of the key that holds `path` in `file`."""
        return self.documents[file].key_span(path)


def mesh_from_document(doc: Document) -> MeshSpec:
    """Build MeshSpec from schema-valid mesh.yaml."""
    data = doc.data
    certificates = data.get("certificates") or {"issuer": {"kind": "ClusterIssuer", "name": "mesh-ca"}}
    issuer = Issuer(
        **certificates["issuer"],
        **{k: certificates[k] for k in ("duration", "renew_before") if k in certificates},
    )
    return MeshSpec(
        name=data["mesh"],
        trust_domain=data["trust_domain"],
        datacenters={name: _datacenter(doc, name, dc) for name, dc in data["datacenters"].items()},
        clusters={name: _cluster(doc, name, cl) for name, cl in (data.get("clusters") or {}).items()},
        issuer=issuer,
        sidecar=Sidecar(**(data.get("sidecar") or {})),
        defaults=MappingProxyType(deep_merge(BUILTIN_DEFAULTS, data.get("defaults") or {})),
        file=doc.file,
        rollout=policy_from_document(doc),
    )


def _datacenter(doc: Document, name: str, data: Mapping[str, Any]) -> Datacenter:
    return Datacenter(
        name=name,
        region=data["region"],
        zookeeper=tuple(data["zookeeper"]),
        failover=tuple(data.get("failover", ())),
        public_cloud=bool(data.get("public_cloud", False)),
        span=doc.key_span(("datacenters", name)),
    )


def _cluster(doc: Document, name: str, data: Mapping[str, Any]) -> Cluster:
    policy = data.get("network_policy") or {}
    return Cluster(
        name=name,
        datacenter=data["datacenter"],
        api_server=data["api_server"],
        network_policy=bool(policy.get("enabled", False)),
        off_cluster_cidrs=tuple(policy.get("off_cluster_cidrs", ())),
        span=doc.key_span(("clusters", name)),
    )


def service_from_document(doc: Document) -> ServiceSpec:
    """Build ServiceSpec from a schema-valid service file."""
    data = doc.data
    deploy = data["deploy"]
    return ServiceSpec(
        name=data["service"],
        owner=data["owner"],
        description=data.get("description", ""),
        port=data["port"],
        mesh_port=data["mesh_port"],
        local_port=data["local_port"],
        protocol=data.get("protocol", "http"),
        locality=data.get("locality", "failover"),
        restart_sensitive=data.get("restart_sensitive", False),
        health_check=MappingProxyType(dict(data.get("health_check") or {})),
        vm_datacenters=tuple((deploy.get("vm") or {}).get("datacenters", ())),
        kubernetes=tuple(
            _kube_placement(doc, data["service"], i, k) for i, k in enumerate(deploy.get("kubernetes") or ())
        ),
        dependencies=tuple(_dependency(doc, i, d) for i, d in enumerate(data.get("dependencies") or ())),
        file=doc.file,
        span=doc.span(("service",)),
    )


def _kube_placement(doc: Document, service: str, index: int, data: Mapping[str, Any]) -> KubePlacement:
    path: DataPath = ("deploy", "kubernetes", index)
    return KubePlacement(
        cluster=data["cluster"], namespace=data.get("namespace", service), index=index, span=doc.span(path)
    )


def _dependency(doc: Document, index: int, data: Mapping[str, Any]) -> Dependency:
    overrides = {key: data[key] for key in POLICY_KEYS if key in data}
    return Dependency(
        service=data["service"],
        overrides=MappingProxyType(overrides),
        index=index,
        span=doc.span(("dependencies", index, "service")),
    )
