"""The drift status page (`meshc drift --format html`): waves as columns of targets and hosts.

Built from the DriftReport records only (what compiler.drift.report formats as text, Markdown and JSON):
each target per scope is a box coloured by its worst subject (converged / pending / drifted / failed /
unknown; acknowledged drift counts as converged), hosts not converged or in a wave of their own (canary
hosts) get their own box, orphans a column, and a target of the rollout no evidence covers is unknown.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from compiler.drift.model import (
    ACKNOWLEDGED,
    CONVERGED,
    DRIFTED,
    FAILED,
    NO_HOSTS,
    NOT_CHECKED,
    ORPHAN,
    PENDING,
    DriftItem,
    DriftReport,
    SubjectState,
    scope_label,
)
from compiler.drift.summary import HOST_PLATFORM, in_wave_order, orphan_commands, verdict, worst
from compiler.graph.columns import STATE_COLORS, Box, Column, render_columns
from compiler.graph.dot import element_id
from compiler.graph.page import Detail, render_page

DRIFT_STATES = ("converged", "pending", "drifted", "failed", "unknown")
DRIFT_LEGEND = tuple((STATE_COLORS[state][0], state) for state in DRIFT_STATES)
DRIFT_HELP = (
    "Columns are the waves in promotion order (or the scopes checked, without a rollout), boxes their targets and "
    "canary hosts, coloured by their worst finding; acknowledged drift counts as converged. Hover over a box for "
    "its findings; click to keep them."
)
# subject state -> box colour (compiler.graph.columns STATE_COLORS); any other (unknown, not-checked) is unknown
_COLOUR = {
    CONVERGED: "converged",
    ACKNOWLEDGED: "converged",
    PENDING: "pending",
    DRIFTED: "drifted",
    FAILED: "failed",
}
# Hosts of one pool drawn as their own boxes (those not converged, canary hosts); the rest are counted.
MAX_HOST_BOXES = 40
VALUE_WIDTH = 80
# Columns: objects of no target (shared, the hiera tree); what meshc no longer renders.
NO_WAVE, ORPHANS = "no wave", "orphans"


@dataclass(frozen=True, kw_only=True, slots=True)
class _Group:
    """One box of the drift page: a target's subjects in a scope, a host, an orphan, or a target with no evidence."""

    id: str
    label: str
    column: str
    subjects: tuple[SubjectState, ...]
    lines: tuple[str, ...] = ()


def render_drift_page(report: DriftReport) -> str:
    """The drift status page of `report`: one self-contained HTML document, the same bytes for the same report."""
    groups = _drift_groups(report)
    order = _column_order(report, groups)
    columns = [
        Column(
            title=name,
            subtitle=_column_subtitle([g for g in groups if g.column == name]),
            boxes=tuple(_drift_box(g) for g in groups if g.column == name),
        )
        for name in order
    ]
    details = {g.id: _drift_detail(report, g) for g in groups}
    notes = [
        f"{scope_label(s.platform, s.scope)}: not checked, no evidence given"
        + (" (--partial)" if report.partial else "")
        for s in report.scopes
        if s.state == NOT_CHECKED
    ]
    return render_page(
        title="meshc drift status",
        notes=notes,
        figure_svg=render_columns(columns, marker=verdict(report)),
        details=details,
        legend=DRIFT_LEGEND,
        help_text=DRIFT_HELP,
        summary=list(_drift_summary(report)),
    )


def _wave(report: DriftReport, subject: SubjectState) -> str | None:
    return subject.wave or report.waves.get(subject.target or "")


def _is_orphan(subject: SubjectState) -> bool:
    return any(item.kind == ORPHAN for item in subject.items)


def _is_host(subject: SubjectState) -> bool:
    return (
        subject.platform == HOST_PLATFORM and subject.target is not None and subject.subject != subject.target
    )


def _drift_groups(report: DriftReport) -> list[_Group]:
    """Every box: a target per scope (hosts counted in it), hosts worth their own box, orphans, unseen targets."""
    by_wave = bool(report.waves) or any(s.wave for s in report.subjects)
    found: dict[tuple[str, str, str], list[SubjectState]] = {}
    groups: list[_Group] = []
    for subject in report.subjects:
        if _is_orphan(subject):
            groups.append(
                _Group(
                    id=element_id(f"orphan/{subject.platform}/{subject.scope}/{subject.subject}"),
                    label=subject.subject,
                    column=ORPHANS,
                    subjects=(subject,),
                    lines=(f"{subject.platform}: {subject.scope}",),
                )
            )
        else:
            found.setdefault((subject.platform, subject.scope, subject.target or ""), []).append(subject)
    for (platform, scope, target), subjects in sorted(found.items()):
        column = _column_of(by_wave, platform, scope, report.waves.get(target))
        hosts = [
            h
            for h in subjects
            if _is_host(h)
            and (
                _colour(h.state) != "converged"
                or _column_of(by_wave, platform, scope, _wave(report, h)) != column
            )
        ]
        label = target or f"shared objects of {scope}"
        # in wave columns a box names its platform and scope; in scope columns the column does
        lines = ([f"{platform}: {scope}"] if by_wave else []) + [_converged_line(subjects)]
        lines += (
            [f"{len(hosts) - MAX_HOST_BOXES} more hosts not drawn (details)"]
            if len(hosts) > MAX_HOST_BOXES
            else []
        )
        groups.append(
            _Group(
                id=element_id(f"{platform}/{scope}/{label}"),
                label=label,
                column=column,
                subjects=tuple(subjects),
                lines=tuple(lines),
            )
        )
        groups += [
            _Group(
                id=element_id(f"host/{platform}/{scope}/{h.subject}"),
                label=h.subject,
                subjects=(h,),
                column=_column_of(by_wave, platform, scope, _wave(report, h)),
                lines=(f"host of {target}",),
            )
            for h in hosts[:MAX_HOST_BOXES]
        ]
    checked = {s.target for s in report.subjects if s.target}
    groups += [
        _Group(
            id=element_id(f"no-evidence/{target}"),
            label=target,
            column=wave,
            subjects=(),
            lines=("no evidence",),
        )
        for target, wave in sorted(report.waves.items())
        if target not in checked
    ]
    return groups


