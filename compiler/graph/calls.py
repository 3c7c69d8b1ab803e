"""What a change does to the call graph (service -> dependency edges), and its Mermaid picture for a pull request."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass

from compiler.graph.mermaid import frontmatter_title, text
from compiler.ir.model import Egress, Mesh, Policy

ADDED, REMOVED, CHANGED = "added", "removed", "changed"
MAX_DRAWN = 80  # call changes drawn in one diagram; the rest are counted in its title and below it
MAX_SUMMARY_CHARS = 120  # a changed edge's label; `meshc diff --format json` has every change
_STYLE = {
    ADDED: "stroke:#1a7f37,stroke-width:2px",
    REMOVED: "stroke:#cf222e,stroke-width:2px,stroke-dasharray:5 4",
    CHANGED: "stroke:#9a6700,stroke-width:2px",
}
_ARROW = {ADDED: "==>", REMOVED: "-.->", CHANGED: "-->"}
_SIGN = {ADDED: "+", REMOVED: "−", CHANGED: "~"}


@dataclass(frozen=True, kw_only=True, slots=True)
class Call:
    """One edge of the call graph as the spec resolves it: who calls what, how, under which policy."""

    client: str
    server: str
    locality: str
    protocol: str
    policy: Policy


@dataclass(frozen=True, kw_only=True, slots=True)
class CallChange:
    """An edge of the call graph that a change adds, removes, or whose locality, protocol or policy it changes."""

    client: str
    server: str
    status: str
    summary: str  # "failover · http" for added/removed edges; "timeout 15s → 2s" for changed ones


def calls(mesh: Mesh) -> dict[tuple[str, str], Call]:
    """Every (client service, dependency) edge, from the client's first workload (they all share its edges)."""
    found: dict[tuple[str, str], Call] = {}
    for workload in mesh.workloads:
        for egress in workload.egress:
            found.setdefault((workload.service, egress.service), _call(workload.service, egress))
    return found


def _call(client: str, egress: Egress) -> Call:
    return Call(
        client=client,
        server=egress.service,
        locality=egress.locality,
        protocol=egress.protocol,
        policy=egress.policy,
    )


def diff_calls(old: Mesh | None, new: Mesh) -> tuple[CallChange, ...]:
    """The call-graph changes from `old` (None: an empty mesh) to `new`, sorted by client and server."""
    before = calls(old) if old is not None else {}
    after = calls(new)
    changes = []
    for key in sorted(before.keys() | after.keys()):
        old_call, new_call = before.get(key), after.get(key)
        if old_call is None and new_call is not None:
            changes.append(CallChange(client=key[0], server=key[1], status=ADDED, summary=_how(new_call)))
        elif new_call is None and old_call is not None:
            changes.append(CallChange(client=key[0], server=key[1], status=REMOVED, summary=_how(old_call)))
        elif old_call is not None and new_call is not None and old_call != new_call:
            changes.append(
                CallChange(
                    client=key[0],
                    server=key[1],
                    status=CHANGED,
                    summary=_cut("; ".join(_differences(old_call, new_call))),
                )
            )
    return tuple(changes)


def _cut(summary: str) -> str:
    return summary if len(summary) <= MAX_SUMMARY_CHARS else summary[: MAX_SUMMARY_CHARS - 1] + "…"


def _how(call: Call) -> str:
    return f"{call.locality} · {call.protocol}"


def _differences(old: Call, new: Call) -> Iterator[str]:
    for name in ("locality", "protocol"):
        if getattr(old, name) != getattr(new, name):
            yield f"{name} {getattr(old, name)} → {getattr(new, name)}"
    yield from _policy_differences(_flat(old.policy), _flat(new.policy))


def _duration(ms: int) -> str:
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def _flat(policy: Policy) -> dict[str, object]:
    return {
        "connect_timeout": _duration(policy.connect_timeout_ms),
        "timeout": _duration(policy.timeout_ms),
        "retries.attempts": policy.retries.attempts,
        "retries.per_try_timeout": _duration(policy.retries.per_try_timeout_ms),
        "retries.on": ",".join(policy.retries.retry_on),
        **{
            f"circuit_breaker.{k}": getattr(policy.circuit_breaker, k)
            for k in ("max_connections", "max_pending_requests", "max_requests", "max_retries")
        },
        **{
            f"outlier_detection.{k}": getattr(policy.outlier_detection, k)
            for k in ("consecutive_5xx", "max_ejection_percent")
        },
        "outlier_detection.interval": _duration(policy.outlier_detection.interval_ms),
        "outlier_detection.base_ejection_time": _duration(policy.outlier_detection.base_ejection_time_ms),
    }


def _policy_differences(old: dict[str, object], new: dict[str, object]) -> Iterator[str]:
    for key in old:
        if old[key] != new[key]:
            yield f"{key} {old[key]} → {new[key]}"


def calls_mermaid(
    changes: Sequence[CallChange], restarting: Collection[str] = (), max_drawn: int = MAX_DRAWN
) -> str:
    """A Mermaid flowchart of the call-graph changes; "" when there are none.

    Added edges are green, removed ones red and dashed, changed ones amber.

    `restarting`: restart-sensitive services the change restarts (MeshDiff.sensitive_services); only those are
    marked, as the rest of the report does, so a hot reload of a sensitive service raises no alarm.
    """
    if not changes:
        return ""
    drawn = changes[:max_drawn]
    counts = ", ".join(
        f"{sum(c.status == s for c in changes)} {s}"
        for s in (ADDED, REMOVED, CHANGED)
        if any(c.status == s for c in changes)
    )
    title = f"call graph: {counts}" + (
        f" (first {len(drawn)} of {len(changes)} drawn)" if len(drawn) < len(changes) else ""
    )
    services = sorted({s for c in drawn for s in (c.client, c.server)})
    ids = {service: f"s{index}" for index, service in enumerate(services)}
    sensitive = set(restarting)
    lines = ["flowchart LR", "  classDef restart stroke:#bc4c00,stroke-width:3px,fill:#fff1e5"]
    for service in services:
        label = text(service) + ("<br/>restart-sensitive, restarts" if service in sensitive else "")
        lines.append(f'  {ids[service]}["{label}"]' + (":::restart" if service in sensitive else ""))
    for index, change in enumerate(drawn):
        label = f"{_SIGN[change.status]} {change.summary}"
        lines.append(f'  {ids[change.client]} {_ARROW[change.status]}|"{text(label)}"| {ids[change.server]}')
        lines.append(f"  linkStyle {index} {_STYLE[change.status]}")
    return frontmatter_title(title) + "\n".join(lines) + "\n"
