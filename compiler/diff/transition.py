"""Calls that work at the base and can fail while the head is applied.

Puppet agents, kube-applier and the kubelet converge on their own clocks, so while the head is applied any
target may still run the base rendering while another already runs the head's. A rollout checks every state
from the one a merge leaves on and refuses the unsafe ones (compiler.rollout.states). Without a rollout the merge
is the whole rollout; under one, the merge's own step (the first wave moving) is the one no check covers. For
either, the diff names the pairs the rollout's checks would name: a client at one end of the change, its server
at the other, in each combination of the two. Only calls the client makes at the base count: a call the head
adds fails until its ends converge, but nothing that works today breaks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, replace

from compiler.ir.model import Mesh
from compiler.rollout.pairs import (
    CURRENT,
    NEXT,
    Contraction,
    Instance,
    PairChecker,
    Problem,
    StatesReport,
    affected_clients,
)
from compiler.rollout.pairs import FIXES as ROLLOUT_FIXES
from compiler.rollout.placement import State
from compiler.rollout.states import instances

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
    return _transition(_instances(old, CURRENT, BASE), _instances(new, NEXT, HEAD), plain=True)


def merge_hazards(before: State, after: State) -> tuple[Hazard, ...]:
    """Under a rollout: the calls that work before the merge and can fail while it is applied, the first wave (and
    any allow-list the widening changes) moving from the revision it ran to the head's. The rollout's own checks
    start from the state the merge leaves; this is the step into it.

    Each side names the first wave's revision HEAD (compiler.rollout.pins.WORKING_TREE), the commit it is built
    in: here two specs. Relabelled, no instance of one side passes for the other's."""
    return _transition(
        {t: replace(i, revision=f"{BASE}:{i.revision}") for t, i in instances(before, CURRENT).items()},
        {t: replace(i, revision=f"{HEAD}:{i.revision}") for t, i in instances(after, NEXT).items()},
        plain=False,
    )


def _transition(
    before: dict[str, Instance], after: dict[str, Instance], *, plain: bool
) -> tuple[Hazard, ...]:
    versions = {target: [b, a] for target, b, a in _paired(before, after)}
    # Only a pair with an end that changes can differ between its combinations (affected_clients). At 1,000
    # services this checks a one-service change in ~30 ms instead of 0.5 s.
    changed = [t for t, (b, a) in versions.items() if b is None or a is None or b.workload != a.workload]
    report = PairChecker(versions).run(None, affected_clients(versions, changed))
    return hazards_of(report, before, after, plain=plain)


def hazards_of(
    report: StatesReport, before: Mapping[str, Instance], after: Mapping[str, Instance], *, plain: bool
) -> tuple[Hazard, ...]:
    """The problems of a base → head transition that break a call a client makes at the base (a call the head
    adds fails until its ends converge, which breaks nothing that works), and the identities it moves. `plain`:
    no rollout, whose waves are then one way round (the fixes say so); else the rollout's own fixes."""
    calls_today = {(target, e.service) for target, i in before.items() for e in i.workload.egress}
    found = [_hazard(p, plain) for p in report.problems if (p.client.id, p.server_service) in calls_today]
    calls = {(i.workload.service, e.service) for i in after.values() for e in i.workload.egress}
    presented = {(i.workload.service, i.workload.identity) for i in before.values()}
    fix = f"{FIXES['namespace']}; {ROLLOUT_NOTE}" if plain else ROLLOUT_FIXES["namespace"]
    return tuple(_merged(found + _moved_identities(report.contractions, calls, presented, fix)))


def _moved_identities(
    contractions: Sequence[Contraction],
    calls: Set[tuple[str, str]],
    presented: Set[tuple[str, str]],
    fix: str,
) -> list[Hazard]:
    """The edges the checker calls contracting whose client service still calls the server at the head (`calls`),
    with an identity it presents at the base (`presented`): not a dropped call but a moved identity (a placement
    moved to another namespace is another target, so its base pods look as if they stop calling). The server stops
    admitting them while they still run. (The head's new identity, not admitted yet by a server at the base, is a
    new call.)"""
    return [
        Hazard(
            client=c.client,
            server=c.server,
            check="identity-admitted",
            detail=f"{c.server} no longer admits {c.identity}, which {c.client} presents at the base (a moved "
            "namespace or service account): its pods there are refused while they still run",
            states="client at base, server at head",
            fix=fix,
        )
        for c in contractions
        if (c.client, c.server) in calls and (c.client, c.identity) in presented
    ]


def _merged(hazards: list[Hazard]) -> list[Hazard]:
    """One hazard per (client, server, what, detail): a server missing in some state is found from the client at
    either side; its states then read `client at base or head`."""
    merged: dict[tuple[str, str, str, str], Hazard] = {}
    for hazard in hazards:
        key = (hazard.client, hazard.server, hazard.check, hazard.detail)
        seen = merged.get(key)
        if seen is None:
            merged[key] = hazard
        elif seen.states != hazard.states:
            either = f"client at {BASE} or {HEAD}, " + seen.states.split(", ", 1)[1]
            merged[key] = replace(seen, states=either)
    return list(merged.values())


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


def _hazard(problem: Problem, plain: bool) -> Hazard:
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
        fix=f"{FIXES.get(problem.check, problem.fix)}; {ROLLOUT_NOTE}" if plain else problem.fix,
    )
