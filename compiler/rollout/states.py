"""Every state a rollout passes through is safe: each client→server pair, in every old/new combination.

Puppet agents, kube-applier and the kubelet converge on their own clocks, so while a promotion is
applied any target (or canary host) may still run the current rendering while any other runs the
next one. The checks reason per pair: for a client instance and a server instance that discovery
connects, each of the four combinations {current, next} × {current, next} must hold:

- the server admits the client's SPIFFE identity;
- the client expects the identity the server presents;
- both speak the same protocol;
- the client watches where the server registers (ZooKeeper ensemble and path; cluster, namespace,
  service and port);
- a `local` dependency keeps a server in the client's datacenter.

A client instance whose next rendering drops the dependency is *contracting* that edge: its old
rendering may meet a server that no longer admits it, which is the contract step, not a failure.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from compiler.diagnostics import Diagnostic, Span, SpecError
from compiler.ir.model import Egress, KubernetesSource, Mesh, Workload, ZookeeperSource
from compiler.rollout.build import Context, RolloutBuild, State, compile_revision, rollout_state, spec_key
from compiler.rollout.pins import WORKING_TREE, WaveRevision, next_wave, with_pin

CURRENT, NEXT = "current", "next"


@dataclass(frozen=True, kw_only=True, slots=True)
class Instance:
    """What one target or canary host runs in one state: its widened workload, the IR of its revision, its wave."""

    id: str
    state: str
    wave: str
    revision: str
    workload: Workload
    mesh: Mesh


@dataclass(frozen=True, kw_only=True, slots=True)
class Problem:
    """One unsafe combination: a client instance, a server instance and what breaks between them."""

    client: Instance
    server: Instance
    check: str
    detail: str
    fix: str
    # the state (CURRENT or NEXT) in which no server is there; `server` is then any instance of it
    missing: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Contraction:
    """An edge the next promotion removes: the server stops admitting a client that will no longer call it."""

    client: str
    server: str
    identity: str


@dataclass(frozen=True, kw_only=True, slots=True)
class StatesReport:
    """The checked states: the promotion they cover (None: only the current state), what was checked, what failed."""

    promotion: tuple[str, str] | None
    pairs: int
    combinations: int
    problems: tuple[Problem, ...]
    contractions: tuple[Contraction, ...]


FIXES = {
    "identity-admitted": (
        "split the change: admit the new identity in one change, promote it to every wave, then switch"
    ),
    "identity-expected": (
        "a moved identity or trust-domain change cannot go wave by wave: "
        "split it (present both, then drop the old) or order the waves so client and server move together"
    ),
    "protocol": (
        "split the change: serve the new protocol beside the old one (a new service or port) "
        "until every client wave has moved, or order the waves so the server moves with its clients"
    ),
    "discovery": (
        "split the change: register at the new location beside the old one until every wave watches it, "
        "and remove a service only after no wave calls it (or order the waves so the server comes first)"
    ),
    "local": (
        "keep a server in the client's datacenter until the last wave has the change, "
        "or order the waves so clients move first"
    ),
}


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


def check_states(current: State, following: State | None, promotion: tuple[str, str] | None) -> StatesReport:
    """Check the current state and, if given, every state on the way to `following` (the next promotion)."""
    now = instances(current, CURRENT)
    after = instances(following, NEXT) if following is not None else {}
    versions: dict[str, list[Instance | None]] = {}
    for key in sorted(set(now) | set(after)):
        options = [now.get(key)] if following is None else [now.get(key), after.get(key)]
        versions[key] = _distinct(options)
    located: dict[tuple[str, ...], list[str]] = {}
    for key, options in versions.items():
        for option in options:
            if option is not None:
                where = _location(option.workload)
                if key not in located.setdefault(where, []):
                    located[where].append(key)
    checker = _Checker(versions, located)
    return checker.run(promotion)


def _location(workload: Workload) -> tuple[str, ...]:
    """Where discovery finds a server instance: its service in a datacenter's ZooKeeper, or in a cluster namespace."""
    if workload.platform == "vm":
        return ("zk", workload.service, workload.datacenter)
    return ("k8s", workload.service, workload.cluster or "", workload.namespace)


