"""The rollout status page (`meshc plan --format html`): waves as columns of targets and canary hosts.

Nothing is computed here that the plan did not compute: the page lays out `Plan.targets` by wave, colours
each box by whether its wave runs the newest revision, outlines what the next promotion changes and
says what it costs, so a team can publish it from CI as its rollout status page (compiler.drift.html is
its drift counterpart).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from compiler.graph.columns import MARK_COLOR, STATE_COLORS, Box, Column, render_columns
from compiler.graph.dot import element_id
from compiler.graph.page import Detail, render_page
from compiler.rollout.changes import TargetChange
from compiler.rollout.plan import AuthzStep, Plan, TargetStatus, WaveStatus, held_back_name
from compiler.rollout.report import cost, hold_line, revision_name, state_line

PLAN_LEGEND = (
    (STATE_COLORS["at-revision"][0], "at its revision: the wave runs the newest revision"),
    (
        STATE_COLORS["waiting"][0],
        "waiting: the wave runs an older revision, until it is promoted (on hold, the first wave: until the hold "
        "is lifted)",
    ),
    (MARK_COLOR, "dashed outline: changes at the next promotion (its cost in the box)"),
)
PLAN_HELP = (
    "Columns are the waves in promotion order, boxes their targets and canary hosts (host/…). The outlined "
    "column is the wave the next promotion moves. Hover over a box for its details; click to keep them."
)


def render_plan_page(plan: Plan) -> str:
    """The rollout status page of `plan`: one self-contained HTML document, the same bytes for the same plan."""
    changes = {c.target: c for c in plan.changes}
    columns = [_wave_column(plan, wave, changes) for wave in plan.waves]
    details = {element_id(t.target): _target_detail(plan, t, changes.get(t.target)) for t in _statuses(plan)}
    title = "meshc rollout status" + (" (HOLD: no new merge reaches any wave)" if plan.hold else "")
    held = hold_line(plan)
    notes = [held] if held is not None else []
    if plan.next_states and plan.next_states.problems:
        notes.append(f"{len(plan.next_states.problems)} unsafe state(s) while the next wave converges")
    return render_page(
        title=title,
        notes=notes,
        figure_svg=render_columns(columns, marker=_marker(plan)),
        details=details,
        legend=PLAN_LEGEND,
        help_text=PLAN_HELP,
        summary=list(_summary(plan)),
    )


def _statuses(plan: Plan) -> list[TargetStatus]:
    """Every target of the plan, and those only the next promotion brings (added by it, absent now)."""
    known = {t.target for t in plan.targets}
    revisions = {w.name: w.revision for w in plan.waves}
    extra = [
        TargetStatus(
            target=c.target,
            wave=c.wave,
            revision=revisions[c.wave],
            present=False,
            restart_sensitive=c.restart_sensitive,
        )
        for c in plan.changes
        if c.target not in known
    ]
    return [*plan.targets, *extra]


def _marker(plan: Plan) -> str:
    if plan.promotion is None and plan.held_back is not None:
        held = revision_name(plan.waves[0].revision)
        return f"on hold: {held_back_name(plan.held_back)} runs in no wave, every wave {held}: nothing to promote"
    if plan.promotion is None:
        return "every wave runs the newest revision: nothing to promote"
    wave, revision = plan.promotion
    return f"next promotion: {wave} → {revision_name(revision)}, {len(plan.changes)} target(s) change"


def _wave_column(plan: Plan, wave: WaveStatus, changes: Mapping[str, TargetChange]) -> Column:
    boxes = tuple(_box(t, wave, changes.get(t.target)) for t in _statuses(plan) if t.wave == wave.name)
    behind = "" if wave.current else " (behind)"
    subtitle = f"{revision_name(wave.revision)}{behind} · {wave.targets} target(s), {wave.hosts} host(s)"
    return Column(
        title=wave.name,
        subtitle=subtitle,
        boxes=boxes,
        highlight=plan.promotion is not None and plan.promotion[0] == wave.name,
    )


def _box(target: TargetStatus, wave: WaveStatus, change: TargetChange | None) -> Box:
    lines = [f"canary host of {target.pool}"] if target.pool else []
    lines += [] if target.present else ["absent at this revision"]
    lines += ["restart-sensitive"] if target.restart_sensitive else []
    lines += [f"next: {change.status}, {cost(change)}"] if change else []
    return Box(
        id=element_id(target.target),
        label=target.target,
        state="at-revision" if wave.current else "waiting",
        lines=tuple(lines),
        marked=change is not None,
    )


def _target_detail(plan: Plan, target: TargetStatus, change: TargetChange | None) -> Detail:
    current = next(w.current for w in plan.waves if w.name == target.wave)
    lines = [
        f"wave: {target.wave}",
        f"revision: {revision_name(target.revision)} ({'the newest' if current else 'behind the newest'})",
    ]
    lines += [f"canary host of the pool {target.pool}"] if target.pool else []
    lines += [] if target.present else ["not present at its wave's revision"]
    lines += [f"restart-sensitive: {'yes' if target.restart_sensitive else 'no'}"]
    if change is None:
        lines.append(_no_change(plan))
    else:
        lines.append(f"next promotion: {change.status} ({change.reason}), costs {cost(change)}")
    return Detail(title=target.target, text="\n".join(lines))


def _no_change(plan: Plan) -> str:
    if plan.promotion is not None:
        return "next promotion: unchanged"
    return (
        "next promotion: none (on hold)"
        if plan.held_back is not None
        else "next promotion: none (nothing to promote)"
    )


def _summary(plan: Plan) -> Iterator[str]:
    yield "Expand (in force now): " + _steps(plan.expanded, "admits")
    if plan.promotion is not None:
        yield f"Contract (with the promotion of {plan.promotion[0]}): " + _steps(
            plan.contracted, "stops admitting"
        )
        # the files no box stands for (a NetworkPolicy narrowed, a Namespace no live revision needs), as plan lists them
        files = "; ".join(f"{path} ({status})" for path, status in plan.files) or "none"
        yield f"Other files the promotion of {plan.promotion[0]} rewrites: {files}"
    yield "Checked: " + state_line("current state", plan.current_states)
    if plan.next_states is not None and plan.promotion is not None:
        yield "Checked: " + state_line(f"every state while {plan.promotion[0]} converges", plan.next_states)


def _steps(steps: tuple[AuthzStep, ...], verb: str) -> str:
    return "; ".join(f"{s.service} {verb} {', '.join(s.identities)}" for s in steps) or "nothing"
