"""The rollout plan (`meshc plan`) and a promotion (`meshc promote`), as records; formatting is in rollout.report."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from compiler.ir.model import Workload
from compiler.output.writer import WriteResult
from compiler.pipeline import write_output
from compiler.rollout.build import (
    build_rollout,
    rollout_state_of,
    rollout_stream,
)
from compiler.rollout.changes import TargetChange, other_files, target_changes
from compiler.rollout.pairs import StatesReport
from compiler.rollout.pins import (
    ROLLOUT_FILE,
    WORKING_TREE,
    WaveRevision,
    promotion_target,
    resolve,
    rewrite_pin,
    with_pin,
)
from compiler.rollout.placement import State
from compiler.rollout.revisions import (
    Context,
    compile_revision,
    no_rollout_reason,
    rollout_context,
    spec_key,
)
from compiler.rollout.states import check_rollout, check_states, next_state


@dataclass(frozen=True, kw_only=True, slots=True)
class WaveStatus:
    """One wave: its revision and how many targets and canary hosts run it."""

    name: str
    revision: str
    targets: int
    hosts: int
    current: bool  # runs the newest revision (the one being built; on hold, possibly no wave does)


@dataclass(frozen=True, kw_only=True, slots=True)
class TargetStatus:
    """One target or canary host (`host/<certname>`) where the rollout stands: its wave and the revision it runs."""

    target: str
    wave: str
    revision: str
    present: bool  # False: the target does not exist at its wave's revision (yet, or any more)
    restart_sensitive: bool
    pool: str = ""  # canary hosts: the VM pool (target id) the host belongs to


@dataclass(frozen=True, kw_only=True, slots=True)
class AuthzStep:
    """An allow-list step: identities a service admits beyond its own revision (expand), or stops admitting."""

    service: str
    identities: tuple[str, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class Plan:
    """Where the rollout stands and what the next promotion does."""

    waves: tuple[WaveStatus, ...]
    hold: bool
    promotion: tuple[str, str] | None  # (wave, revision it moves to)
    changes: tuple[TargetChange, ...]
    expanded: tuple[AuthzStep, ...]  # in force now: admitted because another live revision admits them
    contracted: tuple[AuthzStep, ...]  # the next promotion stops admitting these
    current_states: StatesReport
    next_states: StatesReport | None
    # every target and canary host, by wave order then id (the status page's boxes)
    targets: tuple[TargetStatus, ...] = ()
    # (path, added | removed | changed) of every other file the next promotion changes: an object that is no
    # sidecar document (a NetworkPolicy narrowed, a Namespace no live revision needs), a shared or reader's file
    files: tuple[tuple[str, str], ...] = ()
    # on hold: the newest revision when no wave runs it (held_back()); None without a hold or when a wave runs it
    held_back: str | None = None


class PromoteError(Exception):
    """A promotion that cannot be made: nothing to promote, an unknown wave, or a working tree that is not committed."""


def plan_rollout(context: Context) -> Plan:
    """The plan of the rollout in force: each wave, the next promotion's changes and costs, and the checked states."""
    current = build_rollout(context)
    # raises SpecError [rollout-unsafe]: a plan of an unsafe rollout is the error list
    checked = check_rollout(context, current.state)
    now = check_states(current.state, None, None)
    promotion, following, revisions = next_state(context, current.state)
    changes: tuple[TargetChange, ...] = ()
    files: tuple[tuple[str, str], ...] = ()
    contracted: tuple[AuthzStep, ...] = ()
    report = None
    if promotion is not None and following is not None and revisions is not None:
        after = build_rollout(context, revisions)
        changes = tuple(target_changes(current, after, {promotion[0]}))
        files = other_files(current, after, changes)
        contracted = tuple(_allow_steps(after.state, current.state))
        report = checked
    return Plan(
        waves=tuple(_waves(current.state, context)),
        hold=context.rollout.hold,
        promotion=promotion,
        changes=changes,
        expanded=tuple(_expanded(current.state, context)),
        contracted=contracted,
        current_states=now,
        next_states=report,
        targets=tuple(_targets(current.state)),
        held_back=held_back(context, current.state.revisions),
        files=files,
    )


