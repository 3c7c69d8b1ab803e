"""Every state a rollout passes through is safe: each client→server pair, in every old/new combination.

Puppet agents, kube-applier and the kubelet converge on their own clocks, so while a promotion is
applied any target (or canary host) may still run the current rendering while any other runs the
next one. This module lays out the instances of the current state and of the next promotion's,
and the versions each instance can be in; rollout.pairs checks every client→server pair that
discovery connects, in each of the four combinations {current, next} × {current, next}.
"""

from __future__ import annotations

from compiler.diagnostics import Diagnostic, Span, SpecError
from compiler.rollout.pairs import (
    CURRENT,
    NEXT,
    Instance,
    PairChecker,
    Problem,
    StatesReport,
    affected_clients,
)
from compiler.rollout.pins import WORKING_TREE, WaveRevision, next_wave, with_pin
from compiler.rollout.placement import State, rollout_state
from compiler.rollout.revisions import Context, compile_revision, spec_key


def instances(state: State, label: str) -> dict[str, Instance]:
    """Every target and canary host present in a state, by id (canary hosts as `host/<certname>`)."""
    found = {}
    for target, placement in state.placements.items():
        if placement.workload is not None:
            found[target] = Instance(
                id=target,
                state=label,
                wave=placement.wave,
                revision=placement.revision,
                workload=placement.workload,
                mesh=state.meshes[placement.revision],
            )
    wave_revision = {r.wave: r.revision for r in state.revisions}
    for canary in state.canaries:
        revision = wave_revision[canary.wave]
        pool = (
            next((w for w in state.meshes[revision].workloads if w.id == canary.pool), None)
            if revision in state.meshes
            else None
        )
        if pool is not None:
            found[f"host/{canary.certname}"] = Instance(
                id=f"host/{canary.certname}",
                state=label,
                wave=canary.wave,
                revision=revision,
                workload=pool,
                mesh=state.meshes[revision],
            )
    return found


def check_states(
    current: State, following: State | None, promotion: tuple[str, str] | None, *, checked: bool = False
) -> StatesReport:
    """Check the current state and, if given, every state on the way to `following` (the next promotion).

    `checked`: the current state is known safe (the state a checked promotion led to), so only the pairs with an
    end that moves are checked: a client that moves, or one that calls a service with a target that moves."""
    now = instances(current, CURRENT)
    after = instances(following, NEXT) if following is not None else {}
    versions: dict[str, list[Instance | None]] = {}
    for key in sorted(set(now) | set(after)):
        options = [now.get(key)] if following is None else [now.get(key), after.get(key)]
        versions[key] = _distinct(options)
    newest = frozenset(s.revisions[0].revision for s in (current, following) if s is not None and s.revisions)
    checker = PairChecker(versions, newest)
    moving = [target for target, options in versions.items() if len(options) > 1]
    return checker.run(promotion, affected_clients(versions, moving) if checked else None)


def _distinct(options: list[Instance | None]) -> list[Instance | None]:
    """The versions an instance can be in: one when both states agree (same revision, same widened IR)."""
    if (
        len(options) == 2
        and options[0] is not None
        and options[1] is not None
        and options[0].workload == options[1].workload
        and options[0].revision == options[1].revision
    ):
        return [options[0]]
    return options


def next_state(
    context: Context, state: State
) -> tuple[tuple[str, str] | None, State | None, tuple[WaveRevision, ...] | None]:
    """The next promotion (wave, revision), the state it leads to and its pins; Nones when every wave is current."""
    promotion = next_wave(state.revisions, context.head, lambda rev: spec_key(context, rev))
    if promotion is None:
        return None, None, None
    # Moving to the current commit: check the working tree, which a promotion requires clean (so equal), and
    # which a build before committing must already prove safe for the waves after the first.
    revision = WORKING_TREE if promotion[1] == context.head else promotion[1]
    revisions = with_pin(state.revisions, promotion[0], revision)
    return promotion, rollout_state(context, revisions), revisions


def check_rollout(context: Context, state: State) -> StatesReport:
    """Check the current state and the next promotion's states; raise SpecError [rollout-unsafe] naming each
    broken pair."""
    promotion, following, _ = next_state(context, state)
    report = check_states(state, following, promotion)
    if report.problems:
        raise SpecError([_diagnostic(context, report, problem) for problem in report.problems])
    return report


def refused_ahead(context: Context, state: State) -> tuple[tuple[str, tuple[Diagnostic, ...]], ...]:
    """Each promotion after the next one, made in turn as the rollout stands (every wave to the revision of the
    wave before it), with the unsafe states it would be refused for: (wave, findings), for those refused only.

    check_rollout checks the next promotion alone, so a change whose unsafe state comes with a later wave (a client
    and its server in one wave, which then moves both at once) passes review and the merge, and stops the rollout
    at that wave. Known at review time, it is split before it is merged."""
    refused = []
    _, following, _ = next_state(context, state)
    while following is not None:
        promotion, after, _ = next_state(context, following)
        if promotion is None or after is None:
            break
        report = check_states(following, after, promotion, checked=True)
        if report.problems:
            refused.append((promotion[0], tuple(_diagnostic(context, report, p) for p in report.problems)))
        following = after
    return tuple(refused)


def _diagnostic(context: Context, report: StatesReport, problem: Problem) -> Diagnostic:
    client, server = problem.client, problem.server
    if problem.missing:
        gone = (
            f"once {report.promotion[0]} is promoted"
            if problem.missing == NEXT and report.promotion
            else "now"
        )
        states = f"{_describe(client, report)} → no server {gone}"
    else:
        states = f"{_describe(client, report)} → {_describe(server, report)}"
    return Diagnostic(
        span=_span(context, client, problem.server_service),
        code="rollout-unsafe",
        message=f"{client.workload.service} → {problem.server_service}: {problem.detail} ({states}); {problem.fix}",
    )


def _describe(instance: Instance, report: StatesReport) -> str:
    revision = "the revision being built" if instance.revision == WORKING_TREE else instance.revision[:12]
    when = (
        "now"
        if instance.state == CURRENT
        else f"once {report.promotion[0]} is promoted"
        if report.promotion
        else "next"
    )
    return f"{instance.id} in wave {instance.wave} at {revision}, {when}"


def _span(context: Context, client: Instance, server: str) -> Span:
    """The client's dependency entry in the head spec, else the client's or the server's service file, else
    rollout.yaml."""
    head = compile_revision(context, WORKING_TREE)
    if head is not None:
        spec = head.spec
        service = spec.services.get(client.workload.service)
        if service is not None:
            for dep in service.dependencies:
                if dep.service == server:
                    return dep.span
            return service.span
        other = spec.services.get(server)
        if other is not None:
            return other.span
    return context.rollout.span
