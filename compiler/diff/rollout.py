"""What a merge changes at once where a rollout is in force: the rollout build of the base against the head's.

The spec diff says what a change does to each target once every wave has it. Under a rollout, `meshc build` gives
each wave its pinned revision, so a merge changes at once only: the first wave's targets; those of a wave whose
pin it moves (a promotion commit changes nothing but rollout.yaml); the allow-lists another live revision widens
or narrows (expand before contract), in any wave; and the canary hosts' node files. Here both revisions are built
as a build of each would build them, and every target and canary host whose rendering differs is listed with
what it costs. A side without rollout.yaml is its plain build (every wave runs its spec, no canary host).

The Kubernetes objects to delete by hand are read from the two built trees too: those the base's tree holds and the
head's no longer writes leave at once; those the spec no longer writes but a pinned wave's revision still does stay,
applied, until the promotion that brings that wave the change.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from compiler.backends.kubernetes.layout import unit_target
from compiler.diagnostics import Diagnostic, InternalError, SpecError, at_revision
from compiler.diff.files import OutputFile, output_file
from compiler.diff.kube import KubeDeletions, KubeKey, cluster_of, delete_key, file_keys
from compiler.diff.records import WORKING_TREE as DIFF_WORKING_TREE
from compiler.diff.records import DeleteAhead, KubeDelete, PinMove, RefusedPromotion, RolloutNow, WaveSplit
from compiler.diff.transition import Hazard, merge_hazards
from compiler.emit import Artifact
from compiler.gitsource import SpecDirMissing, SpecLocation, locate
from compiler.ir.model import Mesh
from compiler.rollout import has_rollout
from compiler.rollout.build import (
    RolloutBuild,
    build_rollout,
    file_index,
    kube_files,
    manifest_section,
    revision_kube_files,
)
from compiler.rollout.changes import other_files, target_changes
from compiler.rollout.compiled import RevisionCache
from compiler.rollout.hosts import Canary
from compiler.rollout.pins import WORKING_TREE, WaveRevision, resolve
from compiler.rollout.placement import State
from compiler.rollout.renderings import laid_files
from compiler.rollout.revisions import (
    Context,
    compile_revision,
    plain_context,
    revision_context,
    rollout_context,
    spec_key,
)
from compiler.rollout.states import check_rollout, refused_ahead
from compiler.spec.load import spec_label
from compiler.spec.wave_policy import WavePolicy

# The reason a target changes when its wave runs another revision after the merge (else: "authorization").
NEW_REVISION = "its wave moves"


@dataclass(frozen=True, kw_only=True, slots=True)
class _Side:
    context: Context
    revisions: tuple[WaveRevision, ...]
    plain: bool  # no rollout.yaml at this revision: its build is the plain build


@dataclass(frozen=True, kw_only=True, slots=True)
class AtOnce:
    """What a merge changes at once where a rollout is in force: the report's record, and the Kubernetes objects
    that leave the built output at once, in the order to delete them (the diff's `deletions`)."""

    now: RolloutNow
    deletions: tuple[KubeDelete, ...]
    # the calls that work before the merge and can fail while it is applied (compiler.diff.transition)
    hazards: tuple[Hazard, ...] = ()


def rollout_now(
    spec_dir: Path,
    base: str,
    head: str | None,
    changed: Collection[str] = (),
    cache: RevisionCache | None = None,
    gone: Sequence[KubeDelete] = (),
) -> AtOnce | None:
    """What merging `head` (None: the working tree) into `base` changes at once; None where neither side has a
    rollout.yaml. `changed`: the targets the spec change reaches in the end (their canary hosts that do not
    change now are still ahead). `cache`: what the command parsed, checked and lowered so far (the spec diff's).
    `gone`: the Kubernetes objects the spec no longer writes once every wave has the change (the spec diff's
    deletions): those a pinned wave still writes are `deletions_ahead`.

    Raises SpecError where the head's rollout cannot be built, as `meshc build` there fails (a pin not fetched:
    CI needs the history). A base whose rollout cannot be built gives a RolloutNow that says why and nothing
    else: what the merge changes is then unknown, never "nothing"."""
    location = locate(spec_dir)
    label = spec_label(spec_dir)
    cache = cache if cache is not None else RevisionCache()
    # Everything the cache holds is keyed by content, never by a name (WORKING_TREE is another spec at each side):
    # compiled revisions by their spec, renderings by their spec and widening (renderings.render_revision). So the
    # base side takes the head's cache, and reuses whatever the head parsed, checked, lowered and rendered alike.
    try:
        try:
            after = _rollout_side(spec_dir, location, head, cache)
        except SpecError as exc:
            raise SpecError(_named(exc.diagnostics, head, label)) from None
        try:
            before = _rollout_side(spec_dir, location, base, cache)
        except SpecDirMissing:
            return None  # no spec at the base: the spec diff says every target is new, as each is at once
        except SpecError as exc:
            if after is None:
                return None  # a broken rollout.yaml at the base and none at the head: the plain build is what runs
            return _unknown(after, base, _named(exc.diagnostics, base, label), gone)
        known = after or before
        if known is None:
            return None
        policy = known.context.policy  # names the waves of a side without a policy of its own
        try:
            after = after or _plain_side(spec_dir, location, head, cache, policy)
            new = _build(after)
            refused: tuple[RefusedPromotion, ...] = ()
            if not after.plain:  # the head's rollout must be safe, as `meshc build` there checks it
                check_rollout(after.context, new.state)
            # Promotions run in a fixed order, each wave to the revision of the wave before, so a change that moves
            # no target's spec (a promotion, a hold) leaves the same promotions ahead as before it, each reviewed
            # with the change that made it: only a spec change can add one (1,000 services: 0.5-2 s saved there).
            if not after.plain and changed:
                refused = tuple(
                    RefusedPromotion(wave=wave, findings=findings)
                    for wave, findings in refused_ahead(after.context, new.state)
                )
        except SpecError as exc:
            raise SpecError(_named(exc.diagnostics, head, label)) from None
        try:
            before = before or _plain_side(spec_dir, location, base, cache, policy)
            old = _build(before)
        except SpecError as exc:
            return _unknown(after, base, _named(exc.diagnostics, base, label), gone)
        moved = _spec_moves(before, after)
        moves = tuple(_moves(before, after, moved, worktree=head is None))
        deletions = _deletions_now(before, old, after, new)
        leaving = {delete_key(d) for d in deletions}
        ahead = _deletions_ahead(after, new, [d for d in gone if delete_key(d) not in leaving])
    finally:
        location.repo.close()  # stop GitPython's `git cat-file` helpers now, not at garbage collection
    changes = tuple(target_changes(old, new, moved, NEW_REVISION))
    files = other_files(old, new, changes)
    hosts_added, hosts_removed = _inventory_change(before, after)
    now = RolloutNow(
        moves=moves,
        changes=changes,
        files=files,
        file_targets=_owners([path for path, _ in files], old, new),
        manifest=_section(before, old) != _section(after, new),
        hosts_ahead=_hosts_ahead(new.state.canaries, changed, {c.target for c in changes}),
        hosts_added=hosts_added,
        hosts_removed=hosts_removed,
        deletions_ahead=ahead,
        waves=after.context.policy.names,
        refused_ahead=refused,
        mode=_mode(after),
    )
    return AtOnce(now=now, deletions=deletions, hazards=merge_hazards(old.state, new.state))


def _build(side: _Side) -> RolloutBuild:
    """A side's build; a plain side's tree is the plain build's own (no wave keys, no node files, no rollout
    section), its documents the rollout build's with every wave at its spec, which are the same."""
    built = build_rollout(side.context, side.revisions)
    if not side.plain:
        return built
    from compiler.backends import stream_backends
    from compiler.render import render

    mesh = _plain_mesh(side)
    files, targets = file_index(laid_files(stream_backends(mesh, render(mesh)), keep=False))
    return replace(built, files=files, targets=targets)


def _plain_mesh(side: _Side) -> Mesh:
    """The IR a plain side's build renders: its spec compiled, before any widening (the context compiled it)."""
    compiled = compile_revision(side.context, WORKING_TREE)
    if compiled is None:
        raise InternalError(f"{side.context.label}: a plain side without its spec")
    return compiled.mesh


def _deletions_now(
    before: _Side, old: RolloutBuild, after: _Side, new: RolloutBuild
) -> tuple[KubeDelete, ...]:
    """The Kubernetes objects the base's built tree holds and the head's no longer writes, in the order to delete
    them (compiler.diff.kube): read from the Kubernetes files whose digests differ, one side after the other, so
    what is kept is their objects' keys."""
    paths = {
        path
        for path in old.files.keys() | new.files.keys()
        if cluster_of(path) is not None and old.files.get(path) != new.files.get(path)
    }
    deletions = KubeDeletions()
    for file in _kube_files(before, old, paths & old.files.keys()):
        deletions.add(file, None)
    for file in _kube_files(after, new, paths & new.files.keys()):
        deletions.add(None, file)
    return deletions.ordered()


def _kube_files(side: _Side, built: RolloutBuild, paths: Collection[str]) -> Iterator[OutputFile]:
    """The Kubernetes files at `paths` of a side's tree, with their objects: rendered again (a comparison build keeps
    digests), each checked against the digest its build recorded, so the objects are those of the tree compared."""
    if not paths:
        return
    if side.plain:
        targets = {target for path in paths if (target := unit_target(path)) is not None}
        artifacts: Iterable[Artifact] = revision_kube_files(_plain_mesh(side), targets)
    else:
        artifacts = kube_files(built.state, paths)
    read = set()
    for artifact in artifacts:
        if artifact.path not in paths:
            continue
        file = output_file(artifact)
        if file.digest.hex() != built.files.get(file.path):
            raise InternalError(f"{file.path}: rendered again for its objects, it is not the file compared")
        read.add(file.path)
        yield file
    if missing := set(paths) - read:
        raise InternalError(f"{sorted(missing)[0]}: a changed Kubernetes file was not rendered again")


def _deletions_ahead(after: _Side, new: RolloutBuild, left: Sequence[KubeDelete]) -> tuple[DeleteAhead, ...]:
    """Of the objects the spec no longer writes that do not leave at once (`left`), those a live revision of the
    head's rollout still writes, each with the last wave (in the policy's order) whose revision writes it, by that
    wave: its promotion drops it. A head without rollout.yaml is its plain build: it holds none of them."""
    if after.plain or not left:
        return ()
    state = new.state
    targets = {target for d in left if (target := unit_target(d.file)) is not None}
    written = {
        revision: _keys_by_path(revision_kube_files(mesh, targets)) for revision, mesh in state.meshes.items()
    }
    order = {name: index for index, name in enumerate(after.context.policy.names)}
    ahead = []
    for delete in left:
        waves = [r.wave for r in state.revisions if _writes(state, written.get(r.revision, {}), r, delete)]
        if waves:
            ahead.append(DeleteAhead(object=delete, wave=max(waves, key=order.__getitem__)))
    # sorted is stable: each wave's objects stay in the order to delete them
    return tuple(sorted(ahead, key=lambda d: order[d.wave]))


def _keys_by_path(artifacts: Iterable[Artifact]) -> dict[str, frozenset[KubeKey]]:
    return {artifact.path: file_keys(output_file(artifact)) for artifact in artifacts}


def _writes(
    state: State, written: Mapping[str, frozenset[KubeKey]], wave: WaveRevision, delete: KubeDelete
) -> bool:
    """Does `wave` write the object into the built tree: its revision renders it into its file (`written`), and a
    workload's file is laid out from the revision of the workload's own wave alone."""
    target = unit_target(delete.file)
    placement = state.placements.get(target) if target is not None else None
    ours = placement is None or placement.wave == wave.wave
    return ours and delete_key(delete) in written.get(delete.file, ())


def _mode(side: _Side) -> str:
    """The rollout in force at a side: "active", "hold" (nothing new reaches any wave), or "none"."""
    return "none" if side.plain else "hold" if side.context.rollout.hold else "active"


def _unknown(
    after: _Side, base: str, diagnostics: Sequence[Diagnostic], gone: Sequence[KubeDelete]
) -> AtOnce:
    """What the merge changes at once when the base's rollout cannot be built: unknown, and why. No object is to be
    deleted now: which of those the spec no longer writes (`gone`) leave output/ at once is unknown too."""
    problem = f"the rollout at {base} cannot be built: {diagnostics[0].format()}"
    if len(diagnostics) > 1:
        problem += f" (and {len(diagnostics) - 1} more error(s))"
    now = RolloutNow(
        moves=(),
        changes=(),
        deletions_ahead=tuple(DeleteAhead(object=d, wave="") for d in gone),
        waves=after.context.policy.names,
        mode=_mode(after),
        unknown=problem,
    )
    return AtOnce(now=now, deletions=())


def _named(diagnostics: Sequence[Diagnostic], revision: str | None, label: str) -> tuple[Diagnostic, ...]:
    """Diagnostics of a revision's files named `REV:path`; those of a pinned revision are named so already."""
    if revision is None:
        return tuple(diagnostics)
    return tuple(at_revision([d], revision)[0] if d.span.file.startswith(label) else d for d in diagnostics)


def _hosts_ahead(
    canaries: Sequence[Canary], changed: Collection[str], now: Collection[str]
) -> tuple[WaveSplit, ...]:
    """The canary hosts of the `changed` pools that do not change `now`, by wave."""
    found: dict[str, list[str]] = {}
    for canary in canaries:
        host = f"host/{canary.certname}"
        if canary.pool in changed and host not in now:
            found.setdefault(canary.wave, []).append(host)
    return tuple(WaveSplit(wave=wave, targets=tuple(hosts)) for wave, hosts in found.items())


def _rollout_side(
    spec_dir: Path, location: SpecLocation, revision: str | None, cache: RevisionCache
) -> _Side | None:
    """A revision's rollout as its build resolves it, or None where it has no rollout.yaml."""
    if revision is None:
        context = rollout_context(spec_dir, cache) if has_rollout(spec_dir) else None
    else:
        context = revision_context(spec_dir, location, revision, cache)
    if context is None:
        return None
    return _Side(
        context=context, revisions=resolve(context.policy, context.rollout, location.repo), plain=False
    )


def _plain_side(
    spec_dir: Path, location: SpecLocation, revision: str | None, cache: RevisionCache, policy: WavePolicy
) -> _Side:
    context = plain_context(spec_dir, location, revision, cache, policy)
    waves = tuple(WaveRevision(wave=wave.name, revision=WORKING_TREE) for wave in context.policy.waves)
    return _Side(context=context, revisions=waves, plain=True)


def _moves(before: _Side, after: _Side, moved: Collection[str], worktree: bool) -> list[PinMove]:
    """The waves that run another revision at the head, in the head's order: another spec (a wave new at the head
    moves too), or, where both sides have a rollout, another pin, which MANIFEST.json records (the first wave runs
    its side's own commit, so it moves only with its spec). `moved`: the waves whose spec moves (`_spec_moves`);
    `worktree`: the head is the working tree (its first wave runs WORKING_TREE, not a commit)."""
    ran = {r.wave: r.revision for r in before.revisions}
    pinned = not before.plain and not after.plain
    found = []
    for wave in after.revisions:
        old = ran.get(wave.wave)
        if wave.wave in moved or (pinned and old != wave.revision):
            new = (
                DIFF_WORKING_TREE
                if worktree and wave.revision == WORKING_TREE
                else _commit(after.context, wave.revision)
            )
            found.append(PinMove(wave=wave.wave, old=_commit(before.context, old) if old else "", new=new))
    return found


def _spec_moves(before: _Side, after: _Side) -> frozenset[str]:
    """The waves that run another spec at the head (a wave new at the head too): their targets change because
    they move."""
    ran = {r.wave: r.revision for r in before.revisions}
    return frozenset(
        wave.wave
        for wave in after.revisions
        if wave.wave not in ran
        or spec_key(before.context, ran[wave.wave]) != spec_key(after.context, wave.revision)
    )


def _commit(context: Context, revision: str) -> str:
    """The commit a wave runs: its pin, or for the first wave of a revision, that revision's commit."""
    return context.head if revision == WORKING_TREE else revision


def _inventory_change(before: _Side, after: _Side) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The certnames the inventory gains and loses, sorted, between two sides with a rollout (a plain side reads
    none: nothing is said)."""
    if before.plain or after.plain:
        return (), ()
    old = {host.certname for host in before.context.hosts}
    new = {host.certname for host in after.context.hosts}
    return tuple(sorted(new - old)), tuple(sorted(old - new))


def _section(side: _Side, built: RolloutBuild) -> dict[str, object] | None:
    """The rollout section MANIFEST.json has at a side (None: a plain build's has none)."""
    return None if side.plain else manifest_section(built.state)


def _owners(paths: Sequence[str], old: RolloutBuild, new: RolloutBuild) -> tuple[str, ...]:
    """The targets whose files (at either side) are among `paths`, sorted."""
    wanted = set(paths)
    return tuple(
        sorted(
            {
                target
                for build in (old, new)
                for target, files in build.targets.items()
                if wanted.intersection(files)
            }
        )
    )
