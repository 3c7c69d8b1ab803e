"""Calls that work at the base and can fail while the head is applied, for a change made without a rollout.

Puppet agents, kube-applier and the kubelet converge on their own clocks, so while the head is applied any
target may still run the base rendering while another already runs the head's. A rollout checks every such
state and refuses the unsafe ones (compiler.rollout.states); without one, the merge is the whole rollout, and
the diff names the pairs the rollout checks would name: a client at one end of the change, its server at the
other, in each combination of the two. Only calls the client makes at the base count: a call the head adds
fails until its ends converge, but nothing that works today breaks.
"""

from __future__ import annotations

from dataclasses import dataclass

from compiler.ir.model import Mesh
from compiler.rollout.pairs import CURRENT, NEXT, Instance, PairChecker, Problem, location

BASE, HEAD = "base", "head"

# What to do instead, without waves (compiler.rollout.pairs.FIXES says it for a rollout's waves).
FIXES = {
    "identity-admitted": "split the change: admit the new identity in one change, apply it everywhere, then switch",
    "identity-expected": "split the change: have the server present both identities, move the clients, then drop "
    "the old one",
    "protocol": "split the change: serve the new protocol beside the old one (a new service or port) until every "
    "client has moved, then drop the old",
    "discovery": "split the change: register at the new location beside the old one until every client watches "
    "it, and remove a service only after no client calls it",
    "namespace": "split the change: serve the new namespace as a new service beside the old one, move every "
    "client to it, then drop the old",
    "local": "keep a server in the client's datacenter until every client has the change",
}
ROLLOUT_NOTE = "or roll it out in waves (README, Rollout), which checks every state"


@dataclass(frozen=True, kw_only=True, slots=True)
class Hazard:
    """A call that works at the base and fails in a state between base and head, with how to avoid it."""

    client: str  # services
    server: str
    check: str  # what breaks: identity-admitted, identity-expected, protocol, discovery, namespace, local
    detail: str  # the first pair of targets it breaks for, in words
    states: str  # which end runs which side, e.g. "client at base, server at head"
    fix: str


def transition_hazards(old: Mesh | None, new: Mesh) -> tuple[Hazard, ...]:
    """Every client→server pair whose call at the base can fail while base and head are both live, one per
    (client service, server service, what breaks, combination); () without a base."""
    if old is None:
        return ()
    versions = {
        target: [before, after]
        for target, before, after in _paired(_instances(old, CURRENT, BASE), _instances(new, NEXT, HEAD))
    }
    located: dict[tuple[str, ...], list[str]] = {}
    for target, options in versions.items():
        for option in options:
            if option is not None and target not in located.setdefault(location(option.workload), []):
                located[location(option.workload)].append(target)
    # Only a pair with an end that changes can differ between its combinations: a client that changes, or one that
    # calls a service with a target that changes (its server, or where the client reads the server's port from).
    # At 1,000 services this checks a one-service change in ~10 ms instead of 0.5 s.
    changed = {
        t
        for t, (before, after) in versions.items()
        if before is None or after is None or before.workload != after.workload
    }
    services = {o.workload.service for t in changed for o in versions[t] if o is not None}
    clients = {
        t
        for t, options in versions.items()
        if t in changed
        or any(e.service in services for o in options if o is not None for e in o.workload.egress)
    }
    report = PairChecker(versions, located).run(None, clients)
    calls_today = {(w.id, e.service) for w in old.workloads for e in w.egress}
    return tuple(
        _hazard(problem)
        for problem in report.problems
        if (problem.client.id, problem.server_service) in calls_today
    )


def _instances(mesh: Mesh, state: str, revision: str) -> dict[str, Instance]:
    return {
        w.id: Instance(id=w.id, state=state, wave="", revision=revision, workload=w, mesh=mesh)
        for w in mesh.workloads
    }


def _paired(
    before: dict[str, Instance], after: dict[str, Instance]
) -> list[tuple[str, Instance | None, Instance | None]]:
    return [
        (target, before.get(target), after.get(target)) for target in sorted(before.keys() | after.keys())
    ]


def _hazard(problem: Problem) -> Hazard:
    client, server = problem.client, problem.server
    side = {CURRENT: BASE, NEXT: HEAD}
    if problem.missing is not None:
        states = f"client at {side[client.state]}, no server at {side[problem.missing]}"
    else:
        states = f"client at {side[client.state]}, server at {side[server.state]}"
    return Hazard(
        client=client.workload.service,
        server=problem.server_service,
        check=problem.check,
        detail=problem.detail,
        states=states,
        fix=f"{FIXES.get(problem.check, problem.fix)}; {ROLLOUT_NOTE}",
    )
