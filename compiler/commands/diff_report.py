"""The diff report (`meshc diff`, `meshc check`): what every format says, and the JSON form.

Counts, restart labels, change lines and wave notes are shared by the terminal text (diff_text) and the
pull-request comment (diff_markdown); JSON carries every record whole.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Iterable, Sequence
from typing import Any

from compiler.backends.kubernetes.readers import reader_secret_name
from compiler.diagnostics import Diagnostic, some_of
from compiler.diff.records import (
    ADDED,
    CHANGED,
    REMOVED,
    Change,
    DeleteAhead,
    KubeDelete,
    MeshDiff,
    RolloutNow,
    TargetDiff,
    WaveSplit,
    restart_key,
)
from compiler.diff.transition import Hazard
from compiler.render.restart import Credentials, RestartClass
from compiler.spec.model import DISCOVERY_NAMESPACE

FORMATS = ("text", "markdown", "json")
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
_NEW_OR_REMOVED = {
    ADDED: "new",
    REMOVED: "removed",
}  # what a target that starts or stops reads as, instead of a restart


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
    # under a rollout: what the merge changes at once (targets and canary hosts), and how many of them restart
    counts["now"] = len(diff.now.changes) if diff.now is not None else 0
    counts["now_restarts"] = diff.now.restarts if diff.now is not None else 0
    counts["deletions"] = len(diff.deletions)
    counts["hazards"] = len(diff.hazards)
    counts["refused_ahead"] = len(diff.now.refused_ahead) if diff.now is not None else 0
    counts["deletions_ahead"] = len(diff.now.deletions_ahead) if diff.now is not None else 0
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


HAZARDS_HEADING = (
    "Calls that work today and can fail while the head is applied (Puppet, kube-applier and the kubelet converge "
    "on their own clocks, so for a while a client and its server run different sides of the change)"
)


def hazard_line(hazard: Hazard) -> str:
    """One call that can fail while the head is applied: the services, which end runs which side, what and why."""
    return f"{hazard.client} → {hazard.server} ({hazard.states}): {hazard.detail}; {hazard.fix}"


MAX_HAZARD_ROWS = 20  # in Markdown: a trust-domain change breaks every call, 116 rows in the example mesh


def hazard_rows(diff: MeshDiff) -> list[str]:
    """The hazards as Markdown lists them: the first MAX_HAZARD_ROWS, then how many more (text and JSON have all)."""
    left_out = len(diff.hazards) - MAX_HAZARD_ROWS
    rows = [hazard_line(h) for h in diff.hazards[:MAX_HAZARD_ROWS]]
    return rows + (
        [f"… and {left_out} more (`meshc diff --format json` lists every one)"] if left_out > 0 else []
    )


REFUSED_HEADING = (
    "Promotions the rollout will refuse as this change leaves it (an unsafe state on the way); merged, it stops at "
    "the wave before: split the change first"
)


def refused_lines(now: RolloutNow) -> list[str]:
    """Each later promotion the rollout would refuse, then its findings, indented."""
    return [
        line
        for refused in now.refused_ahead
        for line in (f"wave {refused.wave}:", *(f"  {finding.format()}" for finding in refused.findings))
    ]


def deletions_heading(diff: MeshDiff) -> str:
    """What the kubectl commands are: without a rollout, the objects the head no longer writes; under one, those the
    merge drops from the built output at once (the spec's may still be applied by a pinned wave)."""
    what = (
        "the head no longer writes"
        if diff.now is None
        else "merging drops from the rollout-built output/ at once"
    )
    return (
        f"Kubernetes objects to delete by hand ({len(diff.deletions)}): kube-applier never deletes what {what}. "
        "Run in this order (the reverse of its apply order); kubectl contexts are named after mesh.yaml's clusters"
    )


def ahead_heading(now: RolloutNow) -> str:
    """What the objects the spec no longer writes but the built output still holds are: not to be deleted now."""
    count = len(now.deletions_ahead)
    if now.unknown:
        return (
            f"Kubernetes objects the head no longer writes ({count}): whether merging drops them from output/ at once "
            "is unknown (below), so delete none now, each only once output/ no longer holds it"
        )
    return (
        f"Not yet: Kubernetes objects the head no longer writes that output/ still holds after this merge ({count}): "
        "kube-applier still applies them, so do not delete them now. Each leaves output/ once the wave named has "
        "this change; the diff of that promotion prints its kubectl command"
    )


def ahead_line(ahead: DeleteAhead) -> str:
    """An object still applied, and the wave whose promotion drops it: no command (it is not to be run now)."""
    found = ahead.object
    where = f"{found.cluster}, namespace {found.namespace}" if found.namespace else found.cluster
    what = f"{found.resource} ({where})"
    return f"not yet, until wave {ahead.wave} has this change: {what}" if ahead.wave else what


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


MAX_NOW_ROWS = 100  # rows of the "at once" table in Markdown; text and JSON have every row


def now_lines(diff: MeshDiff, markdown: bool) -> list[str]:
    """Under a rollout: the waves the merge moves and every target and canary host its built output changes at
    once, with the cost (empty without a rollout.yaml at either side); or why that is not known."""
    now = diff.now
    if now is None:
        return []
    from compiler.rollout.report import revision_name, target_change_lines  # loaded with diff.now

    files = f" and {len(now.files)} other file(s)" if now.files else ""
    if now.unknown:
        head = f"Rollout: what merging changes in output/ at once is unknown: {now.unknown}"
    elif now.changes or now.files:
        head = (
            f"Rollout: merging changes {len(now.changes)} target(s) and canary host(s){files} in output/ at once, "
            f"{now.restarts} with a restart"
        )
    elif now.manifest:
        head = "Rollout: merging changes no target in output/ at once; MANIFEST.json records the waves' revisions"
    else:
        head = "Rollout: merging changes nothing in output/ at once"
    lines = [f"#### {head}" if markdown else head]
    for move in now.moves:
        old = revision_name(move.old) if move.old else "(no such wave)"
        text = f"wave {move.wave} moves: {old} → {revision_name(move.new)}"
        lines.append(f"- {text}" if markdown else f"  {text}")
    for verb, hosts in (("gains", now.hosts_added), ("loses", now.hosts_removed)):
        if hosts:
            text = f"the inventory {verb} {len(hosts)} host(s): {some_of(hosts, NAMED_HOSTS)}"
            lines.append(f"- {text}" if markdown else f"  {text}")
    shown = now.changes[:MAX_NOW_ROWS] if markdown else now.changes
    if shown:
        lines += ([""] if markdown else []) + list(target_change_lines(shown, markdown))
    lines += _more(len(now.changes) - len(shown))
    if now.files:
        files_shown = now.files[:MAX_NOW_ROWS] if markdown else now.files
        lines += [""] if markdown else []
        lines += [
            f"- file `{path}`: {status}" if markdown else f"  file {path}: {status}"
            for path, status in files_shown
        ]
        lines += _more(len(now.files) - len(files_shown))
    return lines


NAMED_HOSTS = 5  # the hosts an inventory edit names in the report; JSON lists every one


def _more(left_out: int) -> list[str]:
    """The line that says how many rows Markdown left out (none where it left out none)."""
    return ["", f"… and {left_out} more (`meshc diff --format json` lists every one)"] if left_out else []


def rollout_lines(diff: MeshDiff) -> list[str]:
    """What changes now and what is still ahead, by wave (empty without a wave policy). Where the diff holds what
    the merge changes at once (`now_lines`), what is still ahead: each wave's changed targets (and canary hosts)
    that do not change at once, in the policy's order."""
    if not diff.waves:
        return []
    counts = [f"{split.wave} ({len(split.targets)})" for split in diff.waves if split.targets]
    if diff.rollout == "none":
        return [f"Waves: {', '.join(counts)}; no rollout.yaml, so every wave gets this at once"]
    now = diff.now
    known = now is not None and not now.unknown
    if now is not None and known:
        counts = _ahead(diff.waves, now)
    if diff.rollout == "hold":
        return [
            "Rollout on hold: no wave gets this until hold is lifted; then, one promotion at a time: "
            f"{', '.join(counts)}"
        ]
    if known:
        return [f"Still ahead, one promotion each: {', '.join(counts)}"] if counts else []
    first, *rest = diff.waves
    ahead = [f"{split.wave} ({len(split.targets)})" for split in rest]
    line = f"Now: wave {first.wave} ({len(first.targets)} target(s))"
    return [line + (f"; still ahead, one promotion each: {', '.join(ahead)}" if ahead else "; nothing ahead")]


def _ahead(waves: Sequence[WaveSplit], now: RolloutNow) -> list[str]:
    """Each wave's changed targets that do not change at once, and the canary hosts still ahead, in the policy's
    order: `wave (count)`. The first wave, never promoted, runs the merge at once (unless on hold): what of it waits
    does so for the contract, once no older live revision needs the old rendering."""
    at_once = {change.target for change in now.changes}.union(now.file_targets)
    order = {name: index for index, name in enumerate(now.waves)}
    first = now.waves[0] if now.waves and now.mode == "active" else None
    splits = [
        (
            split.wave,
            [t for t in split.targets if t not in at_once],
            ", when the older revisions leave" if split.wave == first else "",
        )
        for split in waves
    ]
    splits += [(split.wave, list(split.targets), " host(s)") for split in now.hosts_ahead]
    splits.sort(key=lambda split: order.get(split[0], len(order)))
    return [f"{wave} ({len(targets)}{unit})" for wave, targets, unit in splits if targets]