def _aims(edge: Egress) -> Iterator[tuple[str, ...]]:
    """The locations an edge's discovery sources watch, in _location's terms."""
    for source in edge.sources:
        if isinstance(source, ZookeeperSource):
            yield ("zk", edge.service, source.datacenter)
        else:
            yield ("k8s", edge.service, source.cluster, source.namespace)


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


class _Checker:
    """Runs the pair checks over every client version, its edges, and the server instances discovery connects."""

    def __init__(
        self, versions: Mapping[str, list[Instance | None]], located: Mapping[tuple[str, ...], list[str]]
    ) -> None:
        self.versions = versions
        self.located = located
        self.problems: dict[tuple[str, str, str, str], Problem] = {}
        self.contractions: dict[tuple[str, str, str], Contraction] = {}
        self.pairs = 0
        self.combinations = 0
        self.ports: dict[int, dict[str, int]] = {}

    def _port(self, mesh: Mesh, service: str) -> int | None:
        """The mesh port of `service` as `mesh` (a client's revision) has it: where its discovery expects the server."""
        ports = self.ports.get(id(mesh))
        if ports is None:
            ports = self.ports[id(mesh)] = {w.service: w.ingress.mesh_port for w in mesh.workloads}
        return ports.get(service)

    def run(self, promotion: tuple[str, str] | None) -> StatesReport:
        for client_id, options in self.versions.items():
            for client in options:
                if client is not None:
                    self._client(client_id, client, options)
        problems = tuple(sorted(self.problems.values(), key=lambda p: (p.client.id, p.server.id, p.check)))
        return StatesReport(
            promotion=promotion,
            pairs=self.pairs,
            combinations=self.combinations,
            problems=problems,
            contractions=tuple(sorted(self.contractions.values(), key=lambda c: (c.client, c.server))),
        )

    def _client(self, client_id: str, client: Instance, options: list[Instance | None]) -> None:
        for edge in client.workload.egress:
            keeps_edge = [
                o is not None and any(e.service == edge.service for e in o.workload.egress) for o in options
            ]
            reached = list(dict.fromkeys(s for where in _aims(edge) for s in self.located.get(where, ())))
            for server_id in reached:
                self.pairs += 1
                for server in self.versions[server_id]:
                    if server is not None:
                        self.combinations += 1
                        self._pair(client, edge, server, all(keeps_edge))
            self._available(client, edge, reached)

    def _pair(self, client: Instance, edge: Egress, server: Instance, keeps_edge: bool) -> None:
        if client.revision == server.revision and client.state == server.state:
            return  # one revision's rendering of both ends: consistent by construction (spec checks + invariants)
        target, ingress = server.workload, server.workload.ingress
        if target.service != edge.service:
            return
        if client.workload.identity not in ingress.allowed_clients:
            if not keeps_edge:
                key = (client.workload.service, target.service, client.workload.identity)
                self.contractions.setdefault(
                    key,
                    Contraction(
                        client=client.workload.service,
                        server=target.service,
                        identity=client.workload.identity,
                    ),
                )
            else:
                self._problem(
                    client,
                    server,
                    "identity-admitted",
                    f"{server.id} does not admit {client.workload.identity}",
                )
        if target.identity not in edge.server_identities:
            self._problem(
                client,
                server,
                "identity-expected",
                f"{client.id} expects {', '.join(edge.server_identities)} but {server.id} presents {target.identity}",
            )
        if edge.protocol != ingress.protocol:
            self._problem(
                client,
                server,
                "protocol",
                f"{client.id} speaks {edge.protocol} to {server.id}, which serves {ingress.protocol}",
            )
        mismatch = _location_mismatch(client, edge, server, self._port(client.mesh, edge.service))
        if mismatch:
            self._problem(client, server, "discovery", mismatch)

    def _available(self, client: Instance, edge: Egress, servers: list[str]) -> None:
        """Some server the client watches is there in every state (for `local`: in the client's datacenter)."""
        if edge.locality == "local":
            servers = [
                s
                for s in servers
                if any(
                    o is not None and o.workload.datacenter == client.workload.datacenter
                    for o in self.versions[s]
                )
            ]
        if any(None not in self.versions[s] for s in servers):
            return
        somewhere = next((o for s in servers for o in self.versions[s] if o is not None), None)
        there_now = any(o is not None and o.state == CURRENT for s in servers for o in self.versions[s])
        where = (
            f"in {client.workload.datacenter} (locality local)"
            if edge.locality == "local"
            else "where it watches"
        )
        detail = f"{client.id} needs {edge.service} {where}, and " + (
            "every server there is absent in some state" if somewhere else "no server is there"
        )
        self._problem(
            client,
            somewhere or client,
            "local" if edge.locality == "local" else "discovery",
            detail,
            missing=NEXT if there_now else CURRENT,
        )

    def _problem(
        self, client: Instance, server: Instance, check: str, detail: str, missing: str | None = None
    ) -> None:
        key = (client.workload.service, server.workload.service, check, f"{client.state}/{server.state}")
        self.problems.setdefault(
            key,
            Problem(
                client=client, server=server, check=check, detail=detail, fix=FIXES[check], missing=missing
            ),
        )


