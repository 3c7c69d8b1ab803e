"""The rollout build: every live revision rendered with widened allow-lists, and one output tree from them.

Each target (and canary host) gets the rendering of its wave's revision (rollout.placement); a
target absent at that revision is absent. Shared files come from the newest live revision that
has them, a cluster's Namespaces from all of them, and MANIFEST.json records each target's wave
and revision.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from compiler.backends import stream_backends
from compiler.backends.kubernetes import cluster_file, cluster_namespaces, stream_kubernetes
from compiler.backends.kubernetes.layout import unit_target
from compiler.backends.kubernetes.readers import ExternalReader, external_readers
from compiler.backends.puppet import ROOT as PUPPET_ROOT
from compiler.backends.puppet import pool_artifact
from compiler.diagnostics import InternalError
from compiler.emit import Artifact
from compiler.ir.model import Mesh
from compiler.output.cache import Cached
from compiler.output.manifest import MANIFEST, manifest_of
from compiler.output.reuse import kept_files, reusable
from compiler.output.staging import NewFile, new_file
from compiler.output.worker import PARALLEL_FROM, Entry, Worker, as_one, worker_share
from compiler.render import render
from compiler.rollout.compiled import Laid, Rendered
from compiler.rollout.pins import RolloutFile, WaveRevision, resolve
from compiler.rollout.placement import State, rollout_state
from compiler.rollout.renderings import laid_files, render_revision, rendering_key
from compiler.rollout.revisions import Context
from compiler.spec.wave_policy import WavePolicy

NODES = f"{PUPPET_ROOT}/data/nodes/"  # the canary hosts' node files (`node_path`)

# The worker's share of a rollout build's targets (compiler.output.worker.worker_share): this process also lays out
# the shared files, the cluster files and MANIFEST.json. At 1,000 services with four live revisions (CLI, fresh
# directory, one build each) the worker was done 300-400 ms before this process with 0.48 and 0.5, this process
# waited 370 ms for it with 0.55, and 0.52 left 80 ms between the two.
ROLLOUT_WORKER_SHARE = 0.52


@dataclass(frozen=True, kw_only=True, slots=True)
class RolloutBuild:
    """Two rollout builds' comparison material (`meshc plan`, `meshc diff`): the state, what each live revision
    rendered (the prints of its targets' documents), and each file of the tree by its sha256, not its bytes.

    At 3,000 services a build holding its bytes and every revision's documents peaked at 1.4 GB, and `meshc diff`,
    which holds two, at 2.8 GB; a build that writes streams its files instead (`rollout_stream`)."""

    policy: WavePolicy
    rollout: RolloutFile
    head: str  # the commit the working tree is on
    state: State
    rendered: Mapping[str, Rendered]
    files: Mapping[str, str]  # path -> sha256 of every file but MANIFEST.json
    targets: Mapping[str, tuple[str, ...]]  # target -> its files, as MANIFEST.json lists them


def build_rollout(context: Context, revisions: Sequence[WaveRevision] | None = None) -> RolloutBuild:
    """The rollout (the pins of rollout.yaml unless `revisions` are given) laid out for comparison: its files by
    digest, its targets' documents by print. Renderings are kept in the context's cache, keyed by what they depend
    on, so a second build of the same command (the next promotion, the other side of a diff) reuses them."""
    state = rollout_state(context, _resolved(context, revisions))
    rendered: dict[str, Rendered] = {}
    files, targets = file_index(laid_out(context, state, rendered, keep=False))
    return RolloutBuild(
        policy=context.policy,
        rollout=context.rollout,
        head=context.head,
        state=state,
        rendered=rendered,
        files=files,
        targets=targets,
    )


def file_index(files: Iterable[Laid]) -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
    """Path -> sha256 of each file, and target -> its paths (sorted), as RolloutBuild holds them."""
    digests: dict[str, str] = {}
    targets: dict[str, list[str]] = {}
    for laid in files:
        digests[laid.path] = laid.digest
        if laid.target is not None:
            targets.setdefault(laid.target, []).append(laid.path)
    return digests, {target: tuple(sorted(paths)) for target, paths in targets.items()}


def rollout_state_of(context: Context, revisions: Sequence[WaveRevision] | None = None) -> State:
    """The state the rollout (or `revisions`) leaves: what a build lays out, known before anything is rendered."""
    return rollout_state(context, _resolved(context, revisions))


def _resolved(context: Context, revisions: Sequence[WaveRevision] | None) -> tuple[WaveRevision, ...]:
    return tuple(
        revisions
        if revisions is not None
        else resolve(context.policy, context.rollout, context.location.repo)
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class Reuse:
    """What a rollout rebuild takes from the previous tree as it is: each target's input hash (its revision's spec
    and widening, `target_inputs`), the targets whose hash and files the build cache records (`reusable`), and
    their files, by path -> sha256 for the writer and as MANIFEST.json's entries."""

    inputs: Mapping[str, str]
    targets: frozenset[str] = frozenset()
    kept: Mapping[str, str] = field(default_factory=dict)
    entries: tuple[Entry, ...] = ()