def held_back(context: Context, revisions: tuple[WaveRevision, ...]) -> str | None:
    """On hold, the newest revision when no wave runs its spec: the commit the working tree is on, or WORKING_TREE
    where the working tree's spec is not that commit's. None without a hold, or when some wave runs it."""
    if not context.rollout.hold:
        return None
    newest = spec_key(context, WORKING_TREE)
    if any(spec_key(context, r.revision) == newest for r in revisions):
        return None
    return context.head if context.head and spec_key(context, context.head) == newest else WORKING_TREE


def held_back_name(revision: str) -> str:
    """A held-back revision as plan and promote name it: a short commit id, or the working tree's spec."""
    return "the working tree's uncommitted spec" if revision == WORKING_TREE else revision[:12]


def held_back_note(first_wave: str, revision: str) -> str:
    """What a hold keeps from every wave, and how it moves on (plan's every format and promote say it alike)."""
    return (
        f"on hold: the newest revision, {held_back_name(revision)}, runs in no wave; lifting the hold "
        f"(hold: false, and no pin for {first_wave}) lets it reach the first wave, {first_wave}"
    )


def _waves(state: State, context: Context) -> list[WaveStatus]:
    counts = {r.wave: 0 for r in state.revisions}
    for placement in state.placements.values():
        if placement.workload is not None:
            counts[placement.wave] += 1
    hosts = {r.wave: sum(c.wave == r.wave for c in state.canaries) for r in state.revisions}
    # the working tree's spec, not the first wave's: on hold that wave is pinned, and a newer merge runs nowhere
    newest = spec_key(context, WORKING_TREE)
    return [
        WaveStatus(
            name=r.wave,
            revision=r.revision,
            targets=counts[r.wave],
            hosts=hosts[r.wave],
            current=spec_key(context, r.revision) == newest,
        )
        for r in state.revisions
    ]


def _targets(state: State) -> list[TargetStatus]:
    order = {r.wave: index for index, r in enumerate(state.revisions)}
    revision = {r.wave: r.revision for r in state.revisions}
    sensitive = {
        p.target: bool(p.workload and p.workload.restart_sensitive) for p in state.placements.values()
    }
    found = [
        TargetStatus(
            target=p.target,
            wave=p.wave,
            revision=p.revision,
            present=p.workload is not None,
            restart_sensitive=sensitive[p.target],
        )
        for p in state.placements.values()
    ]
    found += [
        TargetStatus(
            target=f"host/{c.certname}",
            wave=c.wave,
            revision=revision[c.wave],
            present=True,
            restart_sensitive=sensitive.get(c.pool, False),
            pool=c.pool,
        )
        for c in state.canaries
    ]
    return sorted(found, key=lambda t: (order[t.wave], t.target))


def _allow_lists(state: State) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for placement in state.placements.values():
        if placement.workload is not None:
            found.setdefault(placement.workload.service, set()).update(
                placement.workload.ingress.allowed_clients
            )
    return found


def _allow_steps(after: State, before: State) -> list[AuthzStep]:
    """Identities a service admits before but no longer after (the contract a promotion makes)."""
    old, new = _allow_lists(before), _allow_lists(after)
    steps = [AuthzStep(service=s, identities=tuple(sorted(old[s] - new.get(s, set())))) for s in sorted(old)]
    return [step for step in steps if step.identities]


def _expanded(state: State, context: Context) -> list[AuthzStep]:
    """Identities a service admits somewhere only because another live revision admits them (the expand step in
    force): per target, its widened allow-list beyond its own revision's. A service whose canary runs a revision
    that admits a new client admits it in its other waves by widening alone, though one revision of it admits it."""
    extra: dict[str, set[str]] = {}
    # Each revision's first workload (by id) of each service, indexed once: a look through every workload for
    # each placement made this quadratic in the mesh's size.
    first: dict[str, dict[str, Workload]] = {}
    for placement in state.placements.values():
        if placement.workload is None:
            continue
        revision = compile_revision(context, placement.revision)
        if revision is None:
            continue
        if placement.revision not in first:
            first[placement.revision] = {}
            for candidate in revision.mesh.workloads:  # sorted by id
                first[placement.revision].setdefault(candidate.service, candidate)
        service = placement.workload.service
        own = first[placement.revision].get(service)
        admitted = set(placement.workload.ingress.allowed_clients)
        extra.setdefault(service, set()).update(admitted - set(own.ingress.allowed_clients if own else ()))
    return [
        AuthzStep(service=s, identities=tuple(sorted(found))) for s, found in sorted(extra.items()) if found
    ]


