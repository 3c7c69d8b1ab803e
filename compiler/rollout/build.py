"""The rollout build: every wave's revision compiled once, allow-lists widened over live revisions, one tree.

Each target (and canary host) gets the rendering of its wave's revision; a target absent at that
revision is absent. Authorization is expanded before it is contracted: a service's ingress admits
every client identity that any live revision admits, so a new client is admitted everywhere as soon
as it runs anywhere, and an identity goes only once no live revision admits it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import git

from compiler.backends import run_backends
from compiler.backends.kubernetes import external_readers
from compiler.backends.puppet import ROOT as PUPPET_ROOT
from compiler.backends.puppet import pool_artifact
from compiler.diagnostics import Diagnostic, SpecError
from compiler.emit import LOCK_TIMEOUT, Artifact, WriteResult, render_tree
from compiler.gitsource import RevisionError, SpecLocation, locate, read_revision
from compiler.ir.lower import lower
from compiler.ir.model import Mesh, Workload
from compiler.pipeline import compile_dir, spec_files, write_output
from compiler.render import SidecarConfig, render
from compiler.rollout.hosts import INVENTORY_FILE, Canary, Host, canaries, load_inventory
from compiler.rollout.pins import ROLLOUT_FILE, WORKING_TREE, RolloutFile, WaveRevision, load_rollout, resolve
from compiler.rollout.policy import WavePolicy, assign
from compiler.spec.checks import check
from compiler.spec.load import MESH_FILE, SERVICES_DIR, Document, LoadError, load_documents, parse_document
from compiler.spec.model import Spec


@dataclass(frozen=True, kw_only=True, slots=True)
class Revision:
    """One revision's checked spec and IR (before any widening)."""

    revision: str
    spec: Spec
    mesh: Mesh


@dataclass(frozen=True, kw_only=True, slots=True)
class Rendered:
    """One live revision rendered with the widened allow-lists."""

    revision: str
    mesh: Mesh
    sidecars: Mapping[str, SidecarConfig]
    artifacts: tuple[Artifact, ...]


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


@dataclass(frozen=True, kw_only=True, slots=True)
class RolloutBuild:
    """A rollout build: the state, the rendering of each live revision, and the output tree."""

    policy: WavePolicy
    rollout: RolloutFile
    head: str  # the commit the working tree is on
    state: State
    rendered: Mapping[str, Rendered]
    tree: Mapping[str, bytes]


@dataclass(kw_only=True, slots=True)
class RevisionCache:
    """Compiled revisions by spec tree hash: a revision pinned by several waves, or unchanged between
    pins, is loaded, checked and lowered once per process (one cache per command, no global state)."""

    compiled: dict[str, Revision] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)  # commit id -> spec key
    parsed: dict[tuple[str, str], Document] = field(
        default_factory=dict
    )  # (file, content hash) -> parsed document
    rendered: dict[tuple[str, str], Rendered] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True, slots=True)
class Context:
    """What every rollout computation of one command reads: the spec directory, its repository, the head spec."""

    spec_dir: Path
    label: str
    location: SpecLocation
    head_files: Mapping[str, bytes]
    policy: WavePolicy
    rollout: RolloutFile
    hosts: tuple[Host, ...]
    head: str
    cache: RevisionCache


def rollout_context(spec_dir: Path, cache: RevisionCache | None = None) -> Context | None:
    """The rollout in force for `spec_dir`, or None when there is none: no rollout.yaml, or a spec outside git
    (pins name git revisions; a copy of the spec has none), where a build is the plain build, exactly as without waves.

    Raises SpecError for a rollout.yaml that is malformed or without a wave policy.
    """
    label = spec_dir.as_posix().rstrip("/") or "."
    if not os.path.lexists(
        spec_dir / ROLLOUT_FILE
    ):  # a directory, FIFO or link there is an error (load_rollout), not "none"
        return None
    try:
        location = locate(spec_dir)
    except RevisionError:
        return None
    rollout = load_rollout(spec_dir / ROLLOUT_FILE, f"{label}/{ROLLOUT_FILE}")
    if rollout is None:
        return None
    head_files = spec_files(spec_dir)
    parsed: dict[tuple[str, str], Document] = {}
    head_spec = check(load_parsed(head_files, label, parsed))
    if head_spec.mesh.rollout is None:
        raise SpecError(
            [
                _diagnostic(
                    rollout,
                    "rollout-no-policy",
                    f"{ROLLOUT_FILE} pins waves, but {head_spec.mesh.file} has no "
                    "`rollout.waves`; add the wave policy or remove rollout.yaml",
                )
            ]
        )
    hosts = load_inventory(spec_dir / INVENTORY_FILE, f"{label}/{INVENTORY_FILE}")
    head = location.repo.head.commit.hexsha if location.repo.head.is_valid() else ""
    context = Context(
        spec_dir=spec_dir,
        label=label,
        location=location,
        head_files=head_files,
        policy=head_spec.mesh.rollout,
        rollout=rollout,
        hosts=hosts,
        head=head,
        cache=cache or RevisionCache(),
    )
    context.cache.parsed.update(parsed)
    key = spec_key(context, WORKING_TREE)
    if (
        key is not None and key not in context.cache.compiled
    ):  # the head was just checked: lower it, do not load it again
        context.cache.compiled[key] = Revision(revision=WORKING_TREE, spec=head_spec, mesh=lower(head_spec))
    return context