def rollout_reuse(context: Context, state: State, cached: Cached | None) -> Reuse:
    """The targets of `state` a rebuild over the tree `cached` describes need not render again (see `Reuse`)."""
    inputs = target_inputs(context, state, live_parts(state))
    reused = reusable(inputs, cached)
    if cached is None or not reused:
        return Reuse(inputs=inputs)
    # A VM pool's target also lists its canary hosts' node files, which every build lays out anew (the inventory
    # says which hosts there are): only the files of its own rendering are kept.
    kept = {path: digest for path, digest in kept_files(reused, cached).items() if not path.startswith(NODES)}
    entries = tuple(
        (path, kept[path], target)
        for target in sorted(reused)
        for path in cached.targets[target]
        if path in kept
    )
    return Reuse(inputs=inputs, targets=reused, kept=kept, entries=entries)


def target_inputs(context: Context, state: State, parts: Sequence[Part]) -> dict[str, str]:
    """Each target's input hash in a rollout build: what its files are made of, which is the spec of the revision
    that lays it out and what widening added to that revision's IR (the key a command's renderings are kept by,
    compiler.rollout.renderings.rendering_key), with the spec directory's name and the target id."""
    inputs: dict[str, str] = {}
    for part in parts:
        spec, widening = rendering_key(context, part.revision, state.meshes[part.revision])
        prefix = f"rollout\0{context.label}\0{spec}\0{widening}\0"
        inputs.update((t, hashlib.sha256(f"{prefix}{t}".encode()).hexdigest()) for t in part.targets)
    return inputs


def rollout_stream(
    context: Context, state: State, split: bool = True, reuse: Reuse | None = None
) -> tuple[Iterator[NewFile], Worker | None]:
    """The rollout tree of `state` (whose states the caller checked: an unsafe rollout must not reach the writer,
    which would then remove a spare tree or report a write failure first) as a build writes it: each file as it is
    laid out, revision by revision (only one revision's documents are held at a time), MANIFEST.json last. A
    rendering problem raises mid-stream: the writer then throws its staging tree away.

    With `split`, from PARALLEL_FROM targets on, a worker forked by the writer (compiler.output.worker) lays out
    the targets of a share of the services (ROLLOUT_WORKER_SHARE), at every revision, beside the stream, which lists
    them in MANIFEST.json once it has taken them; the worker is returned for the writer to start. Where the stream
    fails with a finding, the tree is laid out again in this process alone, which raises what a build without a
    worker raises (`as_one`).

    With `reuse`, the targets it names are not rendered: MANIFEST.json lists their files as the previous tree holds
    them, which the writer keeps (its `kept`)."""
    kept = reuse or Reuse(inputs={})
    rendered = sum(len(part.targets - kept.targets) for part in live_parts(state))
    if not split or rendered < PARALLEL_FROM:
        return _new_files(_with_manifest(state, laid_out(context, state, {}, keep=True, reuse=kept))), None
    worker = Worker(lambda: _share_artifacts(state, kept.targets))
    laid = laid_out(context, state, {}, keep=True, more=worker.entries, reuse=kept)
    return as_one(
        _new_files(_with_manifest(state, laid)), lambda: laid_out(context, state, {}, keep=False, reuse=kept)
    ), worker


def _new_files(files: Iterable[Laid]) -> Iterator[NewFile]:
    """What the writer takes of `files`: each one laid out here, with its bytes."""
    for laid in files:
        if not laid.beside:
            yield NewFile(path=laid.path, digest=laid.digest, data=laid.data)


