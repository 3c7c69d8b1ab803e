"""Format a rollout Plan for people and machines: terminal text, a pull-request comment in Markdown, JSON."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from compiler.render.restart import RestartClass
from compiler.rollout.changes import TargetChange
from compiler.rollout.pairs import StatesReport
from compiler.rollout.pins import WORKING_TREE
from compiler.rollout.plan import Plan, held_back_note

_COST = {
    RestartClass.NONE: "no restart",
    RestartClass.HOT_RELOAD: "hot reload",
    RestartClass.SIDECAR_RESTART: "Synapse/Nerve restart",
    RestartClass.ENVOY_RESTART: "Envoy restart",
}


def revision_name(revision: str) -> str:
    """A revision as a plan shows it: a short commit id, or the working tree being built."""
    return "HEAD (being built)" if revision == WORKING_TREE else revision[:12]


def cost(change: TargetChange) -> str:
    """What a change costs its target: hot reload, or a sidecar or Envoy restart, the class `meshc diff` names it
    by too; on Kubernetes a restart is a pod roll (the restart hash in the pod template), and says so."""
    label = _COST[change.restart]
    if change.target.startswith("k8s/") and change.restart >= RestartClass.SIDECAR_RESTART:
        label += ", a pod roll"
    return label + (
        " (restart-sensitive!)"
        if change.restart_sensitive and change.restart >= RestartClass.SIDECAR_RESTART
        else ""
    )


def to_json(plan: Plan) -> dict[str, Any]:
    """The plan as JSON-ready data."""
    return {
        "hold": plan.hold,
        "held_back": plan.held_back,
        "waves": [
            {
                "name": w.name,
                "revision": w.revision,
                "targets": w.targets,
                "hosts": w.hosts,
                "current": w.current,
            }
            for w in plan.waves
        ],
        "promotion": None
        if plan.promotion is None
        else {"wave": plan.promotion[0], "revision": plan.promotion[1]},
        "changes": [
            {
                "target": c.target,
                "wave": c.wave,
                "status": c.status,
                "restart": c.restart.label,
                "cost": cost(c),
                "restart_sensitive": c.restart_sensitive,
                "reason": c.reason,
            }
            for c in plan.changes
        ],
        "files": [{"path": path, "status": status} for path, status in plan.files],
        "expand": [{"service": s.service, "identities": list(s.identities)} for s in plan.expanded],
        "contract": [{"service": s.service, "identities": list(s.identities)} for s in plan.contracted],
        "states": {
            "current": _states(plan.current_states),
            "next": _states(plan.next_states) if plan.next_states else None,
        },
    }


def _states(report: StatesReport) -> dict[str, Any]:
    return {
        "pairs": report.pairs,
        "combinations": report.combinations,
        "problems": len(report.problems),
        "contracting_edges": [f"{c.client} -> {c.server}" for c in report.contractions],
    }


def format_json(plan: Plan) -> str:
    """The plan as indented JSON."""
    return json.dumps(to_json(plan), indent=2) + "\n"


def format_text(plan: Plan) -> str:
    """The plan for a terminal."""
    return "\n".join(_lines(plan, markdown=False)) + "\n"


def format_markdown(plan: Plan) -> str:
    """The plan as a pull-request comment."""
    return "\n".join(_lines(plan, markdown=True)) + "\n"


def _lines(plan: Plan, markdown: bool) -> Iterator[str]:
    head = "## meshc rollout plan" if markdown else "rollout plan"
    yield head + (" — HOLD: no new merge reaches any wave" if plan.hold else "")
    yield ""
    yield from _wave_table(plan, markdown)
    yield ""
    yield ("### " if markdown else "") + "Expand (in force now)"
    yield from _steps(plan.expanded, "admits, because a live revision needs it", markdown)
    yield ""
    held = hold_line(plan)
    if held is not None:
        yield f"**{held[0].upper()}{held[1:]}.**" if markdown else f"{held[0].upper()}{held[1:]}."
        yield ""
    if plan.promotion is None:
        yield (
            "Every wave runs the newest revision: nothing to promote."
            if held is None
            else f"Every wave runs the held revision {revision_name(plan.waves[0].revision)}: nothing to promote."
        )
    else:
        wave, revision = plan.promotion
        yield ("### " if markdown else "") + f"Next: promote {wave} to {revision_name(revision)}"
        yield from target_change_lines(plan.changes, markdown)
        yield from (
            f"- file `{path}`: {status}" if markdown else f"  file {path}: {status}"
            for path, status in plan.files
        )
        yield ""
        yield ("### " if markdown else "") + "Contract (with this promotion)"
        yield from _steps(plan.contracted, "stops admitting", markdown)
    yield ""
    yield ("### " if markdown else "") + "Checked states"
    yield _state_line("current state", plan.current_states, markdown)
    if plan.next_states is not None:
        yield _state_line(
            f"every state while {plan.promotion[0] if plan.promotion else ''} converges",
            plan.next_states,
            markdown,
        )


def hold_line(plan: Plan) -> str | None:
    """On hold with a newer revision than any wave runs: that no wave runs it, and how it moves on."""
    return None if plan.held_back is None else held_back_note(plan.waves[0].name, plan.held_back)


def _wave_table(plan: Plan, markdown: bool) -> Iterator[str]:
    if markdown:
        yield "| wave | revision | targets | canary hosts |"
        yield "|---|---|---:|---:|"
        for w in plan.waves:
            behind = "" if w.current else " (behind)"
            yield f"| {w.name} | `{revision_name(w.revision)}`{behind} | {w.targets} | {w.hosts} |"
        return
    for w in plan.waves:
        behind = "" if w.current else "  behind"
        yield f"  {w.name:<18} {revision_name(w.revision):<20} {w.targets:>5} target(s) {w.hosts:>4} host(s){behind}"


def _steps(steps: tuple[Any, ...], verb: str, markdown: bool) -> Iterator[str]:
    if not steps:
        yield "- nothing" if markdown else "  nothing"
    for step in steps:
        names = ", ".join(f"`{i}`" if markdown else i for i in step.identities)
        yield f"- {step.service} {verb}: {names}" if markdown else f"  {step.service} {verb}: {names}"


def target_change_lines(changes: tuple[TargetChange, ...], markdown: bool) -> Iterator[str]:
    """Each target or canary host that changes, its wave, what it costs and why: a table in Markdown, else lines."""
    if not changes:
        yield "- no target changes" if markdown else "  no target changes"
        return
    if markdown:
        yield "| target | wave | change | cost | why |"
        yield "|---|---|---|---|---|"
        for c in changes:
            yield f"| `{c.target}` | {c.wave} | {c.status} | {cost(c)} | {c.reason} |"
        return
    for c in changes:
        yield f"  {c.status:<8} {c.target:<48} {c.wave:<12} {cost(c)}  ({c.reason})"


def _state_line(what: str, report: StatesReport, markdown: bool) -> str:
    line = state_line(what, report)
    return f"- {line}" if markdown else f"  {line}"


def state_line(what: str, report: StatesReport) -> str:
    """One line on checked states: how many pairs and combinations, safe or how many unsafe, edges contracting."""
    verdict = "safe" if not report.problems else f"{len(report.problems)} UNSAFE"
    contracting = f", {len(report.contractions)} edge(s) contracting" if report.contractions else ""
    return (
        f"{what}: {report.pairs} client→server pair(s), {report.combinations} combination(s) checked: "
        f"{verdict}{contracting}"
    )
