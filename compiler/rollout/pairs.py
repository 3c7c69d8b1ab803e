"""The checks of one client→server pair, for a client instance and a server instance that discovery connects.

In every combination of their versions (current or next rendering):

- the server admits the client's SPIFFE identity;
- the client expects the identity the server presents;
- both speak the same protocol;
- the client watches where the server registers (ZooKeeper ensemble and path; cluster, namespace,
  service and port);
- a `local` dependency keeps a server in the client's datacenter.

Discovery connects a client to the server instances of the datacenter (ZooKeeper) or the cluster (Kubernetes) it
watches, whatever path or namespace each registers under: a service runs in one namespace per cluster, so a server
instance in another namespace of a watched cluster is that placement moved, which the client no longer finds.

A client instance whose next rendering drops the dependency is *contracting* that edge: its old
rendering may meet a server that no longer admits it, which is the contract step, not a failure.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass

from compiler.ir.model import Egress, KubernetesSource, Mesh, Workload, ZookeeperSource

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
    missing: str | None = (
        None  # the state (CURRENT or NEXT) in which no server is there; `server` is then any instance of it
    )
    # the service the client needs (where no instance of it is anywhere, `server` stands in for it: the client)
    service: str = ""

    @property
    def server_service(self) -> str:
        """The service of the server side: the one the client needs."""
        return self.service or self.server.workload.service


@dataclass(frozen=True, kw_only=True, slots=True)
class Contraction:
    """An edge the next promotion removes: the server stops admitting a client whose next rendering no longer
    calls it."""

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
        "a moved identity or trust-domain change cannot go wave by wave: split it (present both, then drop the old) "
        "or order the waves so client and server move together"
    ),
    "protocol": (
        "split the change: serve the new protocol beside the old one (a new service or port) until every client "
        "wave has moved, or order the waves so the server moves with its clients"
    ),
    "discovery": (
        "split the change: register at the new location beside the old one until every wave watches it, "
        "and remove a service only after no wave calls it (or order the waves so the server comes first)"
    ),
    "new-server": (
        "split the change: add the service alone, promote it to every wave that runs its targets, then add the "
        "dependency (or order the waves so the server comes first)"
    ),
    "namespace": (
        "split the change: serve both placements (a service runs in one namespace per cluster, so the new "
        "namespace as a new service beside the old one), move every client wave to it, then drop the old"
    ),
    "local": (
        "keep a server in the client's datacenter until the last wave has the change, "
        "or order the waves so clients move first"
    ),
}


def affected_clients(versions: Mapping[str, list[Instance | None]], moving: Collection[str]) -> set[str]:
    """The clients whose pairs can differ between two states, given the `moving` targets (those that change): the
    moving ones, and every caller of a service one of them serves (its server moves, or where the client reads the
    server's port from does). Checking only these is checking every pair that can fail."""
    services = {o.workload.service for t in moving for o in versions[t] if o is not None}
    return {
        target
        for target, options in versions.items()
        if target in moving
        or any(e.service in services for o in options if o is not None for e in o.workload.egress)
    }


def location(workload: Workload) -> tuple[str, ...]:
    """Where discovery finds a server instance: its service in a datacenter's ZooKeeper, or in a cluster.

    Not the path or namespace: a client watching the placement at another one is a broken pair, not no pair."""
    if workload.platform == "vm":
        return ("zk", workload.service, workload.datacenter)
    return ("k8s", workload.service, workload.cluster or "")


def _located(versions: Mapping[str, list[Instance | None]]) -> dict[tuple[str, ...], list[str]]:
    """Each location (`location`) -> the ids of the instances found there in some version, in id order."""
    located: dict[tuple[str, ...], list[str]] = {}
    for key, options in versions.items():
        for option in options:
            if option is not None:
                where = located.setdefault(location(option.workload), [])
                if key not in where:
                    where.append(key)
    return located


def _aims(edge: Egress) -> Iterator[tuple[str, ...]]:
    """The locations an edge's discovery sources watch, in location's terms."""
    for source in edge.sources:
        if isinstance(source, ZookeeperSource):
            yield ("zk", edge.service, source.datacenter)
        else:
            yield ("k8s", edge.service, source.cluster)


class PairChecker:
    """Runs the pair checks over every client version, its edges, and the server instances discovery connects."""

    def __init__(
        self, versions: Mapping[str, list[Instance | None]], newest: frozenset[str] = frozenset()
    ) -> None:
        self.versions = versions
        self.located = _located(versions)
        self.newest = (
            newest  # the revisions of the first wave, in each state: where a new service appears first
        )
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

    def run(self, promotion: tuple[str, str] | None, clients: Collection[str] | None = None) -> StatesReport:
        """Check every pair (only those of the `clients` given: the others are known to be consistent)."""
        for client_id, options in self.versions.items():
            if clients is not None and client_id not in clients:
                continue
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
        moved = _namespace_mismatch(client, edge, server)
        if moved:
            # the client never finds this server, so what the other checks would find between them is moot
            self._problem(client, server, "namespace", moved)
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
        there_next = any(o is not None and o.state == NEXT for s in servers for o in self.versions[s])
        detail = f"{client.id} needs {edge.service} {where}, and " + _absence(
            somewhere, there_now, there_next
        )
        check = "local" if edge.locality == "local" else "discovery"
        if check == "discovery" and self._new_service(client, edge.service):
            check = "new-server"
            detail = (
                f"{client.id} needs {edge.service} {where}, and {edge.service} is new: the waves of its targets "
                "still run revisions without it"
            )
        self._problem(
            client,
            somewhere or client,
            check,
            detail,
            missing=NEXT if there_now else CURRENT,
            service=edge.service,
        )

    def _new_service(self, client: Instance, service: str) -> bool:
        """Whether `service` is new where `client` misses it: the client runs the newest revision (the first
        wave's), which has the service, while the waves of its targets run older ones. (A client of an older
        revision that misses a server calls a service the newest revision removed or moved.)"""
        return client.revision in self.newest and any(w.service == service for w in client.mesh.workloads)

    def _problem(
        self,
        client: Instance,
        server: Instance,
        check: str,
        detail: str,
        missing: str | None = None,
        service: str = "",
    ) -> None:
        key = (
            client.workload.service,
            service or server.workload.service,
            check,
            f"{client.state}/{server.state}",
        )
        self.problems.setdefault(
            key,
            Problem(
                client=client,
                server=server,
                check=check,
                detail=detail,
                fix=FIXES[check],
                missing=missing,
                service=service,
            ),
        )


def _absence(somewhere: Instance | None, before: bool, after: bool) -> str:
    """Why no server instance the client watches is there in every state, in words."""
    if somewhere is None:
        return "no server is there"
    if before and after:  # the targets there before and after differ: a placement moved, a target replaced
        return "every server there is absent in some state: the old can leave before the new come up"
    return "every server there is absent in some state: " + (
        "it is gone after" if before else "it is not there before"
    )


def _location_mismatch(
    client: Instance, edge: Egress, server: Instance, expected_port: int | None
) -> str | None:
    """Where the client watches vs where the server registers, for the source aimed at this server (None if
    they agree)."""
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
                    f"but {server.id} serves "
                    f"{target.cluster}/{target.namespace}/{target.service}:{target.ingress.mesh_port}"
                )
    return None


def _namespace_mismatch(client: Instance, edge: Egress, server: Instance) -> str | None:
    """The namespace the client watches in the server's cluster vs the one the server runs in (None if they agree,
    or if the client watches no namespace there)."""
    target = server.workload
    for source in edge.sources:
        if (
            isinstance(source, KubernetesSource)
            and source.cluster == target.cluster
            and source.namespace != target.namespace
        ):
            return (
                f"{client.id} watches {source.cluster}/{source.namespace}/{source.service} "
                f"but {server.id} registers in {target.cluster}/{target.namespace}/{target.service}"
            )
    return None