def _column_of(by_wave: bool, platform: str, scope: str, wave: str | None) -> str:
    """A box's column: its wave (NO_WAVE for objects of no target) when a rollout is in force, else its scope."""
    return (wave or NO_WAVE) if by_wave else scope_label(platform, scope)


def _column_order(report: DriftReport, groups: Sequence[_Group]) -> list[str]:
    """Waves in promotion order (a wave MANIFEST does not list, by name, after them), or scopes; then the rest."""
    present = {g.column for g in groups}
    waves = in_wave_order(report, present - {NO_WAVE, ORPHANS})
    scopes = [scope_label(s.platform, s.scope) for s in report.scopes]
    return [
        *(w for w in waves if w not in scopes),
        *(s for s in scopes if s in present),
        *(c for c in (NO_WAVE, ORPHANS) if c in present),
    ]


def _colour(state: str) -> str:
    return _COLOUR.get(state, "unknown")


def _group_state(group: _Group) -> str:
    """The colour of the worst subject (as the text report ranks them); a group without subjects has no evidence."""
    return _colour(worst(s.state for s in group.subjects)) if group.subjects else "unknown"


def _converged_line(subjects: Sequence[SubjectState]) -> str:
    counted = [s for s in subjects if not any(i.kind == NO_HOSTS for i in s.items)]
    if not counted:
        return "no host reports"
    converged = sum(_colour(s.state) == "converged" for s in counted)
    return f"{converged}/{len(counted)} {'hosts' if _is_host(counted[0]) else 'objects'} converged"


def _column_subtitle(groups: Sequence[_Group]) -> str:
    states = [_group_state(g) for g in groups]
    return f"{states.count('converged')}/{len(states)} converged" if states else ""


def _drift_box(group: _Group) -> Box:
    return Box(id=group.id, label=group.label, state=_group_state(group), lines=group.lines)


def _drift_detail(report: DriftReport, group: _Group) -> Detail:
    if not group.subjects:
        return Detail(
            title=group.label,
            text=f"wave: {report.waves.get(group.label)}\nno evidence: its cluster or the VMs' "
            "PuppetDB was not given, or nothing there belongs to it",
        )
    first = group.subjects[0]
    lines = [
        f"{first.platform}: {first.scope}",
        f"wave: {_wave(report, first) or 'none'}",
        f"state: {_group_state(group)}",
    ]
    for subject in group.subjects:
        if subject.state == CONVERGED:
            continue
        lines.append(f"{subject.subject}: {subject.state}")
        lines += [f"  {_finding(item)}" for item in subject.items]
        lines += [f"  delete by hand: {subject.delete_command}"] if subject.delete_command else []
    converged = sum(s.state == CONVERGED for s in group.subjects)
    lines += [f"{converged} more converged"] if converged and len(group.subjects) > 1 else []
    return Detail(title=group.label, text="\n".join(lines))


def _finding(item: DriftItem) -> str:
    values = f": {_short(item.expected)} → {_short(item.live)}" if item.compared else ""
    note = (
        f" (acknowledged: {item.acknowledged})"
        if item.acknowledged
        else (f" ({item.detail})" if item.detail else "")
    )
    return f"{item.kind}{' ' + item.path if item.path else ''}{values}{note}"


def _short(value: object) -> str:
    if value is None:
        return "(absent)"
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)
    return text if len(text) <= VALUE_WIDTH else text[: VALUE_WIDTH - 1] + "…"


def _drift_summary(report: DriftReport) -> Iterator[str]:
    for scope in report.scopes:
        counts = ", ".join(f"{n} {state}" for state, n in scope.counts.items())
        yield (
            f"{scope_label(scope.platform, scope.scope)}: {scope.state}"
            + (f" ({counts})" if counts else "")
            + (f", from {scope.evidence}" if scope.evidence else "")
        )
    commands = orphan_commands(report)
    if commands:
        yield (
            f"{len(commands)} orphan(s): owned by meshc, no longer rendered; "
            "their delete commands are in their details"
        )
