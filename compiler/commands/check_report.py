"""What `meshc check` shows a person when the output is not what the spec renders."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from compiler.diagnostics import escape
from compiler.diff.records import DocumentDiff
from compiler.output.compare import TreeStatus


def format_status(status: TreeStatus, out: Path, edits: Mapping[str, DocumentDiff]) -> str:
    """`meshc check`'s report of an output that is not what the spec renders: each file, and what a rebuild
    would change in it."""
    groups = (
        ("stale", status.stale),
        ("missing", status.missing),
        ("extra", status.extra),
        ("hand-edited", status.hand_edited),
    )
    counts = ", ".join(f"{len(paths)} {label}" for label, paths in groups if paths)
    lines = [
        f"{escape(str(out))}: not what the spec renders ({counts}); run `meshc build` and commit the result"
    ]
    for label, paths in groups:
        for path in paths:
            lines.append(f"  {label:<12} {escape(f'{out.as_posix()}/{path}')}")
            lines += [f"      {line}" for line in edit_lines(edits.get(path))]
    return "\n".join(lines)


def edit_lines(edit: DocumentDiff | None) -> list[str]:
    """What a rebuild would change in a stale or hand-edited file (on disk → rendered, as diff shows base → head)."""
    if edit is None:
        return []
    from compiler.commands.diff_report import change_lines  # loaded only when something differs

    if not edit.changes and not edit.text:
        return ["(same data; only formatting or comments differ)"]
    return change_lines(edit.changes, limit=5) if edit.changes else list(edit.text[:12])
