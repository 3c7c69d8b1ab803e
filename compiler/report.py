"""Format a MeshDiff for people and machines: terminal text, a pull-request comment in Markdown, JSON."""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Callable, Iterable, Iterator
from functools import cache
from typing import Any

import jinja2

from compiler.backends.kubernetes import reader_secret_name
from compiler.diagnostics import Diagnostic
from compiler.diff import (
    ADDED,
    CHANGED,
    REMOVED,
    Change,
    DocumentDiff,
    KubeDelete,
    MeshDiff,
    TargetDiff,
    restart_key,
)
from compiler.render.restart import Credentials, RestartClass
from compiler.spec.model import DISCOVERY_NAMESPACE

FORMATS = ("text", "markdown", "json")
GITHUB_COMMENT_LIMIT = 65_536
MARKDOWN_BUDGET = 60_000  # well under GitHub's limit, leaving room for the note on what was cut
MAX_CHANGES_PER_DOCUMENT = 60  # in Markdown and text; JSON always has every change
MAX_VALUE_CHARS = 160
MAX_DIAGNOSTICS = 50

_SIGN = {ADDED: "+", REMOVED: "-", CHANGED: "~"}
_RESTART_LABEL = {
    RestartClass.NONE: "no restart",
    RestartClass.HOT_RELOAD: "hot-reload",
    RestartClass.SIDECAR_RESTART: "sidecar-restart",
    RestartClass.ENVOY_RESTART: "envoy-restart",
    RestartClass.POD_ROLL: "pod-roll",
}
# What a target that starts or stops reads as, instead of a restart.
_NEW_OR_REMOVED = {ADDED: "new", REMOVED: "removed"}
_ANSI = {
    "bold": "\033[1m",
    "red": "\033[31m",
    "green": "\033[32m",
    "yellow": "\033[33m",
    "cyan": "\033[36m",
    "reset": "\033[0m",
}
_STATUS_COLOR = {ADDED: "green", REMOVED: "red", CHANGED: "yellow"}


def summary(diff: MeshDiff) -> dict[str, int]:
    """Headline counts: targets that change, are new or removed; how many need a restart, how many of
    those are restart-sensitive; changed targets per restart class; credentials and objects to delete."""
    counts = {
        "targets": len(diff.targets),
        "restarts": diff.restarts,
        "restart_sensitive": sum(t.sensitive_restart for t in diff.targets),
        "added": sum(t.status == ADDED for t in diff.targets),
        "removed": sum(t.status == REMOVED for t in diff.targets),
    }
    for cls in RestartClass:
        counts[restart_key(cls)] = sum(t.status == CHANGED and t.restart == cls for t in diff.targets)
    counts["credentials"] = sum(bool(t.credentials) for t in diff.targets)
    counts["deletions"] = len(diff.deletions)
    counts["shared_files"] = len(diff.shared)
    counts["spec_files"] = len(diff.spec)
    return counts


def restart_label(cls: RestartClass) -> str:
    """How a restart class reads in a report."""
    return _RESTART_LABEL[cls]


def target_cost(target: TargetDiff) -> str:
    """`new`, `removed`, or the restart class of a changed target."""
    return _NEW_OR_REMOVED.get(target.status) or restart_label(target.restart)


def restart_headline(diff: MeshDiff, counts: dict[str, int]) -> str:
    """`3 need a restart (…), 2 of them restart-sensitive: key-manager`: the cost of the change in one clause."""
    text = (
        f"{counts['restarts']} need{'s' if counts['restarts'] == 1 else ''} a restart ({counts['pod_roll']} pod roll, "
        f"{counts['envoy_restart']} Envoy restart, {counts['sidecar_restart']} sidecar restart)"
    )
    if counts["restart_sensitive"]:
        text += (
            f", {counts['restart_sensitive']} of them restart-sensitive: {', '.join(diff.sensitive_services)}"
        )
    return text


def credential_line(target: TargetDiff, credentials: Credentials) -> str:
    """What the platform must deliver before `target` can read a cluster it did not watch, and what that costs."""
    cluster, where = credentials.cluster, credentials.directory
    source = f"the token of {DISCOVERY_NAMESPACE}/{reader_secret_name(target.service)} in {cluster}"
    if target.platform != "kubernetes":
        return (
            f"needs discovery credentials for {cluster}: add mesh::discovery_credentials['{cluster}'] ({source}); "
            f"Puppet writes them to {where}, Synapse reads them without a restart"
        )
    rolls = (
        "rolls its pods: the Deployment must mount"
        if target.status == CHANGED
        else "its Deployment must mount"
    )
    if cluster == target.cluster:
        return f"{rolls} a projected ServiceAccount token with kube-root-ca.crt at {where} (its own cluster, {cluster})"
    return f"{rolls} Secret mesh-discovery-{cluster} (the site's copy of {source}) at {where}"


def delete_line(deletion: KubeDelete) -> str:
    """A kubectl delete command; a Namespace's commented out, since it would take everything still in it."""
    if deletion.cascades:
        return (
            f"# {deletion.command}   # only once nothing else lives in namespace {deletion.name}: "
            "deleting it deletes everything in it, objects meshc did not write included"
        )
    return deletion.command


def change_line(change: Change) -> str:
    """`~ path: old → new`, `+ path: new` or `- path: old`."""
    if change.kind == CHANGED:
        return f"~ {change.path}: {short_value(change.old)} → {short_value(change.new)}"
    value = change.new if change.kind == ADDED else change.old
    return f"{_SIGN[change.kind]} {change.path}: {short_value(value)}"