def no_rollout_reason(spec_dir: Path) -> str:
    """Why `spec_dir` has no rollout in force (rollout_context gave None); raise OSError if it is no spec directory."""
    spec_files(
        spec_dir
    )  # a missing spec directory, or a file, is said as such, not as a missing rollout.yaml
    label = spec_dir.as_posix().rstrip("/") or "."
    if (spec_dir / ROLLOUT_FILE).is_file():
        return (
            f"{label}/{ROLLOUT_FILE} pins git revisions, but {label} is not in a git repository "
            "(a copy of the spec has no history)"
        )
    return f"no {ROLLOUT_FILE} in {label}"


def _diagnostic(rollout: RolloutFile, code: str, message: str) -> Diagnostic:
    return Diagnostic(span=rollout.span, code=code, message=message)


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


def compile_revision(context: Context, revision: str) -> Revision | None:
    """A revision's spec, checked and lowered once per tree hash; None when the spec directory does not exist there."""
    key, files = _tree_key(context, revision)
    if key is None:
        return None
    cached = context.cache.compiled.get(key)
    if cached is None:
        if files is None:
            files = read_revision(context.location, revision)
        try:
            spec = check(load_parsed(files, context.label, context.cache.parsed))
        except SpecError as exc:
            from compiler.diff import at_revision  # names files `REV:path`, as git does

            raise SpecError(at_revision(exc.diagnostics, revision[:12])) from None
        cached = context.cache.compiled[key] = Revision(revision=revision, spec=spec, mesh=lower(spec))
    return replace(cached, revision=revision) if cached.revision != revision else cached


def load_parsed(
    files: Mapping[str, bytes], label: str, parsed: dict[tuple[str, str], Document]
) -> dict[str, Document]:
    """load_documents, parsing each distinct file once per command: revisions of a rollout share most of their files.

    Anything load_documents would report (a parse error, a stray file, no mesh.yaml) is left to it, so the
    diagnostics are exactly the same.
    """
    documents: dict[str, Document] = {}
    for relative, raw in sorted(files.items()):
        name = f"{label}/{relative}"
        key = (name, hashlib.sha1(raw).hexdigest())
        if key not in parsed:
            if relative != MESH_FILE and not relative.endswith(".yaml"):
                return load_documents(files, label)
            try:
                parsed[key] = parse_document(name, raw)
            except LoadError:
                return load_documents(files, label)
        documents[name] = parsed[key]
    if MESH_FILE not in files:
        return load_documents(files, label)
    return documents


def _tree_key(context: Context, revision: str) -> tuple[str | None, Mapping[str, bytes] | None]:
    """The cache key of a revision's spec and, for the working tree, its files (None, None: no spec directory there)."""
    if revision == WORKING_TREE:
        return spec_key(context, revision), context.head_files
    return spec_key(context, revision), None


def spec_key(context: Context, revision: str) -> str | None:
    """What a revision's spec is made of, as git hashes it: mesh.yaml's blob and the services/ tree.

    Read from git objects without reading any blob; for the working tree, hashed the way git hashes
    them. rollout.yaml, the inventory and output/ are not part of it, so a promotion commit has the
    spec of its parent. Equal keys mean equal spec files; a mismatch only costs a compile.
    """
    if revision == WORKING_TREE:
        files = context.head_files
        services = sorted(
            (path.split("/", 1)[1], data)
            for path, data in files.items()
            if path.startswith(f"{SERVICES_DIR}/")
        )
        tree = b"".join(
            b"100644 " + name.encode() + b"\0" + bytes.fromhex(_blob_sha(data)) for name, data in services
        )
        mesh = _blob_sha(files[MESH_FILE]) if MESH_FILE in files else "-"
        services_sha = hashlib.sha1(b"tree %d\0" % len(tree) + tree).hexdigest() if services else "-"
        return f"{mesh}:{services_sha}"
    cached = context.cache.keys.get(revision)
    if cached is None:
        commit = context.location.repo.commit(revision)
        try:
            root = commit.tree / context.location.relative if context.location.relative else commit.tree
        except KeyError:
            return None
        cached = context.cache.keys[revision] = (
            f"{_entry_sha(root, MESH_FILE)}:{_entry_sha(root, SERVICES_DIR)}"
        )
    return cached


