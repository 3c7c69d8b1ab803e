"""Port checks: local ports unique mesh-wide, and every port of one workload distinct."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from compiler.diagnostics import Diagnostic, InternalError, Span, error, quote, some_of
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
    written, the key that holds it, and `owner`: the service whose file holds it (None for the admin port; for a
    dependency's local_port, the dependency)."""

    port: int
    shared: int
    span: Span
    key: str
    owner: ServiceSpec | None = None


# How widely a claim is shared. The admin port is mesh.yaml's, bound in every workload (ADMIN); a dependency's
# local_port is written in the dependency's file and bound in every client of it (DEPENDENCY); port and mesh_port
# are the service's own (OWN).
ADMIN, DEPENDENCY, OWN = 2, 1, 0


def check_workload_ports(spec: Spec) -> Iterator[Diagnostic]:
    """Within one workload, the app port, mesh port, admin port and dependency local ports all differ.

    A clash between the service's own port and mesh_port is one file's mistake, reported there. A clash with a
    shared claim (the admin port, a dependency's local_port) spans two files, and meshc cannot tell which side
    was edited; each is reported once however many workloads it meets in (the admin port meets a dependency's
    local_port in every client). Where the shared claim clashes with the ports of one service, as
    duplicate-local-port does, at both claims, each naming the other and saying which to move in either case.
    Where it clashes with the ports of several services, once, at the shared claim: one edit of a service file
    puts clashes in that one service's workload, so several services clashing means the shared claim is what
    changed (`admin_port: 18080`, every service's mesh_port), and one edit there fixes them all, where a report
    per service would send each owner to move a port that was fine.
    """
    admin = _Claim(
        port=spec.mesh.sidecar.admin_port,
        shared=ADMIN,
        span=spec.at(spec.mesh.file, "sidecar", "admin_port"),
        key="admin_port",
    )
    # Each shared claim met in a clash, by its place, with the claims clashing with it, each once.
    with_shared: dict[Span, tuple[_Claim, dict[Span, _Claim]]] = {}
    for service in spec.checked():
        claims = _workload_claims(spec, service, admin)
        for stays, moving in _clashes(claims):
            if moving.shared == stays.shared:
                yield _own_clash(service, moving, stays)
            else:
                with_shared.setdefault(stays.span, (stays, {}))[1].setdefault(moving.span, moving)
    admin_written = _admin_port_written(spec)
    for stays, others in with_shared.values():
        if stays.shared == ADMIN and not admin_written:
            yield from _default_admin_clashes(spec, stays, list(others.values()))
        else:
            yield from _shared_clash(spec, stays, list(others.values()))


def _workload_claims(spec: Spec, service: ServiceSpec, admin: _Claim) -> list[_Claim]:
    """Every port the workload of `service` binds; [] where they all differ, as nearly always."""
    # A dependency listed twice is reported by check_duplicate_dependency, not as a port clash.
    first_entries: dict[str, Dependency] = {}
    for dep in service.dependencies:
        first_entries.setdefault(dep.service, dep)
    servers = [
        server
        for dep in first_entries.values()
        if (server := spec.services.get(dep.service)) is not None and server is not service
    ]
    ports = {admin.port, service.port, service.mesh_port, *(server.local_port for server in servers)}
    if len(ports) == 3 + len(servers):
        return []  # all distinct: no claim records (benchmark's 1,000 services: 14 -> 4 ms)
    return [
        admin,
        *(
            _Claim(
                port=getattr(service, key),
                shared=OWN,
                span=spec.at(service.file, key),
                key=key,
                owner=service,
            )
            for key in ("port", "mesh_port")
        ),
        *(
            _Claim(
                port=server.local_port,
                shared=DEPENDENCY,
                span=_site(spec, server.file, "local_port"),
                key="local_port",
                owner=server,
            )
            for server in servers
        ),
    ]


def _clashes(claims: Sequence[_Claim]) -> Iterator[tuple[_Claim, _Claim]]:
    """(the claim that stays, a claim that must move) for each clash of one workload: the more widely shared
    claim stays; between the service's own two, the one earlier in the file (keys are written top-down, so the
    later one is more often the one just added, and the message says to change either)."""
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
            yield stays, claim


def _own_clash(service: ServiceSpec, claim: _Claim, stays: _Claim) -> Diagnostic:
    return error(
        claim.span,
        "port-clash",
        f"{claim.key} {claim.port} of service {quote(service.name)} is also its {stays.key} (line "
        f"{stays.span.line}); each port of a workload must differ: change one of them",
    )


