"""A drift report as text, Markdown (a status page or PR comment) or JSON (stable, `format` 1; see README "Drift").

The summaries every format shares (per target, pool and wave, the verdict) are in drift.summary.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import orjson

from compiler.drift.model import (
    CONVERGED,
    FAILING_STATES,
    INCOMPLETE,
    NOT_CHECKED,
    REPORT_FORMAT,
    DriftItem,
    DriftReport,
    scope_label,
)
from compiler.drift.summary import (
    SUMMARY_NAMES,
    ordered_counts,
    orphan_commands,
    pool_rows,
    summary_line,
    target_rows,
    verdict,
    wave_line,
    wave_rows,
)

FORMATS = ("text", "markdown", "json")
MARKDOWN_BUDGET = (
    60_000  # under GitHub's 65,536-character comment limit, with room for the note on what was cut
)
VALUE_WIDTH = 100


def format_text(report: DriftReport) -> str:
    """Plain text: the verdict, one line per scope, then every subject that is not converged, orphans' delete
    commands."""
    lines = [verdict(report), ""]
    lines += [
        f"  {scope_label(s.platform, s.scope):<{len(s.platform) + 25}} "
        + _scope_summary(s.state, s.counts, s.evidence, report.partial)
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
                f"  {scope_label(subject.platform, subject.scope)} {subject.subject}  [{subject.state}]"
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
    values = f": {_value(item.expected)} → {_value(item.live)}" if item.compared else ""
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
            f"| `{scope_label(s.platform, s.scope)}` | **{s.state}** | {converged} | {others} "
            f"| {_md(s.evidence or 'none given')} |"
        )
    pools = pool_rows(report)
    if pools:
        head += ["", "| pool | hosts converged | not converged |", "|---|---|---|"]
        head += [
            f"| `{row['target']}` | {row['converged']}/{row['subjects']} "
            f"| {_md(_held(row['counts'], row['not_converged']))} |"
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
            f"| {w['wave']} | **{w['state']}** | {_fraction(w['converged'], w['targets'])} | "
            f"{_fraction(w['counts'].get(CONVERGED, 0), w['hosts'])} | {_md(_held(w['counts'], w['not_converged']))} |"
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
            f"\n<details><summary><code>{scope_label(subject.platform, subject.scope)} {_md(subject.subject)}</code> "
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


def _fraction(converged: int, total: int) -> str:
    """`3/4`, or `–` where the wave holds none (a canary-host wave takes no whole targets)."""
    return f"{converged}/{total}" if total else "–"


def _held(counts: Mapping[str, int], names: Sequence[str]) -> str:
    """`1 pending, 1 failed: host-17, host-3` for a table cell."""
    parts = ", ".join(f"{n} {state}" for state, n in ordered_counts(counts) if state != CONVERGED)
    listed = ", ".join(names[:SUMMARY_NAMES]) + (
        f", … {len(names) - SUMMARY_NAMES} more" if len(names) > SUMMARY_NAMES else ""
    )
    return (parts + (": " if parts and listed else "") + listed) or "–"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("`", "'").replace("<", "&lt;")


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