@dataclass(frozen=True, kw_only=True, slots=True)
class Promotion:
    """What `meshc promote` did: the wave moved, from and to which revision, and the output written."""

    wave: str
    old: str
    new: str
    written: WriteResult
    # what the gate asked to record (a --force past it), also a comment on the pin in rollout.yaml
    note: str | None = None


# The convergence gate (compiler.drift.gate.promotion_gate): called with the context and the wave about
# to move, it raises PromoteError while the wave before it has not converged, or returns a note to
# record beside the pin (a --force past the gate), or None.
PromotionGate = Callable[[Context, str], str | None]


def promote(
    spec_dir: Path, out: Path, wave: str | None = None, gate: PromotionGate | None = None
) -> Promotion:
    """Move the next (or the named) wave's pin to the revision of the wave before it, prove its states safe,
    rewrite rollout.yaml (comments kept) and rebuild `out`: one pull request."""
    context = rollout_context(spec_dir)
    if context is None:
        raise PromoteError(f"{no_rollout_reason(spec_dir)}: there is no rollout to promote")
    try:
        return _promote(context, spec_dir, out, wave, gate)
    finally:
        context.location.repo.close()


def _promote(
    context: Context, spec_dir: Path, out: Path, wave: str | None, gate: PromotionGate | None
) -> Promotion:
    revisions = resolve(context.policy, context.rollout, context.location.repo)
    try:
        target = promotion_target(revisions, context.head, wave, lambda rev: spec_key(context, rev))
    except KeyError:
        raise PromoteError(
            f"unknown wave {wave!r}; the waves are {', '.join(context.policy.names)}"
        ) from None
    if target is None and wave == context.policy.names[0]:
        raise PromoteError(
            f"the first wave {wave!r} is never promoted: it runs the commit being built"
            + (" once the hold is lifted (hold: false, and remove its pin)" if context.rollout.hold else "")
        )
    if target is None:
        raise PromoteError(_nothing_to_promote(context, revisions, wave))
    if target[1] == context.head:
        _require_clean(context, target[0])
    note = gate(context, target[0]) if gate is not None else None
    old = next(r.revision for r in revisions if r.wave == target[0])
    moved = with_pin(revisions, *target)
    state = rollout_state_of(context, moved)
    check_rollout(_with_pins(context, target[0], target[1]), state)
    path = spec_dir / ROLLOUT_FILE
    text = rewrite_pin(path.read_text("utf-8"), target[0], target[1], note)
    # refuses what meshc did not write; holds the lock
    written = write_output(spec_dir, out, lambda: rollout_stream(context, state))
    _replace_text(path, text)
    return Promotion(wave=target[0], old=old, new=target[1], written=written, note=note)


def _replace_text(path: Path, text: str) -> None:
    """Make `path` hold `text` with one rename: rollout.yaml is never half written. A write cut short (a full disk,
    a Ctrl-C or a SIGTERM) leaves no staged copy beside it in the spec, where `git status` would show it."""
    staged = path.with_name(f".{path.name}.meshc-new")
    try:
        staged.write_text(text, "utf-8")
        os.replace(staged, path)
    except BaseException:
        with contextlib.suppress(OSError):  # what stopped the write is what the user must see
            staged.unlink(missing_ok=True)
        raise


def _nothing_to_promote(context: Context, revisions: tuple[WaveRevision, ...], wave: str | None) -> str:
    """Why there is nothing to promote: on hold with a newer revision, that the hold keeps it from every wave."""
    held = held_back(context, revisions)
    named = f"wave {wave!r} already runs the revision of the wave before it" if wave else None
    if held is None:
        return named or "every wave already runs the newest revision: nothing to promote"
    done = named or f"every wave already runs the held revision {revisions[0].revision[:12]}"
    return f"{done}, so nothing to promote; {held_back_note(revisions[0].wave, held)}"


def _with_pins(context: Context, wave: str, revision: str) -> Context:
    pins = dict(context.rollout.pins)
    pins[wave] = revision
    return replace(context, rollout=replace(context.rollout, pins=pins))


def _require_clean(context: Context, wave: str) -> None:
    """`wave` moves to the commit the working tree is on: what the working tree holds beyond it must not pass
    for that commit."""
    repo = context.location.repo
    relative = context.location.relative or "."
    if repo.is_dirty(index=True, working_tree=True, untracked_files=True, path=relative):
        raise PromoteError(
            f"{context.label} has uncommitted changes; wave {wave!r} moves to the current commit "
            f"({context.head[:12]}), so commit (and merge) the change first"
        )
