"""Reference checks: every datacenter, cluster, dependency and failover entry names something that exists, once."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from compiler.diagnostics import Diagnostic, did_you_mean, error, quote, some_of
from compiler.spec.model import Dependency, Spec

# How many defined names an unknown-name message lists before it counts the rest: a typo is fixed from the
# list, and a mesh of dozens of clusters must not make one line of the whole list.
LISTED_NAMES = 8


def _defined(kind: str, names: Iterable[str]) -> str:
    """`; mesh.yaml defines datacenters iad, sjc`: what an unknown name could have been, in every such message."""
    found = sorted(names)
    return (
        f"; mesh.yaml defines {kind} {some_of(found, LISTED_NAMES)}"
        if found
        else f"; mesh.yaml defines no {kind}"
    )


def check_datacenter_refs(spec: Spec) -> Iterator[Diagnostic]:
    """VM placements and clusters name datacenters that mesh.yaml defines."""
    known = spec.mesh.datacenters
    for name, cluster in spec.mesh.clusters.items():
        if cluster.datacenter not in known:
            yield error(
                spec.at(spec.mesh.file, "clusters", name, "datacenter"),
                "unknown-datacenter",
                f"cluster {quote(name)} is in unknown datacenter "
                f"{quote(cluster.datacenter)}{did_you_mean(cluster.datacenter, known)}"
                f"{_defined('datacenters', known)}",
            )
    for service in spec.checked():
        for i, dc in enumerate(service.vm_datacenters):
            if dc not in known:
                yield error(
                    spec.at(service.file, "deploy", "vm", "datacenters", i),
                    "unknown-datacenter",
                    f"unknown datacenter {quote(dc)}{did_you_mean(dc, known)}{_defined('datacenters', known)}",
                )


def check_cluster_refs(spec: Spec) -> Iterator[Diagnostic]:
    """Kubernetes placements name clusters that mesh.yaml defines."""
    known = spec.mesh.clusters
    for service in spec.checked():
        for placement in service.kubernetes:
            if placement.cluster not in known:
                yield error(
                    spec.at(service.file, "deploy", "kubernetes", placement.index, "cluster"),
                    "unknown-cluster",
                    f"unknown cluster {quote(placement.cluster)}{did_you_mean(placement.cluster, known)}"
                    f"{_defined('clusters', known)}",
                )


def check_dependency_refs(spec: Spec) -> Iterator[Diagnostic]:
    """Dependencies name services that have a file in services/."""
    for service in spec.checked():
        for dep in service.dependencies:
            if dep.service not in spec.services and dep.service != service.name:
                yield error(
                    dep.span,
                    "unknown-dependency",
                    f"unknown dependency {quote(dep.service)}{did_you_mean(dep.service, spec.services)}; add "
                    f"services/{dep.service}.yaml or fix the name",
                )


def check_self_dependency(spec: Spec) -> Iterator[Diagnostic]:
    """A service does not list itself: calls within a service never leave its pod or VM."""
    for service in spec.checked():
        for dep in service.dependencies:
            if dep.service == service.name:
                yield error(
                    dep.span,
                    "self-dependency",
                    f"service {quote(service.name)} depends on itself; remove this entry",
                )


def check_duplicate_dependency(spec: Spec) -> Iterator[Diagnostic]:
    """Each dependency is listed once, since it gets one listener and one cluster."""
    for service in spec.checked():
        seen: dict[str, Dependency] = {}
        for dep in service.dependencies:
            if dep.service in seen:
                yield error(
                    dep.span,
                    "duplicate-dependency",
                    f"dependency {quote(dep.service)} is already listed at line "
                    f"{seen[dep.service].span.line}; merge the two entries",
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
                yield error(
                    span,
                    "failover-unknown",
                    f"failover of {quote(name)} names unknown datacenter {quote(target)}{did_you_mean(target, known)}",
                )
            elif target == name:
                yield error(
                    span,
                    "failover-self",
                    f"failover of {quote(name)} names {quote(name)} itself; a datacenter is always tried "
                    "first, remove it",
                )
            elif target in seen:
                yield error(
                    span,
                    "failover-duplicate",
                    f"failover of {quote(name)} names {quote(target)} twice; keep the first",
                )
            seen.add(target)
