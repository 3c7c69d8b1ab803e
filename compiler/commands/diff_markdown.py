"""The diff report as a pull-request comment: summary table first, details folded, within GitHub's size limit."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from functools import cache
from typing import Any

import jinja2

from compiler.commands.diff_report import (
    HAZARDS_HEADING,
    MAX_CHANGES_PER_DOCUMENT,
    MAX_DIAGNOSTICS,
    REFUSED_HEADING,
    ahead_heading,
    ahead_line,
    change_lines,
    credential_line,
    delete_line,
    hazard_rows,
    now_lines,
    refused_lines,
    restart_headline,
    restart_label,
    rollout_lines,
    summary,
    target_cost,
)
from compiler.diff.records import CHANGED, MeshDiff
from compiler.graph.calls import MAX_DRAWN, calls_mermaid

GITHUB_COMMENT_LIMIT = 65_536
MARKDOWN_BUDGET = 60_000  # well under GitHub's limit, leaving room for the note on what was cut


@cache
def _template() -> jinja2.Template:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("compiler", "templates/report"),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # Markdown, not HTML: values sit in code spans and fenced blocks, made fence-safe below
    )
    env.filters.update(
        fence=_fence_safe,
        restart=restart_label,
        change_lines=change_lines,
        cap=_cap_text,
        cost=target_cost,
        credential=credential_line,
        delete=delete_line,
        ahead=ahead_line,
        refused=refused_lines,
    )
    env.globals.update(
        restart_headline=restart_headline,
        ahead_heading=ahead_heading,
        CHANGED=CHANGED,
        HAZARDS_HEADING=HAZARDS_HEADING,
        hazard_rows=hazard_rows,
        REFUSED_HEADING=REFUSED_HEADING,
    )
    return env.get_template("diff.md.j2")


def _fence_safe(text: str) -> str:
    return text.replace("```", "`\u200b``")


def _cap_text(lines: Iterable[str]) -> list[str]:
    items = list(lines)
    if len(items) <= MAX_CHANGES_PER_DOCUMENT:
        return items
    return [*items[:MAX_CHANGES_PER_DOCUMENT], f"… {len(items) - MAX_CHANGES_PER_DOCUMENT} more line(s)"]


def format_markdown(diff: MeshDiff, budget: int = MARKDOWN_BUDGET) -> str:
    """A pull-request comment: summary table first, details folded, cut to `budget` characters with a note."""
    macros: Any = _template().module  # the macros of diff.md.j2, which Jinja types as plain attributes
    capped = dataclasses.replace(diff, base_diagnostics=diff.base_diagnostics[:MAX_DIAGNOSTICS])
    parts = [str(macros.header(capped, summary(diff), calls_block(diff)))]
    parts += [f"**{line}**\n\n" for line in rollout_lines(diff)]
    if diff.now is not None:
        parts.append("\n".join(now_lines(diff, markdown=True)) + "\n\n")
    sections = (
        ("spec file", macros.spec_heading(diff), [macros.spec_file(f) for f in diff.spec]),
        ("target", macros.targets_heading(diff), [macros.target(t) for t in diff.targets]),
        ("shared file", macros.shared_heading(diff), [macros.shared_file(f) for f in diff.shared]),
    )
    size, cut = sum(map(len, parts)), dict[str, int]()  # the header and the rollout's lines count too
    for kind, heading, blocks in sections:
        for index, block in enumerate(blocks):
            text = (str(heading) if index == 0 else "") + str(block)
            if cut or size + len(text) > budget:
                cut[kind] = cut.get(kind, 0) + 1
                continue
            parts.append(text)
            size += len(text)
    if cut:
        parts.append(_cut_note(cut, diff))
    return "".join(parts)


def calls_block(diff: MeshDiff) -> str:
    """The Mermaid picture of the call-graph changes as a fenced block, or "" when the call graph does not change."""
    if not diff.calls:
        return ""
    block = f"```mermaid\n{calls_mermaid(diff.calls, diff.sensitive_services)}```\n\n"
    if len(diff.calls) > MAX_DRAWN:
        block += (
            f"_The diagram draws {MAX_DRAWN} of {len(diff.calls)} call-graph changes; "
            "`meshc diff --format json` lists them all under `calls`._\n\n"
        )
    return block


def _cut_note(cut: dict[str, int], diff: MeshDiff) -> str:
    what = ", ".join(f"{count} {kind}{'s' if count != 1 else ''}" for kind, count in cut.items())
    return (
        f"\n> [!NOTE]\n> Details of {what} were cut to keep this comment under GitHub's "
        f"{GITHUB_COMMENT_LIMIT:,}-character limit; the table above counts everything. "
        f"Run `meshc diff --base {diff.base}` locally, or `--format json`, for the full report.\n"
    )