def _shared_clash(spec: Spec, stays: _Claim, others: Sequence[_Claim]) -> Iterator[Diagnostic]:
    """A shared claim's clashes: once at it where they are several services', else at it and at each other claim
    (check_workload_ports says why)."""
    owners = sorted({_owner(claim).name for claim in others})
    free = _unused_after(stays.port, _ports_in_use(spec))
    if len(owners) > 1:
        yield error(
            stays.span,
            "port-clash",
            f"{_title(stays)} is also {_claims_of_many(stays, others)}; {_binding(stays)}: {_move(stays)}{free}",
        )
        return
    owner = _owner(others[0])
    advice = (
        f"each port of a workload must differ, and {_scope(stays)}, {_scope(others[0], others)}: "
        f"if {_in_use(stays)}, {_move(others[0], others)}; otherwise {_move(stays)}{free}"
    )
    named = " and ".join(f"{claim.key} ({claim.span})" for claim in others)
    relation = "its client" if stays.shared == DEPENDENCY else "service"
    yield error(
        stays.span,
        "port-clash",
        f"{_title(stays)} is also the {named} of {relation} {quote(owner.name)}; {advice}",
    )
    for claim in others:
        yield error(claim.span, "port-clash", f"{_title(claim)} is also {_noun(stays, claim)}; {advice}")


def _default_admin_clashes(spec: Spec, admin: _Claim, others: Sequence[_Claim]) -> Iterator[Diagnostic]:
    """Clashes with the admin port where mesh.yaml leaves it to its default: it is no edit of the user's and has no
    line to point at, so each claim is reported where it is written, to move."""
    for claim in others:
        yield error(
            claim.span,
            "port-clash",
            f"{_title(claim)} is also the Envoy admin port (mesh.yaml sidecar.admin_port, by default "
            f"{admin.port}), which every sidecar binds; each port of a workload must differ: {_move(claim)}",
        )


def _owner(claim: _Claim) -> ServiceSpec:
    if claim.owner is None:
        raise InternalError("the admin port clashes with itself")
    return claim.owner


def _title(claim: _Claim) -> str:
    """A claim, as a message begins: `port 7200 of service 'billing'`, `sidecar.admin_port 9901`."""
    if claim.shared == ADMIN:
        return f"sidecar.admin_port {claim.port}"
    return f"{claim.key} {claim.port} of service {quote(_owner(claim).name)}"


def _noun(stays: _Claim, claim: _Claim) -> str:
    """The shared claim, as the message at a claim clashing with it names it."""
    if stays.shared == ADMIN:
        return f"the Envoy admin port, sidecar.admin_port ({stays.span})"
    relation = "its dependency" if claim.shared == OWN else "service"
    return f"the local_port of {relation} {quote(_owner(stays).name)} ({stays.span})"


def _claims_of_many(stays: _Claim, others: Sequence[_Claim]) -> str:
    """The claims of several services clashing with `stays`, by key: `the mesh_port of services 'a' (…), 'b' (…)`."""
    parts = []
    for key in ("port", "mesh_port", "local_port"):
        named = [f"{quote(_owner(claim).name)} ({claim.span})" for claim in others if claim.key == key]
        if named:
            plural = "s" if len(named) > 1 else ""
            relation = f"its client{plural}" if stays.shared == DEPENDENCY else f"service{plural}"
            parts.append(f"the {key} of {relation} {some_of(named, NAMED_CLAIMANTS)}")
    return " and ".join(parts)


def _binding(stays: _Claim) -> str:
    """Why a shared claim must differ from the ports of every service it clashes with."""
    if stays.shared == ADMIN:
        return (
            "every sidecar binds the admin port beside its service's port and mesh_port and its dependencies' "
            "local_ports"
        )
    return (
        f"each client's sidecar binds the local_port of {quote(_owner(stays).name)} beside its own port and "
        "mesh_port"
    )


def _scope(claim: _Claim, claims: Sequence[_Claim] = ()) -> str:
    """Who binds or dials a claim (`claims`: the service's own claims clashing, to name their keys together)."""
    if claim.shared == ADMIN:
        return "every sidecar binds the admin port"
    if claim.shared == DEPENDENCY:
        return f"every client of {quote(_owner(claim).name)} dials its local_port"
    return f"only service {quote(_owner(claim).name)} binds its {_keys(claims or [claim])}"


def _in_use(stays: _Claim) -> str:
    """The condition under which a shared claim is the one already in use, and stays."""
    if stays.shared == ADMIN:
        return f"the sidecars already use {stays.port} as their admin port"
    return f"the clients of {quote(_owner(stays).name)} already dial {stays.port}"


def _move(claim: _Claim, claims: Sequence[_Claim] = ()) -> str:
    """What to change to move a claim (`claims`: the service's own claims clashing, to name their keys together)."""
    if claim.shared == ADMIN:
        return "change sidecar.admin_port to an unused port"
    if claim.shared == DEPENDENCY:
        return f"give {quote(_owner(claim).name)} another local_port"
    return f"change the {_keys(claims or [claim])} of service {quote(_owner(claim).name)}"


def _keys(claims: Sequence[_Claim]) -> str:
    return " and ".join(claim.key for claim in claims)


def _admin_port_written(spec: Spec) -> bool:
    sidecar: Any = spec.documents[spec.mesh.file].data.get("sidecar")
    return isinstance(sidecar, Mapping) and "admin_port" in sidecar


def _site(spec: Spec, file: str, key: str) -> Span:
    """Where `key` is written in `file`. The file is among the documents whenever a client of its service is checked
    (a partial build loads the dependencies of what it checks); the file alone, should it not be."""
    return spec.at(file, key) if file in spec.documents else Span(file=file)