def short_value(value: Any) -> str:
    """A value on one line: plain strings as they are, the rest as compact JSON, cut at MAX_VALUE_CHARS."""
    if isinstance(value, str) and value and value.isprintable() and value.strip() == value:
        text = value
    else:
        text = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(", ", ": "))
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"


def change_lines(changes: Iterable[Change], limit: int = MAX_CHANGES_PER_DOCUMENT) -> list[str]:
    """The lines of a change list, with a last line saying how many were cut."""
    items = list(changes)
    lines = [change_line(c) for c in items[:limit]]
    if len(items) > limit:
        lines.append(f"… {len(items) - limit} more change(s); `meshc diff --format json` has them all")
    return lines


# ---------------------------------------------------------------- JSON


def to_json(diff: MeshDiff) -> dict[str, Any]:
    """The diff as JSON-ready data: every record's fields, restart classes by label, plus a summary."""
    data: dict[str, Any] = _plain(diff)
    data["summary"] = summary(diff)
    data["changed"] = diff.changed
    data["sensitive_services"] = list(diff.sensitive_services)
    for target, record in zip(diff.targets, data["targets"], strict=True):
        record["sensitive_restart"] = target.sensitive_restart
        record["credentials"] = [
            {**c, "action": credential_line(target, credentials)}
            for c, credentials in zip(record["credentials"], target.credentials, strict=True)
        ]
    for deletion, record in zip(diff.deletions, data["deletions"], strict=True):
        record["command"] = deletion.command
    return data


def format_json(diff: MeshDiff) -> str:
    """The diff as indented JSON text."""
    return json.dumps(to_json(diff), indent=2, ensure_ascii=False, default=str) + "\n"


def _plain(value: Any) -> Any:
    if isinstance(value, RestartClass):
        return value.label
    if isinstance(value, enum.Enum):
        return value.name.lower()
    if isinstance(value, Diagnostic):
        return {
            "file": value.span.file,
            "line": value.span.line,
            "col": value.span.col,
            "severity": value.severity,
            "code": value.code,
            "message": value.message,
            "text": value.format(),
        }
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def rollout_lines(diff: MeshDiff) -> list[str]:
    """What changes now and what is still ahead, by wave (empty without a wave policy)."""
    if not diff.waves:
        return []
    counts = [f"{split.wave} ({len(split.targets)})" for split in diff.waves if split.targets]
    if diff.rollout == "none":
        return [f"Waves: {', '.join(counts)}; no rollout.yaml, so every wave gets this at once"]
    if diff.rollout == "hold":
        return [
            "Rollout on hold: no wave gets this until hold is lifted; "
            f"then, one promotion at a time: {', '.join(counts)}"
        ]
    first, *rest = diff.waves
    ahead = [f"{split.wave} ({len(split.targets)})" for split in rest]
    now = f"Now: wave {first.wave} ({len(first.targets)} target(s))"
    return [now + (f"; still ahead, one promotion each: {', '.join(ahead)}" if ahead else "; nothing ahead")]


# ---------------------------------------------------------------- text


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
    if not diff.changed:
        yield "No target changes." + (" The spec changed, but renders the same output." if diff.spec else "")
    else:
        yield paint(
            f"{counts['targets']} target(s) change: {counts['added']} new, {counts['removed']} removed; "
            f"{restart_headline(diff, counts)}; "
            f"{counts['hot_reload']} hot-reload, {counts['no_restart']} without restart",
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
                f"  {g.platform:<10} {g.datacenter:<10} {len(g.targets):>5} target(s): "
                f"{g.added} new, {g.removed} removed, "
                f"{g.pod_roll} pod-roll, {g.envoy_restart} envoy-restart, {g.sidecar_restart} sidecar-restart, "
                f"{g.hot_reload} hot-reload, {g.no_restart} no restart"
            )
    if diff.deletions:
        yield ""
        yield paint(
            f"Kubernetes objects to delete by hand ({len(diff.deletions)}): kube-applier never deletes what the "
            "head no longer writes. Run in this order (the reverse of its apply order); kubectl contexts are "
            "named after mesh.yaml's clusters:",
            "bold",
        )
        yield from (f"  {delete_line(d)}" for d in diff.deletions)
    yield from rollout_lines(diff)
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
    # a new or removed target's documents cost nothing apart
    priced = sidecar and (doc.status == CHANGED or doc.restart)
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


# ---------------------------------------------------------------- Markdown


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
    )
    env.globals.update(restart_headline=restart_headline, CHANGED=CHANGED)
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
    macros: Any = _template().module  # the template's macros: attributes only Jinja knows of
    capped = dataclasses.replace(diff, base_diagnostics=diff.base_diagnostics[:MAX_DIAGNOSTICS])
    parts = [str(macros.header(capped, summary(diff), calls_block(diff)))]
    parts += [f"**{line}**\n\n" for line in rollout_lines(diff)]
    sections = (
        ("spec file", macros.spec_heading(diff), [macros.spec_file(f) for f in diff.spec]),
        ("target", macros.targets_heading(diff), [macros.target(t) for t in diff.targets]),
        ("shared file", macros.shared_heading(diff), [macros.shared_file(f) for f in diff.shared]),
    )
    size = len(parts[0])
    cut: dict[str, int] = {}  # kind -> blocks left out
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
    from compiler.graph.calls import MAX_DRAWN, calls_mermaid

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
