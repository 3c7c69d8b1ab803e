"""A drift report as text, Markdown (a status page or PR comment) or JSON (stable, `format` 1; see README "Drift")."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import orjson

from compiler.drift.model import (
    ACKNOWLEDGED,
    CONVERGED,
    DRIFTED,
    FAILED,
    FAILING_STATES,
    INCOMPLETE,
    NO_HOSTS,
    NOT_CHECKED,
    PENDING,
    REPORT_FORMAT,
    UNKNOWN,
    DriftItem,
    DriftReport,
    SubjectState,
)

FORMATS = ("text", "markdown", "json")
MARKDOWN_BUDGET = (
    60_000  # under GitHub's 65,536-character comment limit, with room for the note on what was cut
)
VALUE_WIDTH = 100
# Worse is higher: a definite difference (drifted, any other state) is worse than a failed run, worse than unknown.
_RANK = {CONVERGED: 0, ACKNOWLEDGED: 1, PENDING: 2, NOT_CHECKED: 3, UNKNOWN: 4, FAILED: 5}
_WORST = 6
# The order of a summary's counts, as HostState lists them; others after.
_SHOWN = (PENDING, DRIFTED, FAILED, UNKNOWN)
_PASSING = (CONVERGED, ACKNOWLEDGED)
HOST_PLATFORM = (
    "puppet"  # its subjects are hosts, counted one by one in summaries; other platforms count targets
)
SUMMARY_NAMES = 5  # hosts named on a summary line before "… n more"


def worst(states: Iterable[str]) -> str:
    """The worst of some subject states (converged when there are none)."""
    return max(states, key=lambda state: _RANK.get(state, _WORST), default=CONVERGED)


def _wave(report: DriftReport, subject: SubjectState) -> str | None:
    return subject.wave or report.waves.get(subject.target or "")


def _hosts(found: Sequence[SubjectState]) -> list[SubjectState]:
    """The subjects that are hosts or objects, not a pool's "no host reports" placeholder."""
    return [s for s in found if not any(i.kind == NO_HOSTS for i in s.items)]


def target_rows(report: DriftReport) -> list[dict[str, Any]]:
    """One row per target (and per scope's shared objects, target None): its state is its worst subject's.

    `counts` (state -> subjects) and `not_converged` (subject names) make the per-pool summary line.
    """
    rows: dict[tuple[str, str, str | None], list[SubjectState]] = {}
    for subject in report.subjects:
        rows.setdefault((subject.platform, subject.scope, subject.target), []).append(subject)
    result = []
    for (platform, scope, target), found in sorted(
        rows.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or "")
    ):
        counted = _hosts(found)
        waves = {_wave(report, s) for s in found}
        result.append(
            {
                "target": target,
                "platform": platform,
                "scope": scope,
                "wave": waves.pop() if len(waves) == 1 else None,
                "state": worst(s.state for s in found),
                "subjects": len(counted),
                "converged": sum(s.state == CONVERGED for s in counted),
                "counts": dict(sorted(Counter(s.state for s in counted).items())),
                "not_converged": [s.subject for s in counted if s.state not in _PASSING],
            }
        )
    return result


def wave_rows(report: DriftReport) -> list[dict[str, Any]]:
    """Per wave (MANIFEST rollout, a host's own wave), its targets and hosts and what holds it back; [] without waves.

    A canary host counts in its own wave, not its pool's. `not_converged` names targets (Kubernetes),
    hosts and pools no host reports for (Puppet).
    """
    waves: dict[str, list[SubjectState]] = {}
    for subject in report.subjects:
        wave = _wave(report, subject)
        if wave is not None:
            waves.setdefault(wave, []).append(subject)
    rows = []
    for wave, found in sorted(waves.items()):
        targets: dict[str, list[SubjectState]] = {}
        for subject in found:
            targets.setdefault(subject.target or "", []).append(subject)
        hosts = [s for s in _hosts(found) if s.platform == HOST_PLATFORM]
        held = sorted(
            {
                t
                for t, subjects in targets.items()
                if any(s.platform != HOST_PLATFORM and s.state not in _PASSING for s in subjects)
            }
        )
        held += [s.subject for s in found if s.platform == HOST_PLATFORM and s.state not in _PASSING]
        rows.append(
            {
                "wave": wave,
                "targets": len(targets),
                "converged": sum(all(s.state in _PASSING for s in subjects) for subjects in targets.values()),
                "hosts": len(hosts),
                "counts": dict(sorted(Counter(s.state for s in hosts).items())),
                "state": _rollup({s.state for s in found}),
                "not_converged": held,
            }
        )
    return rows


