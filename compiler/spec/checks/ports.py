"""Port checks: local ports unique mesh-wide, and every port of one workload distinct."""

from __future__ import annotations

from collections.abc import Iterator

from compiler.diagnostics import Diagnostic, Span, error, quote
from compiler.spec.model import Dependency, ServiceSpec, Spec


def check_local_ports(spec: Spec) -> Iterator[Diagnostic]:
    """Every local_port is unique mesh-wide: a client binds the local ports of all its dependencies."""
    owners: dict[int, ServiceSpec] = {}
    for service in sorted(spec.services.values(), key=lambda s: s.file):
        first = owners.setdefault(service.local_port, service)
        if first is not service:
            yield error(
                spec.at(service.file, "local_port"),
                "duplicate-local-port",
                f"local_port {service.local_port} is already used by service {quote(first.name)} "
                f"({first.file}); pick an unused port",
            )


def check_workload_ports(spec: Spec) -> Iterator[Diagnostic]:
    """Within one workload, the app port, mesh port, admin port and dependency local ports all differ."""
    admin = spec.mesh.sidecar.admin_port
    for service in spec.checked():
        # The admin port comes first, so a clash with it is reported at the service's own port.
        claims: list[tuple[int, str, Span]] = [
            (
                admin,
                "the Envoy admin port (mesh.yaml sidecar.admin_port)",
                spec.at(spec.mesh.file, "sidecar", "admin_port"),
            ),
            (service.port, "port", spec.at(service.file, "port")),
            (service.mesh_port, "mesh_port", spec.at(service.file, "mesh_port")),
        ]
        # A dependency listed twice is reported by check_duplicate_dependency, not as a port clash.
        first_entries: dict[str, Dependency] = {}
        for dep in service.dependencies:
            first_entries.setdefault(dep.service, dep)
        for dep in first_entries.values():
            server = spec.services.get(dep.service)
            if server is not None and server is not service:
                claims.append((server.local_port, f"local_port of dependency {quote(server.name)}", dep.span))
        yield from _port_clashes(service, claims)


def _port_clashes(service: ServiceSpec, claims: list[tuple[int, str, Span]]) -> Iterator[Diagnostic]:
    first: dict[int, str] = {}
    for port, what, span in claims:
        if port in first:
            yield error(
                span,
                "port-clash",
                f"{what} {port} of service {quote(service.name)} clashes with {first[port]}; every port of a "
                "workload must differ",
            )
        else:
            first[port] = what
