"""Kubernetes backend: each cluster workload's objects, laid out as one kube-applier tree per cluster.

The objects are built in `objects` (a workload's own) and `readers` (the identities of workloads
that read a cluster from outside); `layout` says which file each object goes to, and in which
order kube-applier applies them. This module puts them together: one file per workload and per
external reader, and one per cluster with its Namespaces and its discovery ClusterRole.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any

import orjson

from compiler.backends.kubernetes.layout import cluster_path, object_file, owned, unit_path
from compiler.backends.kubernetes.objects import (
    CONFIG_MOUNTS,
    certificate,
    config_map,
    discovery_cluster_role,
    discovery_rbac,
    namespace_object,
    network_policy,
    service,
    service_account,
)
from compiler.backends.kubernetes.readers import ExternalReader, external_readers, reader_objects
from compiler.diagnostics import Diagnostic, SpecError, internal_error
from compiler.emit import Artifact, dump_json
from compiler.ir.model import Mesh, Workload
from compiler.memo import Memo
from compiler.render import SidecarConfig
from compiler.render.restart import restart_view
from compiler.spec.model import DISCOVERY_NAMESPACE  # no service may be placed there (spec checks)

# Box's kube-applier runs client-side `kubectl apply`, which copies the whole object into the
# kubectl.kubernetes.io/last-applied-configuration annotation; annotations are capped at 256 KiB,
# a tighter limit than the 1 MiB of ConfigMap data. Keep a margin for the annotation's other bytes.
MAX_APPLIED_BYTES = 256 * 1024 - 4096


def build_kubernetes(
    mesh: Mesh,
    sidecars: Mapping[str, SidecarConfig],
    only: Collection[str] | None = None,
    values: bool = True,
) -> list[Artifact]:
    """The files of every Kubernetes workload and external reader (those in `only`, if given, by target id),
    plus one per cluster (its Namespaces and discovery ClusterRole); with `values`, each file's value is the
    tuple of its objects."""
    return list(stream_kubernetes(mesh, sidecars, only, values))


def stream_kubernetes(
    mesh: Mesh,
    sidecars: Mapping[str, SidecarConfig],
    only: Collection[str] | None = None,
    values: bool = False,
    shared: bool = True,
) -> Iterator[Artifact]:
    """`build_kubernetes` one file at a time, so a build writes each before the next is serialized.

    What the spec got wrong is raised after the last file: a build streaming into a staging tree
    then throws that tree away."""
    workloads = [w for w in mesh.workloads if w.platform == "kubernetes"]
    readers = external_readers(mesh)
    for cluster, namespaces in sorted(cluster_namespaces(mesh, readers).items()) if shared else ():
        yield cluster_file(mesh, cluster, namespaces, values)
    for r in readers:
        if only is None or r.id in only:
            yield object_file(mesh, r.cluster, unit_path(r.id), reader_objects(mesh, r), r.id, Memo(), values)
    problems: list[Diagnostic] = []
    yield from _workload_files(mesh, sidecars, workloads, only, values, problems)
    bugs = [d for d in problems if d.code == "internal"]
    if bugs:  # a meshc bug outranks what the spec got wrong: the spec's errors may be its consequence
        raise internal_error(bugs)
    if problems:
        raise SpecError(problems)


def _workload_files(
    mesh: Mesh,
    sidecars: Mapping[str, SidecarConfig],
    workloads: Sequence[Workload],
    only: Collection[str] | None,
    values: bool,
    problems: list[Diagnostic],
) -> Iterator[Artifact]:
    """The file of each workload (of `only`, if given), service by service; what is wrong goes to `problems`."""
    in_cluster = _namespaces_by_cluster_service(mesh, workloads)
    memo, current = Memo(), ""
    for workload in sorted(workloads, key=lambda w: (w.service, w.id)):
        if only is not None and workload.id not in only:
            continue
        if workload.service != current:
            # Render shares a service's documents between its workloads (and with no other service but
            # the tiny SDS): serialize each once per service, then let its texts go. One Memo for the
            # whole run held every text to the end: 10,000 services, backends run without writing,
            # 2,320 MB peak RSS, not 1,563 MB.
            memo, current = Memo(), workload.service
        if workload.id not in sidecars:
            problems.append(
                Diagnostic(
                    span=workload.span,
                    code="internal",
                    message=f"{workload.id}: no sidecar documents were rendered",
                )
            )
            continue
        documents = sidecars[workload.id].documents
        texts = {name: memo.once(("json", id(doc)), _json_text, doc) for name, doc in documents.items()}
        objects = [
            owned(mesh, workload.cluster or "", obj)
            for obj in workload_objects(mesh, workload, texts, restart_hash_of(documents), in_cluster)
        ]
        problems += _unmounted(workload, texts)
        problems += _size_problems(
            workload, objects
        )  # per object: kubectl records each object's own annotation
        yield object_file(
            mesh, workload.cluster or "", unit_path(workload.id), objects, workload.id, memo, values
        )


def cluster_namespaces(
    mesh: Mesh, readers: Sequence[ExternalReader] | None = None
) -> dict[str, frozenset[str]]:
    """Cluster -> the namespaces meshc writes there: its workloads' and, with an external reader, meshc-discovery.

    `readers`: the mesh's external readers when the caller has them already (they are not cheap)."""
    found: dict[str, set[str]] = defaultdict(set)
    for workload in mesh.workloads:
        if workload.platform == "kubernetes":
            found[workload.cluster or ""].add(workload.namespace)
    for reader in external_readers(mesh) if readers is None else readers:
        found[reader.cluster].add(DISCOVERY_NAMESPACE)
    return {cluster: frozenset(namespaces) for cluster, namespaces in found.items()}