def _share_artifacts(state: State, reused: frozenset[str]) -> Iterator[Artifact]:
    """In the worker: the files of its share of the targets (`worker_targets`) but the `reused`, revision by
    revision, each rendered at its own."""
    parts = live_parts(state)
    theirs = worker_targets(parts)
    for part in parts:
        mine = (part.targets & theirs) - reused
        if mine:
            mesh = state.meshes[part.revision]
            yield from stream_backends(mesh, render(mesh, only=mine), mine, shared=False)


def rollout_truth(context: Context, state: State) -> tuple[dict[str, bytes], dict[str, Any]]:
    """The rollout tree of `state`, path -> bytes (MANIFEST.json included), and path -> the data each file's bytes
    serialize, where a backend gives it: what drift and the promote gate compare the evidence with."""
    tree: dict[str, bytes] = {}
    values: dict[str, Any] = {}
    for laid in _with_manifest(state, laid_out(context, state, {}, keep=True, values=True)):
        tree[laid.path] = laid.data or b""
        if laid.value is not None:
            values[laid.path] = laid.value
    return tree, values


def _with_manifest(state: State, files: Iterable[Laid]) -> Iterator[Laid]:
    """`files`, then the MANIFEST.json that lists them, with the rollout section of `state`."""
    entries = []
    for laid in files:
        entries.append((laid.path, laid.digest, laid.target))
        yield laid
    manifest = new_file(MANIFEST, manifest_of(sorted(entries), rollout=manifest_section(state)))
    yield Laid(path=MANIFEST, target=None, digest=manifest.digest, data=manifest.data)


def laid_out(
    context: Context,
    state: State,
    rendered: dict[str, Rendered],
    keep: bool,
    values: bool = False,
    more: Callable[[], Iterable[Entry]] | None = None,
    reuse: Reuse | None = None,
) -> Iterator[Laid]:
    """Every file of the rollout tree but MANIFEST.json, each revision's as soon as it is rendered; what each live
    revision rendered goes into `rendered`. `keep`: the files carry their bytes (a build), else their digests alone;
    `values` (with `keep`): and the data the bytes serialize. With `more`, a worker lays out its share of the targets
    (`worker_targets`): `more()` gives their files' entries once this process has laid out the rest, and they come
    out as `Laid.beside`, as do the files of the targets `reuse` keeps from the previous tree, which no revision
    renders.

    Each target's files come from its wave's revision; a shared file or an external reader's (a pseudo-target every
    live revision's union keeps: expand before contract) from the newest live revision that has it; a cluster's
    Namespaces from every live revision; canary hosts' node files from their wave's revision."""
    targets: set[str] = set()
    shared: dict[str, Laid] = {}
    # Found here and in the worker alike, once it is forked: each side knows the other's share without being told.
    parts = live_parts(state)
    beside = worker_targets(parts) if more is not None else frozenset()
    if reuse is not None:
        beside |= reuse.targets
        for path, digest, target in reuse.entries:
            targets.add(path)
            yield Laid(path=path, target=target, digest=digest, data=None, beside=True)
    for part in parts:
        done, files = render_revision(context, part.revision, state, part.targets - beside, keep, values)
        rendered[part.revision] = done
        workloads = {w.id for w in done.mesh.workloads}
        for laid in files:
            if laid.target in part.targets:  # its workloads' and its readers' (a reader's path is its own)
                targets.add(laid.path)
                yield laid
            elif laid.target not in workloads:
                shared.setdefault(laid.path, laid)
    last = [
        *cluster_files([(rendered[p.revision].mesh, p.readers) for p in parts]),
        *node_files(state, rendered),
    ]
    replaced = {artifact.path for artifact in last}
    yield from (laid for path, laid in shared.items() if path not in targets and path not in replaced)
    # Only now the worker's entries, which may mean waiting for it: this process had its own work to do until here.
    # (A worker's path that this process also wrote is "two artifacts claim" it: compiler.output.worker.)
    for path, digest, target in more() if more is not None else ():
        targets.add(path)
        yield Laid(path=path, target=target, digest=digest, data=None, beside=True)
    if replaced & targets:
        raise InternalError(
            f"a target's file is also a cluster or node file: {sorted(replaced & targets)[0]}"
        )
    yield from laid_files(last, keep, values)


