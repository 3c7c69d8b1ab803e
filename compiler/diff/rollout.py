"""What a merge changes at once where a rollout is in force: the rollout build of the base against the head's.

The spec diff says what a change does to each target once every wave has it. Under a rollout, `meshc build` gives
each wave its pinned revision, so a merge changes at once only: the first wave's targets; those of a wave whose
pin it moves (a promotion commit changes nothing but rollout.yaml); the allow-lists another live revision widens
or narrows (expand before contract), in any wave; and the canary hosts' node files. Here both revisions are built
as a build of each would build them, and every target and canary host whose rendering differs is listed with
what it costs. A side without rollout.yaml is its plain build (every wave runs its spec, no canary host).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from compiler.diagnostics import SpecError, at_revision
from compiler.diff.records import PinMove, RolloutNow, WaveSplit
from compiler.gitsource import SpecDirMissing, SpecLocation, locate
from compiler.output.manifest import MANIFEST
from compiler.rollout import has_rollout
from compiler.rollout.build import build_rollout, node_path
from compiler.rollout.hosts import Canary
from compiler.rollout.pins import WORKING_TREE, WaveRevision, resolve
from compiler.rollout.plan import TargetChange, target_changes
from compiler.rollout.revisions import (
    Context,
    RevisionCache,
    plain_context,
    revision_context,
    rollout_context,
    spec_key,
)
from compiler.spec.wave_policy import WavePolicy

# The reason a target changes when its wave runs another revision after the merge (else: "authorization").
NEW_REVISION = "its wave moves"
WORKING_TREE_NAME = "the working tree"


@dataclass(frozen=True, kw_only=True, slots=True)
class _Side:
    context: Context
    revisions: tuple[WaveRevision, ...]


def rollout_now(
    spec_dir: Path, base: str, head: str | None, changed: Collection[str] = ()
) -> tuple[RolloutNow | None, tuple[str, ...]]:
    """What merging `head` (None: the working tree) into `base` changes at once, and notes; (None, ()) where neither
    side has a rollout.yaml. `changed`: the targets the spec change reaches in the end (their canary hosts that
    do not change now are still ahead). A side whose rollout cannot be built (a pin not fetched, an unsafe
    state) is a note naming its first error, and nothing is shown: `meshc validate` and `build` list them all."""
    location = locate(spec_dir)
    cache = RevisionCache()
    # A rendering is keyed by its widening, not its spec: the base's renderings must not meet the head's.
    base_cache = RevisionCache(compiled=cache.compiled, keys=cache.keys, parsed=cache.parsed)
    side = base
    try:
        before = _rollout_side(spec_dir, location, base, base_cache)
        side = head or WORKING_TREE_NAME
        after = _rollout_side(spec_dir, location, head, cache)
        known = after or before
        if known is None:
            return None, ()
        policy = known.context.policy  # names the waves of a side without a policy of its own
        after = after or _plain_side(spec_dir, location, head, cache, policy)
        new = build_rollout(after.context, after.revisions)
        side = base
        before = before or _plain_side(spec_dir, location, base, base_cache, policy)
        old = build_rollout(before.context, before.revisions)
        moves = tuple(_moves(before, after, worktree=head is None))
    except SpecDirMissing:
        return None, ()  # no spec at the base: the spec diff says every target is new, as it is at once
    except SpecError as exc:
        first = at_revision(exc.diagnostics, None if side == WORKING_TREE_NAME else side)[0].format()
        return None, (
            f"the rollout at {side} cannot be built ({first}); what the merge changes at once is not shown",
        )
    finally:
        location.repo.close()  # stop GitPython's `git cat-file` helpers now, not at garbage collection
    changes = tuple(target_changes(old, new, {move.wave for move in moves}, NEW_REVISION))
    now = RolloutNow(
        moves=moves,
        changes=changes,
        files=_other_files(old.tree, new.tree, changes),
        hosts_ahead=_hosts_ahead(new.state.canaries, changed, {c.target for c in changes}),
        waves=after.context.policy.names,
    )
    return now, ()


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
    return _Side(context=context, revisions=resolve(context.policy, context.rollout, location.repo))


def _plain_side(
    spec_dir: Path, location: SpecLocation, revision: str | None, cache: RevisionCache, policy: WavePolicy
) -> _Side:
    context = plain_context(spec_dir, location, revision, cache, policy)
    waves = tuple(WaveRevision(wave=wave.name, revision=WORKING_TREE) for wave in context.policy.waves)
    return _Side(context=context, revisions=waves)


def _moves(before: _Side, after: _Side, worktree: bool) -> list[PinMove]:
    """The waves whose spec differs between the sides (a wave new at the head moves too), in the head's order;
    `worktree`: the head is the working tree (its first wave runs WORKING_TREE, not a commit)."""
    ran = {r.wave: r.revision for r in before.revisions}
    found = []
    for wave in after.revisions:
        old = ran.get(wave.wave)
        if old is None or spec_key(before.context, old) != spec_key(after.context, wave.revision):
            new = wave.revision if worktree else _commit(after.context, wave.revision)
            found.append(PinMove(wave=wave.wave, old=_commit(before.context, old) if old else "", new=new))
    return found


def _commit(context: Context, revision: str) -> str:
    """The commit a wave runs: its pin, or for the first wave of a revision, that revision's commit."""
    return context.head if revision == WORKING_TREE else revision


def _other_files(
    old: Mapping[str, bytes], new: Mapping[str, bytes], changes: Sequence[TargetChange]
) -> tuple[tuple[str, str], ...]:
    """The files that differ between the trees (MANIFEST.json aside) and belong to none of the `changes`."""
    listed = {node_path(c.target.removeprefix("host/")) for c in changes if c.target.startswith("host/")}
    for tree in (old, new):
        files_of = orjson.loads(tree[MANIFEST])["targets"]
        listed.update(path for change in changes for path in files_of.get(change.target, ()))
    return tuple(
        (path, "added" if path not in old else "removed" if path not in new else "changed")
        for path in sorted(old.keys() | new.keys())
        if path != MANIFEST and path not in listed and old.get(path) != new.get(path)
    )
