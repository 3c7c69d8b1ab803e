"""The diff report for a terminal: a headline, then spec files, targets and shared files, coloured on a TTY."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from compiler.commands.diff_report import (
    HAZARDS_HEADING,
    MAX_DIAGNOSTICS,
    REFUSED_HEADING,
    ahead_heading,
    ahead_line,
    change_lines,
    credential_line,
    delete_line,
    deletions_heading,
    hazard_line,
    now_lines,
    refused_lines,
    restart_headline,
    restart_label,
    rollout_lines,
    summary,
    target_cost,
)
from compiler.diff.records import ADDED, CHANGED, REMOVED, Change, DocumentDiff, MeshDiff, TargetDiff

_ANSI = {
    "bold": "\033[1m",
    "red": "\033[31m",
    "green": "\033[32m",
    "yellow": "\033[33m",
    "cyan": "\033[36m",
    "reset": "\033[0m",
}
_STATUS_COLOR = {ADDED: "green", REMOVED: "red", CHANGED: "yellow"}


def format_text(diff: MeshDiff, color: bool = False) -> str:
    """A terminal report; ANSI colours only when `color` (the caller knows whether it writes to a TTY)."""
    paint = _painter(color)
    return "\n".join(_text_lines(diff, paint)) + "\n"


Paint = Callable[..., str]


def _painter(color: bool) -> Paint:
    def paint(text: str, *styles: str) -> str:
        if not color or not styles:
            return text
        return "".join(_ANSI[s] for s in styles) + text + _ANSI["reset"]

    return paint


def _text_lines(diff: MeshDiff, paint: Paint) -> Iterator[str]:
    counts = summary(diff)
    yield paint(f"meshc diff {diff.base} → {diff.head}", "bold")
    for note in diff.notes:
        yield paint(f"note: {note}", "yellow")
    yield from (f"  {d.format()}" for d in diff.base_diagnostics[:MAX_DIAGNOSTICS])
    if not diff.renders_differently and diff.now is not None and diff.now.unknown:
        yield "The spec renders the same output at both revisions; what the rollout changes at once is unknown (below)."
    elif not diff.renders_differently and diff.changed:
        yield "The spec renders the same output at both revisions; the rollout changes what runs (below)."
    elif not diff.renders_differently:
        yield "No target changes." + (" The spec changed, but renders the same output." if diff.spec else "")
    else:
        yield paint(
            f"{counts['targets']} target(s) change: {counts['added']} new, {counts['removed']} removed; "
            f"{restart_headline(diff, counts)}; {counts['hot_reload']} hot-reload, {counts['no_restart']} "
            "without restart",
            "bold",
        )
        if counts["restart_sensitive"]:
            yield paint(
                f"warning: restart-sensitive service(s) restart: {', '.join(diff.sensitive_services)} "
                "(targets marked below)",
                "red",
                "bold",
            )
        if counts["credentials"]:
            yield paint(
                f"{counts['credentials']} target(s) watch a cluster they did not watch before and need its "
                "discovery credentials first (below)",
                "yellow",
            )
        for g in diff.groups:
            yield (
                f"  {g.platform:<10} {g.datacenter:<10} {len(g.targets):>5} target(s): {g.added} new, "
                f"{g.removed} removed, "
                f"{g.pod_roll} pod-roll, {g.envoy_restart} envoy-restart, {g.sidecar_restart} sidecar-restart, "
                f"{g.hot_reload} hot-reload, {g.no_restart} no restart"
            )
    if diff.hazards:
        yield ""
        yield paint(f"warning: {HAZARDS_HEADING}:", "yellow", "bold")
        yield from (f"  {hazard_line(h)}" for h in diff.hazards)
    if diff.now is not None and diff.now.refused_ahead:
        yield ""
        yield paint(f"warning: {REFUSED_HEADING}:", "yellow", "bold")
        yield from (f"  {line}" for line in refused_lines(diff.now))
    if diff.deletions:
        yield ""
        yield paint(f"{deletions_heading(diff)}:", "bold")
        yield from (f"  {delete_line(d)}" for d in diff.deletions)
    if diff.now is not None and diff.now.deletions_ahead:
        yield ""
        yield paint(f"{ahead_heading(diff.now)}:", "bold")
        yield from (f"  {ahead_line(d)}" for d in diff.now.deletions_ahead)
    yield from rollout_lines(diff)
    if diff.now is not None:
        yield ""
        yield from now_lines(diff, markdown=False)
    if diff.reformatted:
        yield "Only comments or formatting changed in: " + ", ".join(diff.reformatted)
    if diff.spec:
        yield ""
        yield paint(f"Spec changes ({len(diff.spec)} file(s))", "bold")
    for spec_file in diff.spec:
        about = f" (service {spec_file.service})" if spec_file.service else ""
        yield f"  {spec_file.file}{about}: " + paint(spec_file.status, _STATUS_COLOR[spec_file.status])
        yield from _change_text(spec_file.changes, "    ", paint)
    if diff.targets:
        yield ""
        yield paint("Targets", "bold")
    for target in diff.targets:
        yield from _target_text(target, paint)
    if diff.shared:
        yield ""
        yield paint("Shared files", "bold")
    for shared in diff.shared:
        yield from _document_text(shared, "  ", paint, sidecar=False)


def _target_text(target: TargetDiff, paint: Paint) -> Iterator[str]:
    restart_style = ("red", "bold") if target.needs_restart else ("green",)
    if target.status == CHANGED:
        status = paint(target.status, _STATUS_COLOR[target.status])
        cost = f"{status}, {paint(restart_label(target.restart), *restart_style)}"
    else:
        cost = paint(target_cost(target), _STATUS_COLOR[target.status])
    sensitive = paint(" (restart-sensitive)", "red", "bold") if target.sensitive_restart else ""
    yield f"  {paint(target.target, 'cyan')}: {cost}{sensitive}"
    for credentials in target.credentials:
        yield "    " + paint(credential_line(target, credentials), "yellow")
    for doc in target.documents:
        yield from _document_text(doc, "    ", paint, sidecar=True)
    for file in target.files:
        yield from _document_text(file, "    ", paint, sidecar=False)


def _document_text(doc: DocumentDiff, indent: str, paint: Paint, sidecar: bool) -> Iterator[str]:
    priced = sidecar and (
        doc.status == CHANGED or doc.restart
    )  # a new or removed target's documents cost nothing apart
    what = (
        f"document {doc.name} ({restart_label(doc.restart)})"
        if priced
        else f"{'document' if sidecar else 'file'} {doc.name}"
    )
    yield f"{indent}{what}: " + paint(doc.status, _STATUS_COLOR[doc.status])
    yield from _change_text(doc.changes, indent + "  ", paint)
    if doc.mirrored:
        yield f"{indent}  ({doc.mirrored} more change(s) repeat the sidecar documents above)"
    for line in doc.text:
        yield indent + "  " + paint(line, *_line_style(line))


def _line_style(line: str) -> tuple[str, ...]:
    if line.startswith(("+++", "---")):
        return ("bold",)
    return {"+": ("green",), "-": ("red",), "@": ("cyan",)}.get(line[:1], ())


def _change_text(changes: Iterable[Change], indent: str, paint: Paint) -> Iterator[str]:
    for line in change_lines(changes):
        yield indent + paint(line, *{"+": ("green",), "-": ("red",), "~": ("yellow",)}.get(line[:1], ()))