def _rollup(states: set[str]) -> str:
    """As a scope's state: drifted (anything failing), incomplete (pools with no data), pending, converged."""
    left = states - set(_PASSING)
    if left - {PENDING, NOT_CHECKED}:
        return DRIFTED
    return INCOMPLETE if NOT_CHECKED in left else PENDING if left else CONVERGED


def summary_line(row: Mapping[str, Any], limit: int = SUMMARY_NAMES) -> str:
    """`vm/upload/sjc: 118/120 converged, 1 pending, 1 failed: host-17` (a target row of pool_rows)."""
    if row["subjects"] == 0:
        return f"{row['target']}: no hosts report to PuppetDB"
    counts = row["counts"]
    parts = [f"{row['target']}: {counts.get(CONVERGED, 0)}/{row['subjects']} converged"]
    parts += [f"{n} {state}" for state, n in _ordered(counts) if state != CONVERGED]
    names = list(row["not_converged"][:limit])
    names += [f"… {len(row['not_converged']) - limit} more"] if len(row["not_converged"]) > limit else []
    return ", ".join(parts) + (f": {', '.join(names)}" if names else "")


def _ordered(counts: Mapping[str, int]) -> list[tuple[str, int]]:
    return sorted(
        counts.items(), key=lambda kv: (_SHOWN.index(kv[0]) if kv[0] in _SHOWN else len(_SHOWN), kv[0])
    )


def wave_line(row: Mapping[str, Any], limit: int = SUMMARY_NAMES) -> str:
    """`canary: 3/3 targets converged, 2/3 hosts converged, 1 pending: host-17`."""
    parts = [f"{row['wave']}: {row['converged']}/{row['targets']} targets converged"]
    if row["hosts"]:
        counts = row["counts"]
        parts.append(f"{counts.get(CONVERGED, 0)}/{row['hosts']} hosts converged")
        parts += [f"{n} {state}" for state, n in _ordered(counts) if state != CONVERGED]
    names = list(row["not_converged"][:limit])
    names += [f"… {len(row['not_converged']) - limit} more"] if len(row["not_converged"]) > limit else []
    return ", ".join(parts) + (f": {', '.join(names)}" if names else "")


def pool_rows(report: DriftReport) -> list[dict[str, Any]]:
    """The target rows of hosts (Puppet pools), for the per-pool summary lines."""
    return [row for row in target_rows(report) if row["platform"] == HOST_PLATFORM and row["target"]]


def verdict(report: DriftReport) -> str:
    """One line: converged or not, and how much was checked."""
    checked = [s for s in report.scopes if s.state != NOT_CHECKED]
    unchecked = len(report.scopes) - len(checked)
    pending = sum(s.state == PENDING for s in report.subjects)
    head = (
        "NOT CONVERGED"
        if report.failing
        else f"converging: {pending} pending within the lag"
        if pending
        else "converged"
    )
    tail = f", {unchecked} not checked" + (" (--partial)" if report.partial else "") if unchecked else ""
    return f"meshc drift: {head}: {len(checked)} of {len(report.scopes)} scope(s) checked{tail}"


# ---------------------------------------------------------------- text


def format_text(report: DriftReport) -> str:
    """Plain text: the verdict, a line per scope, every subject not converged, orphans' delete commands."""
    lines = [verdict(report), ""]
    lines += [
        f"  {s.platform}/{s.scope:<24} {_scope_summary(s.state, s.counts, s.evidence, report.partial)}"
        for s in report.scopes
    ]
    pools = pool_rows(report)
    if pools:
        lines += ["", "pools:"] + [f"  {summary_line(row)}" for row in pools]
    waves = wave_rows(report)
    if waves:
        lines += ["", "waves:"] + [f"  {wave_line(w)}" for w in waves]
    bad = [s for s in report.subjects if s.state != CONVERGED]
    if bad:
        lines += ["", "not converged:"]
        for subject in bad:
            lines.append(
                f"  {subject.platform}/{subject.scope} {subject.subject}  [{subject.state}]"
                + (f"  target {subject.target}" if subject.target else "")
            )
            details = {item.detail for item in subject.items if not item.acknowledged}
            # say a common note once
            shared = details.pop() if len(details) == 1 and len(subject.items) > 1 else None
            lines += [f"      {_item_line(item, shared)}" for item in subject.items]
            lines += [f"      ({shared})"] if shared else []
    lines += _orphan_lines(report, "  ")
    lines += [
        f"  {f.subject}: error: acknowledgement {f.expected!r} {f.detail}"
        for f in report.findings
        if not f.acknowledged
    ]
    lines += [
        f"  {a.location}: note: acknowledgement {a.match!r} matched nothing"
        for a in report.acknowledgements
        if not a.used and not a.expired
    ]
    return "\n".join(lines) + "\n"