def cluster_file(mesh: Mesh, cluster: str, namespaces: Collection[str], values: bool = True) -> Artifact:
    """kubernetes/<cluster>/00-cluster.yaml: the Namespaces, sorted by name, then the discovery ClusterRole."""
    objects = [namespace_object(mesh, ns) for ns in sorted(namespaces)] + [discovery_cluster_role(mesh)]
    return object_file(mesh, cluster, cluster_path(cluster), objects, None, Memo(), values)


def workload_objects(
    mesh: Mesh,
    workload: Workload,
    texts: Mapping[str, str],
    restart_hash: str,
    in_cluster: Mapping[tuple[str, str], Collection[str]],
) -> list[dict[str, Any]]:
    """Every object of one workload (its documents given serialized), in its namespace or, for RBAC, its
    dependencies'. `in_cluster`: (cluster, service) -> the namespaces its pods run in."""
    objects = [service_account(mesh, workload)]
    objects += discovery_rbac(mesh, workload)
    objects += [config_map(mesh, workload, mount, texts, restart_hash) for mount in CONFIG_MOUNTS]
    objects += [certificate(mesh, workload), service(mesh, workload)]
    cluster = mesh.clusters[workload.cluster or ""]
    if cluster.network_policy:
        clients = {
            (namespace, name)
            for name in workload.ingress.client_services
            for namespace in in_cluster.get((cluster.name, name), ())
        }
        objects.append(network_policy(mesh, workload, sorted(clients), cluster.off_cluster_cidrs))
    return objects


def restart_hash_of(documents: Mapping[str, Any]) -> str:
    """sha256 of what the sidecar processes read only at start (restart.restart_view): the bootstrap
    and Synapse's process settings. LDS/CDS/SDS and Synapse's services reload live, so they never roll pods."""
    digest = hashlib.sha256()
    for name in sorted(documents):
        view = restart_view(name, documents[name])
        if view is not None:
            digest.update(name.encode() + b"\0" + dump_json(view) + b"\0")
    return digest.hexdigest()


def _namespaces_by_cluster_service(
    mesh: Mesh, workloads: Sequence[Workload]
) -> dict[tuple[str, str], set[str]]:
    """(cluster, service) -> the namespaces its pods run in: this revision's, and in a rollout build those only
    other live revisions run (`Mesh.rollout_pods`), which its NetworkPolicies admit too (expand before contract)."""
    found: dict[tuple[str, str], set[str]] = defaultdict(set)
    for workload in workloads:
        found[(workload.cluster or "", workload.service)].add(workload.namespace)
    for cluster, name, namespace in mesh.rollout_pods:
        found[(cluster, name)].add(namespace)
    return found


def _json_text(document: Any) -> str:
    return dump_json(document).decode()


def _unmounted(workload: Workload, texts: Mapping[str, str]) -> Iterator[Diagnostic]:
    """A document outside the mounted directories would silently never reach the pod."""
    for name in sorted(texts):
        if name.split("/", 1)[0] not in CONFIG_MOUNTS:
            yield Diagnostic(
                span=workload.span,
                code="internal",
                message=f"{workload.id}: sidecar document {name!r} is in no directory mounted in pods {CONFIG_MOUNTS}",
            )


def _size_problems(workload: Workload, objects: Sequence[Mapping[str, Any]]) -> Iterator[Diagnostic]:
    for obj in objects:
        if obj["kind"] != "ConfigMap":  # only the sidecar documents grow with the mesh
            continue
        size = len(orjson.dumps(obj))  # compact JSON, as kubectl stores it in the annotation
        if size > MAX_APPLIED_BYTES:
            yield Diagnostic(
                span=workload.span,
                code="object-too-large",
                message=(
                    f"{workload.id}: {obj['kind']} {obj['metadata']['name']} is {size} bytes, "
                    f"over the {MAX_APPLIED_BYTES} "
                    "that `kubectl apply` can record in its last-applied annotation; split the service's dependencies"
                ),
            )
