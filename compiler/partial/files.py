"""The files of a partial build (compiler.partial) besides its targets': the shared files it renders or keeps.

A partial build asks the backends for no shared file (compiler.backends.Backend `shared`). It renders the
Kubernetes cluster files whose namespaces changed, from every service's recorded or new places, and keeps
every other shared file as the previous tree holds it: those are functions of mesh.yaml and meshc's code,
both the recorded ones whenever a partial build runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import chain

from compiler.backends import stream_backends
from compiler.backends.kubernetes import cluster_file
from compiler.backends.kubernetes.layout import cluster_path
from compiler.emit import Artifact
from compiler.ir.model import Mesh
from compiler.output.cache import Cached
from compiler.output.facts import Recorded, ServiceFacts
from compiler.output.manifest import MANIFEST
from compiler.render import SidecarConfig


@dataclass(frozen=True, kw_only=True, slots=True)
class Shared:
    """What a partial build does with the shared files: the clusters whose files it renders (name -> namespaces),
    whether it renders the mesh's files (every other shared file) anew, and the shared files it keeps (-> sha256)."""

    clusters: Mapping[str, set[str]]
    mesh_files: bool
    kept: Mapping[str, str]


def shared_files(recorded: Recorded, facts: Mapping[str, ServiceFacts], cached: Cached) -> Shared:
    """Render a cluster's file when its namespaces changed (from every service's `places`: the partial mesh knows
    only its neighbourhood's) or the cache cannot vouch for it; drop a cluster left with none (it has no file);
    render the mesh's files when the cache cannot vouch for one of them (edited by hand); keep the rest."""
    before = _namespaces(recorded.services.values())
    # An unaffected service's facts are the recorded object itself: only the others can have moved.
    moved = facts.keys() != recorded.services.keys() or any(
        found is not recorded.services[name] and found.places != recorded.services[name].places
        for name, found in facts.items()
    )
    now = _namespaces(facts.values()) if moved else before
    owned = set(chain.from_iterable(cached.targets.values()))
    previous = {path: d for path, d in cached.files.items() if path not in owned and path != MANIFEST}
    vouched = {path for path, digest in previous.items() if cached.trusted.get(path) == digest}
    clusters = {
        cluster: names
        for cluster, names in now.items()
        if before.get(cluster) != names or cluster_path(cluster) not in vouched
    }
    cluster_files = {cluster_path(cluster) for cluster in {*now, *before}}
    mesh_paths = {path for path in previous if path not in cluster_files}
    mesh_files = not mesh_paths <= vouched
    gone = {cluster_path(cluster) for cluster in set(before) - set(now)}
    dropped = {cluster_path(cluster) for cluster in clusters} | gone | (mesh_paths if mesh_files else set())
    # What is kept is vouched for: a cluster file not vouched for is rendered, and so are the mesh's files.
    kept = {path: digest for path, digest in previous.items() if path not in dropped}
    return Shared(clusters=clusters, mesh_files=mesh_files, kept=kept)


def _namespaces(services: Iterable[ServiceFacts]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for service in services:
        for cluster, namespace in service.places:
            found.setdefault(cluster, set()).add(namespace)
    return found


def partial_artifacts(
    mesh: Mesh, sidecars: Mapping[str, SidecarConfig], rendered: frozenset[str], shared: Shared
) -> Iterator[Artifact]:
    """The rendered targets' files, and the shared files `shared` says to render."""
    # The backends' own cluster files are left out: the partial mesh's would list its namespaces only.
    clusters = {cluster_path(name) for name in mesh.clusters}
    for artifact in stream_backends(mesh, sidecars, rendered, shared=shared.mesh_files):
        if artifact.path not in clusters:
            yield artifact
    for cluster, names in sorted(shared.clusters.items()):
        yield cluster_file(mesh, cluster, names, False)
