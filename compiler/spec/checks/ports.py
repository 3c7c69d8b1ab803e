"""Port checks: local ports unique mesh-wide, and every port of one workload distinct."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from compiler.diagnostics import Diagnostic, Span, error, quote, some_of
from compiler.spec.model import Dependency, ServiceSpec, Spec

# How many other claimants of one local_port a message names before it counts the rest.
NAMED_CLAIMANTS = 4


def check_local_ports(spec: Spec) -> Iterator[Diagnostic]:
    """Every local_port is unique mesh-wide: a client binds the local ports of all its dependencies.

    A shared port is reported at every claim, each naming the others: meshc cannot tell which claim is new, and
    for one of them it is the port every client of that service already dials. Blaming one file (the one that
    sorts later, say) would as often send the owner of the established port to move it, breaking its clients.
    """
    claims: dict[int, list[ServiceSpec]] = {}
    for service in sorted(spec.services.values(), key=lambda s: s.file):
        claims.setdefault(service.local_port, []).append(service)
    shared = sorted((port, claimants) for port, claimants in claims.items() if len(claimants) > 1)
    taken = _ports_in_use(spec) if shared else set()
    for port, claimants in shared:
        free = _unused_after(port, taken)
        for service in claimants:
            others = [
                f"{quote(other.name)} ({spec.at(other.file, 'local_port')})"
                for other in claimants
                if other is not service
            ]
            yield error(
                spec.at(service.file, "local_port"),
                "duplicate-local-port",
                f"local_port {port} of service {quote(service.name)} is also the local_port of service"
                f"{'s' if len(others) > 1 else ''} {some_of(others, NAMED_CLAIMANTS)}; a local_port is unique "
                f"mesh-wide: the service whose clients already dial {port} keeps it, the other"
                f"{'s' if len(others) > 1 else ''} must pick an unused port{free}",
            )


def _ports_in_use(spec: Spec) -> set[int]:
    """Every port a workload of the mesh may bind: a suggested local_port must clash with none."""
    taken = {spec.mesh.sidecar.admin_port}
    for service in spec.services.values():
        taken |= {service.port, service.mesh_port, service.local_port}
    return taken


def _unused_after(port: int, taken: set[int]) -> str:
    """`, such as 7118`: the first port above `port` that nothing uses, or '' where there is none."""
    free = next((candidate for candidate in range(port + 1, 65536) if candidate not in taken), None)
    return "" if free is None else f", such as {free}"


@dataclass(frozen=True, kw_only=True, slots=True)
class _Claim:
    """One port a workload binds: its value, how widely it is shared (ADMIN, DEPENDENCY or OWN), where it is
    written, and which key of which file holds it (`server`: the dependency whose local_port it is)."""

    port: int
    shared: int
    span: Span
    key: str
    server: ServiceSpec | None = None


# Which claim of a clash is reported: the one the fewest others depend on, which its author can move alone.
# The admin port is mesh.yaml's, the same in every workload (ADMIN); a dependency's local_port is what every
# client of that dependency dials (DEPENDENCY); port and mesh_port are the service's own (OWN). So a
# dependency whose local_port is the service's port is reported at `port:`, whether the port was just edited
# or the dependency just added: moving the port is the fix either way, and the dependency entry holds no port
# to edit. Between the service's own two, at the one later in the file, the likelier edit (keys are written
# top-down, so the later one is more often the one just added), and the message says to change either.
ADMIN, DEPENDENCY, OWN = 2, 1, 0


def check_workload_ports(spec: Spec) -> Iterator[Diagnostic]:
    """Within one workload, the app port, mesh port, admin port and dependency local ports all differ."""
    admin = _Claim(
        port=spec.mesh.sidecar.admin_port,
        shared=ADMIN,
        span=spec.at(spec.mesh.file, "sidecar", "admin_port"),
        key="admin_port",
    )
    for service in spec.checked():
        # A dependency listed twice is reported by check_duplicate_dependency, not as a port clash.
        first_entries: dict[str, Dependency] = {}
        for dep in service.dependencies:
            first_entries.setdefault(dep.service, dep)
        servers = [
            (dep, server)
            for dep in first_entries.values()
            if (server := spec.services.get(dep.service)) is not None and server is not service
        ]
        ports = {admin.port, service.port, service.mesh_port, *(server.local_port for _, server in servers)}
        if len(ports) == 3 + len(servers):
            continue  # all distinct, as nearly always: no claim records (benchmark's 1,000 services: 14 -> 4 ms)
        claims = [
            admin,
            *(
                _Claim(port=getattr(service, key), shared=OWN, span=spec.at(service.file, key), key=key)
                for key in ("port", "mesh_port")
            ),
            *(
                _Claim(
                    port=server.local_port, shared=DEPENDENCY, span=dep.span, key="local_port", server=server
                )
                for dep, server in servers
            ),
        ]
        yield from _port_clashes(spec, service, claims)


def _port_clashes(spec: Spec, service: ServiceSpec, claims: Sequence[_Claim]) -> Iterator[Diagnostic]:
    """One finding per claim that must move: at each claim of a port but the one that stays (see ADMIN)."""
    by_port: dict[int, list[_Claim]] = {}
    for claim in claims:
        by_port.setdefault(claim.port, []).append(claim)
    for clashing in by_port.values():
        if len(clashing) < 2:
            continue
        stays, *moving = sorted(clashing, key=lambda c: (-c.shared, c.span.line, c.span.col))
        for claim in moving:
            if claim.shared == DEPENDENCY and stays.shared == DEPENDENCY:
                continue  # two dependencies share a local_port: check_local_ports reports it at both services
            fix = "change one of them" if claim.shared == stays.shared else _fix(claim)
            yield error(
                claim.span,
                "port-clash",
                f"{_subject(spec, service, claim)} is also {_noun(spec, stays)}; each port of a workload must "
                f"differ: {fix}",
            )


def _subject(spec: Spec, service: ServiceSpec, claim: _Claim) -> str:
    """A reported claim, as its message begins: `port 7200 of service 'billing'`."""
    if claim.server is None:
        return f"{claim.key} {claim.port} of service {quote(service.name)}"
    return f"local_port {claim.port} of dependency {quote(claim.server.name)} ({_where(spec, claim.server)})"


def _noun(spec: Spec, claim: _Claim) -> str:
    """The claim that stays, as a message names it: `the local_port of its dependency 'thumbnailer' (…)`."""
    if claim.shared == ADMIN:
        return "the Envoy admin port (mesh.yaml sidecar.admin_port)"
    if claim.server is None:
        return f"its {claim.key} (line {claim.span.line})"
    return f"the local_port of its dependency {quote(claim.server.name)} ({_where(spec, claim.server)})"


def _fix(claim: _Claim) -> str:
    """What to change where a claim clashes with one more widely shared."""
    return (
        f"change {claim.key}"
        if claim.server is None
        else f"give service {quote(claim.server.name)} another local_port"
    )


def _where(spec: Spec, server: ServiceSpec) -> str:
    """Where a dependency's local_port is written: `file:line:col`. Its file is among the documents whenever a
    client is checked (a partial build loads the dependencies of what it checks); the file name, should it not be."""
    return str(spec.at(server.file, "local_port")) if server.file in spec.documents else server.file