@dataclass(frozen=True, kw_only=True, slots=True)
class Part:
    """One live revision's share of the tree: the targets laid out from its rendering."""

    revision: str
    targets: frozenset[str]  # the workloads placed at it, and the external readers no newer live revision has
    owners: Mapping[str, str]  # each of those targets -> its service
    readers: tuple[ExternalReader, ...]  # every external reader of the revision (not cheap to find)


def worker_targets(parts: Sequence[Part]) -> frozenset[str]:
    """The targets a rollout build's worker lays out: its share of the services (ROLLOUT_WORKER_SHARE)."""
    return worker_share(
        {t: service for part in parts for t, service in part.owners.items()}, ROLLOUT_WORKER_SHARE
    )


def live_parts(state: State) -> list[Part]:
    """Each live revision (newest first) and what is laid out from it."""
    parts: list[Part] = []
    readers_done: set[str] = set()
    for revision in dict.fromkeys(r.revision for r in state.revisions if r.revision in state.meshes):
        every = external_readers(state.meshes[revision])
        readers = {r.id: r.service for r in every if r.id not in readers_done}
        readers_done.update(readers)
        own = {t: state.placements[t].workload for t in _own_targets(state, revision)}
        owners = {**{t: w.service for t, w in own.items() if w is not None}, **readers}
        parts.append(Part(revision=revision, targets=frozenset(owners), owners=owners, readers=every))
    return parts


def _own_targets(state: State, revision: str) -> frozenset[str]:
    """The targets placed at `revision` that exist there."""
    return frozenset(
        t for t, p in state.placements.items() if p.revision == revision and p.workload is not None
    )


def cluster_files(meshes: Sequence[tuple[Mesh, Sequence[ExternalReader]]]) -> list[Artifact]:
    """Each cluster's 00-cluster.yaml with every Namespace any of `meshes` (the live revisions, newest first, each
    with its external readers) writes there: one file holds them all, so a namespace only an older wave still uses
    must be merged in, not dropped."""
    namespaces: dict[str, set[str]] = {}
    for mesh, readers in meshes:
        for cluster, found in cluster_namespaces(mesh, readers).items():
            namespaces.setdefault(cluster, set()).update(found)
    return [cluster_file(meshes[0][0], cluster, names) for cluster, names in sorted(namespaces.items())]


def kube_files(state: State, paths: Collection[str]) -> Iterator[Artifact]:
    """The Kubernetes files of the rollout tree of `state` among `paths`, with their objects (values), laid out as
    `laid_out` lays them out: a target's from the live revision that lays it out, each cluster's 00-cluster.yaml from
    every live revision. Only their targets are rendered: a diff reads the objects of the few files that change, which
    a comparison build (`build_rollout`) knows by digest alone."""
    targets = {target for path in paths if (target := unit_target(path)) is not None}
    parts = live_parts(state)
    for part in parts:
        if mine := part.targets & targets:
            yield from revision_kube_files(state.meshes[part.revision], mine, shared=False)
    if len(targets) < len(paths):  # a cluster's file among them
        clusters = cluster_files([(state.meshes[p.revision], p.readers) for p in parts])
        yield from (artifact for artifact in clusters if artifact.path in paths)


def revision_kube_files(mesh: Mesh, targets: Collection[str], shared: bool = True) -> Iterator[Artifact]:
    """The Kubernetes files of `targets` (workloads and external readers) as `mesh` alone renders them, with their
    objects, and with `shared` every cluster's 00-cluster.yaml of `mesh` (its own Namespaces only)."""
    return stream_kubernetes(mesh, render(mesh, only=targets), targets, values=True, shared=shared)


def node_files(state: State, rendered: Mapping[str, Rendered]) -> list[Artifact]:
    """puppet/data/nodes/<certname>.json for every canary host whose pool exists at its wave's revision."""
    wave_revision = {r.wave: r.revision for r in state.revisions}
    files = []
    for canary in state.canaries:
        sidecar = rendered[wave_revision[canary.wave]].canaries.get(canary.pool)
        if sidecar is not None:
            files.append(pool_artifact(node_path(canary.certname), sidecar, wave=canary.wave))
    return files


def node_path(certname: str) -> str:
    """The hiera node file of a host (contract: same shape as a pool file)."""
    return f"{NODES}{certname}.json"


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