def _scope_summary(state: str, counts: Mapping[str, int], evidence: str | None, partial: bool) -> str:
    if state == NOT_CHECKED:
        return "not checked: no evidence given" + (
            "" if partial else " (fails the run; --partial checks only what was given)"
        )
    total = sum(counts.values())
    parts = ", ".join(f"{n} {name}" for name, n in counts.items() if name != CONVERGED)
    return (
        f"{state}: {counts.get(CONVERGED, 0)}/{total} converged"
        + (f", {parts}" if parts else "")
        + f"  ({evidence})"
    )


def _item_line(item: DriftItem, shared: str | None = None) -> str:
    where = f" {item.path}" if item.path else ""
    values = f": {_value(item.expected)} → {_value(item.live)}" if item.path else ""
    detail = item.detail if item.detail and item.detail != shared else ""
    note = (
        f"  (acknowledged: {item.acknowledged})" if item.acknowledged else (f"  ({detail})" if detail else "")
    )
    return f"{item.kind:<9}{where}{values}{note}"


def _value(value: Any) -> str:
    if value is None:
        return "(absent)"
    text = (
        value
        if isinstance(value, str) and "\n" not in value
        else json.dumps(value, sort_keys=True, ensure_ascii=False)
    )
    return text if len(text) <= VALUE_WIDTH else text[: VALUE_WIDTH - 1] + "…"


def _orphan_lines(report: DriftReport, pad: str) -> list[str]:
    commands = orphan_commands(report)
    if not commands:
        return []
    return [
        "",
        "orphans: owned by meshc, no longer rendered; delete in this order (reverse apply order):",
    ] + [pad + c for c in commands]


def orphan_commands(report: DriftReport) -> list[str]:
    """`kubectl delete` commands for unacknowledged orphans, per scope in reverse apply order."""
    return [s.delete_command for s in report.subjects if s.delete_command and s.state != ACKNOWLEDGED]


# ---------------------------------------------------------------- Markdown


def format_markdown(report: DriftReport) -> str:
    """A status page or PR comment: summary table, then details per subject folded, cut under GitHub's limit."""
    head = [
        f"### {verdict(report)}",
        "",
        "| scope | state | converged | other | evidence |",
        "|---|---|---|---|---|",
    ]
    for s in report.scopes:
        others = ", ".join(f"{n} {name}" for name, n in s.counts.items() if name != CONVERGED)
        converged = (
            f"{s.counts.get(CONVERGED, 0)}/{sum(s.counts.values())}" if s.state != NOT_CHECKED else "–"
        )
        head.append(
            f"| `{s.platform}/{s.scope}` | **{s.state}** | {converged} | {others} | {_md(s.evidence or 'none given')} |"
        )
    pools = pool_rows(report)
    if pools:
        head += ["", "| pool | hosts converged | not converged |", "|---|---|---|"]
        head += [
            f"| `{row['target']}` | {row['converged']}/{row['subjects']} | "
            f"{_md(_held(row['counts'], row['not_converged']))} |"
            for row in pools
        ]
    waves = wave_rows(report)
    if waves:
        head += [
            "",
            "| wave | state | targets converged | hosts converged | not converged |",
            "|---|---|---|---|---|",
        ]
        head += [
            f"| {w['wave']} | **{w['state']}** | {w['converged']}/{w['targets']} | "
            f"{w['counts'].get(CONVERGED, 0)}/{w['hosts']} | {_md(_held(w['counts'], w['not_converged']))} |"
            for w in waves
        ]
    blocks = list(_markdown_blocks(report))
    body, used, cut = [], sum(len(line) + 1 for line in head), 0
    for block in blocks:
        if used + len(block) > MARKDOWN_BUDGET:
            cut += 1
            continue
        body.append(block)
        used += len(block)
    note = (
        [f"\n_{cut} subject(s) left out to fit a comment; run `meshc drift --format json` for all._"]
        if cut
        else []
    )
    return "\n".join(head) + "\n" + "".join(body) + "\n".join(note) + "\n"


