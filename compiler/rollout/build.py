"""The rollout build: every live revision rendered with widened allow-lists, and one output tree from them.

Each target (and canary host) gets the rendering of its wave's revision (rollout.placement); a
target absent at that revision is absent. Shared files come from the newest live revision that
has them, a cluster's Namespaces from all of them, and MANIFEST.json records each target's wave
and revision.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from compiler.backends import run_backends
from compiler.backends.kubernetes import cluster_file, cluster_namespaces
from compiler.backends.kubernetes.readers import external_readers
from compiler.backends.puppet import ROOT as PUPPET_ROOT
from compiler.backends.puppet import pool_artifact
from compiler.emit import Artifact
from compiler.ir.model import Mesh
from compiler.output.manifest import render_tree
from compiler.render import render
from compiler.rollout.pins import RolloutFile, WaveRevision, resolve
from compiler.rollout.placement import State, rollout_state
from compiler.rollout.revisions import Context, Rendered
from compiler.spec.wave_policy import WavePolicy


@dataclass(frozen=True, kw_only=True, slots=True)
class RolloutBuild:
    """A rollout build: the state, the rendering of each live revision, and the output tree."""

    policy: WavePolicy
    rollout: RolloutFile
    head: str  # the commit the working tree is on
    state: State
    rendered: Mapping[str, Rendered]
    tree: Mapping[str, bytes]


def build_rollout(context: Context, revisions: Sequence[WaveRevision] | None = None) -> RolloutBuild:
    """The output tree of the rollout (the pins of rollout.yaml unless `revisions` are given)."""
    if revisions is None:
        revisions = resolve(context.policy, context.rollout, context.location.repo)
    state = rollout_state(context, tuple(revisions))
    rendered = render_live(context, state)
    tree = output_tree(state, rendered)
    return RolloutBuild(
        policy=context.policy,
        rollout=context.rollout,
        head=context.head,
        state=state,
        rendered=rendered,
        tree=tree,
    )


def render_live(context: Context, state: State) -> dict[str, Rendered]:
    """Every live revision rendered; each external reader (a pseudo-target every live revision's union keeps) is laid
    out once, from the newest revision that has it."""
    readers_done: set[str] = set()
    rendered = {}
    for revision in dict.fromkeys(r.revision for r in state.revisions if r.revision in state.meshes):
        readers = {r.id for r in external_readers(state.meshes[revision])} - readers_done
        readers_done |= readers
        rendered[revision] = render_revision(context, revision, state, frozenset(readers))
    return dict(sorted(rendered.items()))


def render_revision(
    context: Context, revision: str, state: State, readers: frozenset[str] = frozenset()
) -> Rendered:
    """The sidecars of one live revision's widened IR, and the artifacts of the targets that run it, of
    `readers`, and shared files."""
    mesh = state.meshes[revision]
    own = (
        frozenset(t for t, p in state.placements.items() if p.revision == revision and p.workload is not None)
        | readers
    )
    key = (revision, _mesh_key(mesh), own)
    cached = context.cache.rendered.get(key)
    if cached is None:
        sidecars = render(mesh)  # the whole revision: the invariants compare every workload's documents
        # Backends serialize most of a build: only this revision's own targets are worth laying out.
        cached = context.cache.rendered[key] = Rendered(
            revision=revision,
            mesh=mesh,
            sidecars=sidecars,
            artifacts=tuple(run_backends(mesh, sidecars, own, values=False)),
        )
    return cached


def _mesh_key(mesh: Mesh) -> str:
    """What a widened IR adds to its revision: the allow-lists, the waves and the foreign identities."""
    digest = hashlib.sha256()
    seen: set[str] = set()
    for workload in mesh.workloads:
        if workload.service not in seen:
            seen.add(workload.service)
            digest.update(
                repr(
                    (workload.service, workload.ingress.allowed_clients, workload.ingress.client_services)
                ).encode()
            )
    digest.update(repr(sorted(mesh.waves.items())).encode() + repr(sorted(mesh.rollout_identities)).encode())
    return digest.hexdigest()


def output_tree(state: State, rendered: Mapping[str, Rendered]) -> dict[str, bytes]:
    """Each target's files from its wave's revision, shared files from the newest live revision that has them
    (a cluster's Namespaces: the union over live revisions), canary hosts' node files, and MANIFEST.json with
    the rollout section."""
    order = [r.revision for r in state.revisions if r.revision in rendered]
    chosen: dict[str, Artifact] = {}
    for revision in dict.fromkeys(order):
        mine = {t for t, p in state.placements.items() if p.revision == revision and p.workload is not None}
        for artifact in rendered[revision].artifacts:
            if artifact.target in mine:
                chosen.setdefault(artifact.path, artifact)
    for revision in dict.fromkeys(order):
        workloads = {w.id for w in rendered[revision].mesh.workloads}
        for artifact in rendered[revision].artifacts:
            # shared files and external readers: expand before contract too
            if artifact.target not in workloads:
                chosen.setdefault(artifact.path, artifact)
    for artifact in [
        *cluster_files([rendered[r].mesh for r in dict.fromkeys(order)]),
        *node_files(state, rendered),
    ]:
        chosen[artifact.path] = artifact
    return render_tree(list(chosen.values()), rollout=manifest_section(state))


def cluster_files(meshes: Sequence[Mesh]) -> list[Artifact]:
    """Each cluster's 00-cluster.yaml with every Namespace any of `meshes` (the live revisions, newest first) writes
    there: one file holds them all, so a namespace only an older wave still uses must be merged in, not dropped."""
    namespaces: dict[str, set[str]] = {}
    for mesh in meshes:
        for cluster, found in cluster_namespaces(mesh).items():
            namespaces.setdefault(cluster, set()).update(found)
    return [cluster_file(meshes[0], cluster, names) for cluster, names in sorted(namespaces.items())]


def node_files(state: State, rendered: Mapping[str, Rendered]) -> list[Artifact]:
    """puppet/data/nodes/<certname>.json for every canary host whose pool exists at its wave's revision."""
    wave_revision = {r.wave: r.revision for r in state.revisions}
    files = []
    for canary in state.canaries:
        sidecar = rendered[wave_revision[canary.wave]].sidecars.get(canary.pool)
        if sidecar is not None:
            files.append(pool_artifact(node_path(canary.certname), sidecar, wave=canary.wave))
    return files


def node_path(certname: str) -> str:
    """The hiera node file of a host (contract: same shape as a pool file)."""
    return f"{PUPPET_ROOT}/data/nodes/{certname}.json"


def pool_file(pool: str) -> str:
    """The hiera data file of VM pool `vm/<service>/<datacenter>`: what a host without a node file reads."""
    _, service, datacenter = pool.split("/")
    return f"{PUPPET_ROOT}/data/pools/{service}/{datacenter}.json"


def manifest_section(state: State) -> dict[str, object]:
    """MANIFEST.json's `rollout`: each target's and canary host's wave and revision, and the waves in order."""
    # The unpinned first wave is named "HEAD": the commit that will hold this output cannot name itself.
    wave_revision = {r.wave: r.revision for r in state.revisions}
    return {
        "targets": {
            t: {"wave": p.wave, "revision": p.revision}
            for t, p in state.placements.items()
            if p.workload is not None
        },
        "hosts": {
            c.certname: {"wave": c.wave, "revision": wave_revision[c.wave], "target": c.pool}
            for c in state.canaries
        },
        "waves": [{"name": r.wave, "revision": r.revision} for r in state.revisions],
    }
