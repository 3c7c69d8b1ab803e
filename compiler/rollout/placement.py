"""Where every target stands under a set of pins: its wave, the revision that wave runs, its widened workload.

Authorization is expanded before it is contracted: a service's ingress admits every client
identity that any live revision admits, so a new client is admitted everywhere as soon as it runs
anywhere, and an identity goes only once no live revision admits it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace

from compiler.backends.kubernetes.readers import external_readers, widened_readers
from compiler.ir.model import Mesh, Workload
from compiler.rollout.compiled import Revision
from compiler.rollout.hosts import Canary, canaries
from compiler.rollout.pins import WaveRevision
from compiler.rollout.revisions import Context, compile_revision
from compiler.spec.wave_policy import WavePolicy, assign


@dataclass(frozen=True, kw_only=True, slots=True)
class Placement:
    """Where a target stands: its wave, the revision that wave runs, and its widened workload there (None: absent)."""

    target: str
    wave: str
    revision: str
    workload: Workload | None


@dataclass(frozen=True, kw_only=True, slots=True)
class State:
    """The mesh as one set of pins leaves it, at the IR level: what every target runs."""

    revisions: tuple[WaveRevision, ...]
    placements: Mapping[str, Placement]
    meshes: Mapping[
        str, Mesh
    ]  # live revision -> its widened IR (clients read server ports from their own revision)
    canaries: tuple[Canary, ...]


def rollout_state(context: Context, revisions: tuple[WaveRevision, ...]) -> State:
    """Every target's wave, revision and widened workload under `revisions`, and the widened IR of each live
    revision."""
    compiled = {r.revision: compile_revision(context, r.revision) for r in revisions}
    wave_revision = {r.wave: r.revision for r in revisions}
    waves = _target_waves(context.policy, revisions, compiled)
    by_id = {
        rev: {w.id: w for w in found.mesh.workloads} for rev, found in compiled.items() if found is not None
    }
    chosen: dict[str, Workload] = {}
    for target, wave in waves.items():
        workload = by_id.get(wave_revision[wave], {}).get(target)
        if workload is not None:
            chosen[target] = workload
    head_mesh = compiled[revisions[0].revision]
    pools = {w.id: w for w in head_mesh.mesh.workloads if w.platform == "vm"} if head_mesh is not None else {}
    # A canary host runs its pool as its wave's revision renders it: where that revision has no such pool (new since),
    # it gets no node file, so it is no canary yet (MANIFEST.json, plan and drift would count a host nothing renders).
    hosts = tuple(
        c
        for c in canaries(context.policy, context.hosts, pools, waves)
        if c.pool in by_id.get(wave_revision[c.wave], {})
    )
    live = sorted({wave_revision[waves[t]] for t in chosen} | {wave_revision[c.wave] for c in hosts})
    widened = widen({rev: found.mesh for rev in live if (found := compiled[rev]) is not None}, waves)
    widened_by_id = {rev: {w.id: w for w in mesh.workloads} for rev, mesh in widened.items()}
    placements = {
        t: Placement(
            target=t,
            wave=w,
            revision=wave_revision[w],
            workload=widened_by_id[wave_revision[w]][t] if t in chosen else None,
        )
        for t, w in sorted(waves.items())
    }
    return State(revisions=revisions, placements=placements, meshes=widened, canaries=hosts)


def _target_waves(
    policy: WavePolicy, revisions: tuple[WaveRevision, ...], compiled: Mapping[str, Revision | None]
) -> dict[str, str]:
    """Target -> wave, by the head's policy; a target is placed by its newest description (wave order =
    newest first)."""
    waves: dict[str, str] = {}
    for wave_revision in revisions:
        found = compiled[wave_revision.revision]
        if found is not None:
            for target, wave in assign(policy, found.mesh.workloads).items():
                waves.setdefault(target, wave)
    return waves


def widen(meshes: Mapping[str, Mesh], waves: Mapping[str, str]) -> dict[str, Mesh]:
    """Each live revision's IR with every service's allow-list the union over all live revisions (expand
    before contract), and the pods any live revision runs for its NetworkPolicies."""
    allowed: dict[str, set[str]] = {}
    callers: dict[str, set[str]] = {}
    identities: set[str] = set()
    for mesh in meshes.values():
        for workload in mesh.workloads:
            allowed.setdefault(workload.service, set()).update(workload.ingress.allowed_clients)
            callers.setdefault(workload.service, set()).update(workload.ingress.client_services)
            identities.add(workload.identity)
    pods = frozenset(pod for mesh in meshes.values() for pod in _pods(mesh))
    readers = frozenset(read for mesh in meshes.values() for read in _reads(mesh))
    return {
        rev: _widened(mesh, allowed, callers, frozenset(identities), pods, readers, waves)
        for rev, mesh in meshes.items()
    }


def _reads(mesh: Mesh) -> Iterator[tuple[str, str, str]]:
    """(cluster, client service, namespace) of each namespace an external reader of `mesh` watches."""
    return ((r.cluster, r.service, ns) for r in external_readers(mesh) for ns in r.namespaces)


def _pods(mesh: Mesh) -> Iterator[tuple[str, str, str]]:
    """(cluster, service, namespace) of each Kubernetes workload: the callers a NetworkPolicy names."""
    return ((w.cluster or "", w.service, w.namespace) for w in mesh.workloads if w.platform == "kubernetes")


def _widened(
    mesh: Mesh,
    allowed: Mapping[str, set[str]],
    callers: Mapping[str, set[str]],
    identities: frozenset[str],
    pods: frozenset[tuple[str, str, str]],
    readers: frozenset[tuple[str, str, str]],
    waves: Mapping[str, str],
) -> Mesh:
    ingresses = {
        w.service: replace(
            w.ingress,
            allowed_clients=tuple(sorted(allowed[w.service])),
            client_services=tuple(sorted(callers[w.service])),
        )
        for w in mesh.workloads
    }
    workloads = tuple(replace(w, ingress=ingresses[w.service]) for w in mesh.workloads)
    own = {w.identity for w in mesh.workloads}
    widened = replace(
        mesh,
        workloads=workloads,
        waves={w.id: waves[w.id] for w in mesh.workloads if w.id in waves},
        rollout_identities=identities - own,
        rollout_pods=pods - frozenset(_pods(mesh)),
        rollout_readers=readers - frozenset(_reads(mesh)),
    )
    # Widening changes no egress, so the widened IR's readers are the revision's own, widened: found from those
    # already found (each search walks every source of every edge) rather than searched again.
    widened.derived["external_readers"] = widened_readers(external_readers(mesh), widened.rollout_readers)
    return widened