def _entry_sha(tree: git.Tree, name: str) -> str:
    try:
        return (tree / name).hexsha
    except KeyError:
        return "-"


def _blob_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def rollout_state(context: Context, revisions: tuple[WaveRevision, ...]) -> State:
    """Every target's wave, revision and widened workload under `revisions`, and the widened IR of each live revision."""
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
    hosts = canaries(context.policy, context.hosts, pools, waves)
    live = sorted({wave_revision[waves[t]] for t in chosen} | {wave_revision[c.wave] for c in hosts})
    widened = widen({rev: compiled[rev].mesh for rev in live if compiled[rev] is not None}, waves)
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
    """Target -> wave, by the head's policy; a target is placed by its newest description (wave order = newest first)."""
    waves: dict[str, str] = {}
    for wave_revision in revisions:
        found = compiled[wave_revision.revision]
        if found is not None:
            for target, wave in assign(policy, found.mesh.workloads).items():
                waves.setdefault(target, wave)
    return waves


def widen(meshes: Mapping[str, Mesh], waves: Mapping[str, str]) -> dict[str, Mesh]:
    """Each live revision's IR with every service's allow-list the union over all live revisions (expand before contract)."""
    allowed: dict[str, set[str]] = {}
    callers: dict[str, set[str]] = {}
    identities: set[str] = set()
    for mesh in meshes.values():
        for workload in mesh.workloads:
            allowed.setdefault(workload.service, set()).update(workload.ingress.allowed_clients)
            callers.setdefault(workload.service, set()).update(workload.ingress.client_services)
            identities.add(workload.identity)
    return {
        rev: _widened(mesh, allowed, callers, frozenset(identities), waves) for rev, mesh in meshes.items()
    }


def _widened(
    mesh: Mesh,
    allowed: Mapping[str, set[str]],
    callers: Mapping[str, set[str]],
    identities: frozenset[str],
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
    return replace(
        mesh,
        workloads=workloads,
        waves={w.id: waves[w.id] for w in mesh.workloads if w.id in waves},
        rollout_identities=identities - own,
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
    """The sidecars of one live revision's widened IR, and the artifacts of the targets that run it, of `readers`, and shared files."""
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
    """Each target's files from its wave's revision, shared files from the newest live revision that has them,
    canary hosts' node files, and MANIFEST.json with the rollout section."""
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
            if (
                artifact.target not in workloads
            ):  # shared files and external readers: expand before contract too
                chosen.setdefault(artifact.path, artifact)
    for artifact in node_files(state, rendered):
        chosen[artifact.path] = artifact
    return render_tree(list(chosen.values()), rollout=manifest_section(state))


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


def plain_tree(spec_dir: Path) -> dict[str, bytes]:
    """The output tree without a rollout: the one-revision build."""
    return compile_dir(spec_dir, values=False).tree()


def output_for(spec_dir: Path, cache: RevisionCache | None = None) -> dict[str, bytes]:
    """What `meshc build` writes for `spec_dir`: the rollout tree when a rollout is in force, else the plain build.

    Raises SpecError when a state of the rollout is unsafe (see compiler.rollout.states).
    """
    context = rollout_context(spec_dir, cache)
    if context is None:
        return plain_tree(spec_dir)
    from compiler.rollout.states import check_rollout  # the states module reads this module's records

    try:
        result = build_rollout(context)
        check_rollout(context, result)
    finally:
        context.location.repo.close()  # stop GitPython's `git cat-file` helpers now, not at garbage collection
    return dict(result.tree)


def build(
    spec_dir: Path,
    out: Path,
    lock_timeout: float = LOCK_TIMEOUT,
    on_wait: Callable[[Path], None] | None = None,
) -> WriteResult:
    """`meshc build`: compile (every wave's revision when a rollout is in force) and write the tree atomically."""
    return write_output(spec_dir, out, lambda: output_for(spec_dir), lock_timeout, on_wait)