def _markdown_blocks(report: DriftReport) -> Iterator[str]:
    for subject in (s for s in report.subjects if s.state != CONVERGED):
        lines = [
            (
                f"- `{_md(i.path)}` {i.kind}: `{_md(_value(i.expected))}` → `{_md(_value(i.live))}`"
                if i.path
                else f"- **{i.kind}**"
            )
            + (
                f" — acknowledged: {_md(i.acknowledged)}"
                if i.acknowledged
                else (f" — {_md(i.detail)}" if i.detail else "")
            )
            for i in subject.items
        ]
        target = f" (target `{subject.target}`)" if subject.target else ""
        yield (
            f"\n<details><summary><code>{subject.platform}/{subject.scope} {_md(subject.subject)}</code> "
            f"{subject.state}{target}"
            f"</summary>\n\n" + "\n".join(lines) + "\n</details>\n"
        )
    commands = orphan_commands(report)
    if commands:
        yield (
            "\n**Orphans** (kube-applier never deletes them), in reverse apply order:\n\n```sh\n"
            + "\n".join(commands)
            + "\n```\n"
        )
    for finding in report.findings:
        yield (
            f"\n**Expired acknowledgement** at `{finding.subject}`: "
            f"`{_md(str(finding.expected))}` {_md(finding.detail)}\n"
        )


def _held(counts: Mapping[str, int], names: Sequence[str]) -> str:
    """`1 pending, 1 failed: host-17, host-3` for a table cell."""
    parts = ", ".join(f"{n} {state}" for state, n in _ordered(counts) if state != CONVERGED)
    listed = ", ".join(names[:SUMMARY_NAMES]) + (
        f", … {len(names) - SUMMARY_NAMES} more" if len(names) > SUMMARY_NAMES else ""
    )
    return (parts + (": " if parts and listed else "") + listed) or "–"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("`", "'").replace("<", "&lt;")


# ---------------------------------------------------------------- JSON


def report_data(report: DriftReport) -> dict[str, Any]:
    """The JSON document: every scope, target and non-converged subject with its items (README "Drift", JSON format)."""
    targets = target_rows(report)
    return {
        "format": REPORT_FORMAT,
        "failing": report.failing,
        "partial": report.partial,
        "today": report.today,
        "scopes": [
            {
                "platform": s.platform,
                "scope": s.scope,
                "state": s.state,
                "evidence": s.evidence,
                "counts": dict(s.counts),
                "failing": _scope_failing(s.state, report.partial),
            }
            for s in report.scopes
        ],
        "waves": wave_rows(report),
        "targets": targets,
        "subjects": [
            {
                "platform": s.platform,
                "scope": s.scope,
                "subject": s.subject,
                "target": s.target,
                "state": s.state,
                "delete_command": s.delete_command,
                "items": [_item(i) for i in s.items],
            }
            for s in report.subjects
            if s.state != CONVERGED
        ],
        "findings": [_item(f) for f in report.findings],
        "orphan_commands": orphan_commands(report),
        "acknowledgements": [
            {
                "match": a.match,
                "reason": a.reason,
                "expires": a.expires,
                "location": a.location,
                "expired": a.expired,
                "used": a.used,
            }
            for a in report.acknowledgements
        ],
    }


def _scope_failing(state: str, partial: bool) -> bool:
    """Whether this scope makes the run exit 1: drift, or no data (unchecked, pools without hosts) unless --partial."""
    return state in FAILING_STATES | {INCOMPLETE} and not (partial and state in (NOT_CHECKED, INCOMPLETE))


def _item(item: DriftItem) -> dict[str, Any]:
    return {
        "id": item.id,
        "kind": item.kind,
        "platform": item.platform,
        "scope": item.scope,
        "subject": item.subject,
        "target": item.target,
        "path": item.path,
        "expected": item.expected,
        "live": item.live,
        "detail": item.detail,
        "acknowledged": item.acknowledged,
    }


def format_json(report: DriftReport) -> str:
    """report_data as indented JSON with sorted keys, so the same report is the same bytes."""
    return (
        orjson.dumps(report_data(report), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n"
    )


FORMATTERS = {"text": format_text, "markdown": format_markdown, "json": format_json}