def _location_mismatch(
    client: Instance, edge: Egress, server: Instance, expected_port: int | None
) -> str | None:
    """Where the client watches vs where the server registers, for the source aimed at it (None if they agree)."""
    target = server.workload
    for source in edge.sources:
        if (
            isinstance(source, ZookeeperSource)
            and target.registration is not None
            and source.datacenter == target.datacenter
        ):
            registered = (tuple(target.registration.zk_hosts), target.registration.zk_path)
            if (tuple(source.hosts), source.path) != registered:
                return (
                    f"{client.id} watches {','.join(source.hosts)}{source.path} but {server.id} registers at "
                    f"{','.join(registered[0])}{registered[1]}"
                )
        if (
            isinstance(source, KubernetesSource)
            and source.cluster == target.cluster
            and source.namespace == target.namespace
        ):
            port = target.ingress.mesh_port if expected_port is None else expected_port
            if source.service != target.service or port != target.ingress.mesh_port:
                return (
                    f"{client.id} watches {source.cluster}/{source.namespace}/{source.service}:{port} "
                    f"but {server.id} serves {target.cluster}/{target.namespace}/{target.service}:"
                    f"{target.ingress.mesh_port}"
                )
    return None


def next_state(
    context: Context, build: RolloutBuild
) -> tuple[tuple[str, str] | None, State | None, tuple[WaveRevision, ...] | None]:
    """The next promotion (wave, revision), the state it leads to and its pins; Nones when every wave is current."""
    promotion = next_wave(build.state.revisions, context.head, lambda rev: spec_key(context, rev))
    if promotion is None:
        return None, None, None
    # Moving to the current commit: check the working tree, which a promotion requires clean (so equal), and
    # which a build before committing must already prove safe for the waves after the first.
    revision = WORKING_TREE if promotion[1] == context.head else promotion[1]
    revisions = with_pin(build.state.revisions, promotion[0], revision)
    return promotion, rollout_state(context, revisions), revisions


def check_rollout(context: Context, build: RolloutBuild) -> StatesReport:
    """Check the current state and the next promotion's; SpecError [rollout-unsafe] names each broken pair."""
    promotion, following, _ = next_state(context, build)
    report = check_states(build.state, following, promotion)
    if report.problems:
        raise SpecError([_diagnostic(context, report, problem) for problem in report.problems])
    return report


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
        span=_span(context, client, server),
        code="rollout-unsafe",
        message=f"{client.workload.service} → {server.workload.service}: {problem.detail} ({states}); {problem.fix}",
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


def _span(context: Context, client: Instance, server: Instance) -> Span:
    """The client's dependency entry in the head spec, else the client's or server's service file, else rollout.yaml."""
    head = compile_revision(context, WORKING_TREE)
    if head is not None:
        spec = head.spec
        service = spec.services.get(client.workload.service)
        if service is not None:
            for dep in service.dependencies:
                if dep.service == server.workload.service:
                    return dep.span
            return service.span
        other = spec.services.get(server.workload.service)
        if other is not None:
            return other.span
    return context.rollout.span
