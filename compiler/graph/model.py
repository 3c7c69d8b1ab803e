"""The picture of a mesh as data: boxes grouped by datacenter and platform, and the calls between them.

Built from the lowered IR (the same model the artifacts come from): one box per workload, one
edge per discovery route (a client workload and a source its sidecar discovers, with the route's
locality, protocol and priority). When that is too much to draw legibly, the same routes are
collapsed to one box per platform group (a datacenter's VM pools, a cluster), then to one box per
datacenter, and the graph says so in its note. Renderers (`dot`, `mermaid`, `html`) only format it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from compiler.diagnostics import unknown_service
from compiler.ir.model import Egress, Mesh, Source, Workload

WORKLOADS, PLATFORMS, DATACENTERS = "workloads", "platforms", "datacenters"
PRIMARY, FALLBACK, AGGREGATE = "primary", "fallback", "aggregate"


@dataclass(frozen=True, kw_only=True, slots=True)
class Limits:
    """How much one picture may hold before it is collapsed to a coarser level."""

    max_nodes: int = 120
    max_edges: int = 400


@dataclass(frozen=True, kw_only=True, slots=True)
class Node:
    """One box: a workload, or a collapsed group of workloads."""

    id: str
    label: str
    lines: tuple[str, ...]
    services: tuple[str, ...]  # the services drawn in this box, sorted
    restart_sensitive: bool  # the box holds a restart-sensitive service
    tooltip: str
    workload: bool = False  # one workload (its id is the workload id), not a collapsed group


@dataclass(frozen=True, kw_only=True, slots=True)
class Group:
    """A frame around boxes: a datacenter, or a platform group (VM pools, a cluster) inside one."""

    id: str
    label: str
    nodes: tuple[str, ...]
    groups: tuple[Group, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class Edge:
    """Calls from one box to another: a single route, or a count of collapsed routes."""

    source: str
    target: str
    label: str
    style: str  # PRIMARY (priority 0), FALLBACK (a failover priority > 0) or AGGREGATE
    protocol: str = ""  # of a single route; "" for an aggregate
    priority: int = 0  # of a single route
    calls: int = 1


@dataclass(frozen=True, kw_only=True, slots=True)
class Graph:
    """Everything a renderer draws, in drawing order."""

    mesh: str
    title: str
    note: str  # why the picture is collapsed, or ""
    level: str  # WORKLOADS, PLATFORMS or DATACENTERS
    groups: tuple[Group, ...]
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class Route:
    """A client workload's sidecar reaching one workload of a dependency."""

    client: Workload
    server: str  # workload id
    egress: Egress
    priority: int


# ---------------------------------------------------------------- selection


def build_graph(mesh: Mesh, services: Sequence[str] = (), depth: int = 1, limits: Limits = Limits()) -> Graph:
    """The picture of the whole mesh, or of the neighbourhood of `services` (`depth` hops both ways)."""
    selected = neighbourhood(mesh, services, depth) if services else {w.service for w in mesh.workloads}
    workloads = tuple(w for w in mesh.workloads if w.service in selected)
    ids = {w.id for w in workloads}
    routes = tuple(r for r in _routes(workloads) if r.server in ids)
    title = _title(mesh, services, depth, selected, workloads)
    for level, draw in _LEVELS:  # noqa: B007 - the level that fits is read after the loop
        groups, nodes, edges = draw(mesh, workloads, routes)
        if len(nodes) <= limits.max_nodes and len(edges) <= limits.max_edges:
            break
    note = "" if level == WORKLOADS else _collapse_note(level, workloads, routes)
    return Graph(mesh=mesh.name, title=title, note=note, level=level, groups=groups, nodes=nodes, edges=edges)


def neighbourhood(mesh: Mesh, services: Sequence[str], depth: int) -> set[str]:
    """The services, their dependencies and their callers, following each direction up to `depth` hops."""
    calls = service_calls(mesh)
    known = {w.service for w in mesh.workloads}
    for service in services:
        if service not in known:
            raise unknown_service(service, known)
    callers: dict[str, set[str]] = {}
    for client, servers in calls.items():
        for server in servers:
            callers.setdefault(server, set()).add(client)
    return _reach(services, calls, depth) | _reach(services, callers, depth)


def _reach(start: Iterable[str], step: Mapping[str, Iterable[str]], depth: int) -> set[str]:
    seen = set(start)
    frontier = set(seen)
    for _ in range(depth):
        frontier = {n for s in frontier for n in step.get(s, ())} - seen
        seen |= frontier
    return seen


def service_calls(mesh: Mesh) -> dict[str, set[str]]:
    """Service -> the services it depends on."""
    calls: dict[str, set[str]] = {}
    for workload in mesh.workloads:
        calls.setdefault(workload.service, set()).update(e.service for e in workload.egress)
    return calls


def _routes(workloads: Iterable[Workload]) -> Iterable[Route]:
    for workload in workloads:
        for egress in workload.egress:
            for source in egress.sources:
                yield Route(
                    client=workload,
                    server=source_workload(egress.service, source),
                    egress=egress,
                    priority=source.priority,
                )


def source_workload(service: str, source: Source) -> str:
    """The id of the workload a discovery source finds: a VM pool or a cluster deployment."""
    if source.kind == "zookeeper":
        return f"vm/{service}/{source.datacenter}"
    return f"k8s/{source.cluster}/{source.namespace}/{source.service}"


def _title(
    mesh: Mesh, services: Sequence[str], depth: int, selected: set[str], workloads: Sequence[Workload]
) -> str:
    datacenters = len({w.datacenter for w in workloads})
    counts = (
        f"{_n(len(selected), 'service')}, {_n(len(workloads), 'workload')} in {_n(datacenters, 'datacenter')}"
    )
    if not services:
        return f"mesh {mesh.name}: {counts}"
    hops = f"{depth} hop{'s' if depth != 1 else ''}"
    return f"mesh {mesh.name}: {', '.join(services)} with callers and dependencies ({hops}): {counts}"


def _collapse_note(level: str, workloads: Sequence[Workload], routes: Sequence[Route]) -> str:
    unit = "platform group (VM pools, clusters)" if level == PLATFORMS else "datacenter"
    return (
        f"{_n(len(workloads), 'workload')} and {_n(len(routes), 'route')} are too many to draw one by one: "
        f"collapsed to one box per {unit}; `meshc graph SERVICE` draws a service's neighbourhood"
    )


def _n(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'s' if count != 1 else ''}"


# ---------------------------------------------------------------- levels

Drawn = tuple[tuple[Group, ...], tuple[Node, ...], tuple[Edge, ...]]


def _workload_level(mesh: Mesh, workloads: Sequence[Workload], routes: Sequence[Route]) -> Drawn:
    nodes = tuple(_workload_node(w) for w in sorted(workloads, key=lambda w: w.id))
    edges = tuple(_route_edge(r) for r in sorted(routes, key=lambda r: (r.client.id, r.server)))
    groups = _datacenter_groups(mesh, {w.id: w for w in workloads}, lambda w: w.id, platforms=True)
    return groups, nodes, edges


def _workload_node(workload: Workload) -> Node:
    lines = []
    if workload.platform == "k8s" and workload.namespace != workload.service:
        lines.append(f"namespace {workload.namespace}")
    if workload.restart_sensitive:
        lines.append("restart-sensitive")
    about = f"{workload.id}: owner {workload.owner}, {workload.ingress.protocol}"
    return Node(
        id=workload.id,
        label=workload.service,
        lines=tuple(lines),
        services=(workload.service,),
        restart_sensitive=workload.restart_sensitive,
        tooltip=about + (", restart-sensitive" if workload.restart_sensitive else ""),
        workload=True,
    )


def _route_edge(route: Route) -> Edge:
    egress = route.egress
    where = egress.locality if route.priority == 0 else f"{egress.locality} p{route.priority}"
    return Edge(
        source=route.client.id,
        target=route.server,
        label=f"{where} · {egress.protocol}",
        protocol=egress.protocol,
        priority=route.priority,
        style=PRIMARY if route.priority == 0 else FALLBACK,
    )


def _platform_key(workload: Workload) -> str:
    return f"vm@{workload.datacenter}" if workload.platform == "vm" else f"k8s@{workload.cluster}"


def _platform_label(workload: Workload) -> str:
    return "VM pools" if workload.platform == "vm" else f"cluster {workload.cluster}"


def _platform_level(mesh: Mesh, workloads: Sequence[Workload], routes: Sequence[Route]) -> Drawn:
    members = _members(workloads, _platform_key)
    nodes = tuple(_group_node(key, _platform_label(ws[0]), ws) for key, ws in sorted(members.items()))
    edges = _aggregate(routes, {w.id: _platform_key(w) for w in workloads})
    groups = _datacenter_groups(
        mesh, {key: ws[0] for key, ws in members.items()}, lambda w: _platform_key(w), platforms=False
    )
    return groups, nodes, edges


def _datacenter_level(mesh: Mesh, workloads: Sequence[Workload], routes: Sequence[Route]) -> Drawn:
    members = _members(workloads, lambda w: f"dc@{w.datacenter}")
    nodes = tuple(_datacenter_node(mesh, key, ws) for key, ws in sorted(members.items()))
    edges = _aggregate(routes, {w.id: f"dc@{w.datacenter}" for w in workloads})
    return (), nodes, edges


def _members(workloads: Iterable[Workload], key: Callable[[Workload], str]) -> dict[str, list[Workload]]:
    members: dict[str, list[Workload]] = {}
    for workload in sorted(workloads, key=lambda w: w.id):
        members.setdefault(key(workload), []).append(workload)
    return members


def _group_node(key: str, label: str, workloads: Sequence[Workload]) -> Node:
    services = tuple(sorted({w.service for w in workloads}))
    sensitive = sorted({w.service for w in workloads if w.restart_sensitive})
    lines = [_n(len(workloads), "workload")] + (
        [f"{_n(len(sensitive), 'restart-sensitive service')}"] if sensitive else []
    )
    return Node(
        id=key,
        label=label,
        lines=tuple(lines),
        services=services,
        restart_sensitive=bool(sensitive),
        tooltip=(
            f"{label} in {workloads[0].datacenter}: "
            f"{_n(len(services), 'service')}, {_n(len(workloads), 'workload')}"
        ),
    )


def _datacenter_node(mesh: Mesh, key: str, workloads: Sequence[Workload]) -> Node:
    datacenter = workloads[0].datacenter
    platforms = Counter(_platform_label(w) for w in workloads)
    node = _group_node(key, f"{datacenter} ({mesh.datacenters[datacenter].region})", workloads)
    lines = (
        tuple(f"{label}: {_n(count, 'workload')}" for label, count in sorted(platforms.items()))
        + node.lines[1:]
    )
    return Node(
        id=node.id,
        label=node.label,
        lines=lines,
        services=node.services,
        restart_sensitive=node.restart_sensitive,
        tooltip=f"{node.label}: {_n(len(node.services), 'service')}, {_n(len(workloads), 'workload')}",
    )


def _aggregate(routes: Iterable[Route], box: Mapping[str, str]) -> tuple[Edge, ...]:
    localities: dict[tuple[str, str], Counter[str]] = {}
    protocols: dict[tuple[str, str], Counter[str]] = {}
    for route in routes:
        pair = (box[route.client.id], box[route.server])
        localities.setdefault(pair, Counter())[route.egress.locality] += 1
        protocols.setdefault(pair, Counter())[route.egress.protocol] += 1
    return tuple(
        Edge(
            source=s,
            target=t,
            label=_counts_label(localities[(s, t)], protocols[(s, t)]),
            style=AGGREGATE,
            calls=sum(localities[(s, t)].values()),
        )
        for s, t in sorted(localities)
    )


def _counts_label(localities: Counter[str], protocols: Counter[str]) -> str:
    def mix(counter: Counter[str]) -> str:
        return ", ".join(
            f"{count:,} {name}" for name, count in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))
        )

    return f"{_n(sum(localities.values()), 'route')}: {mix(localities)}; {mix(protocols)}"


def _datacenter_groups(
    mesh: Mesh, boxes: Mapping[str, Workload], key: Callable[[Workload], str], platforms: bool
) -> tuple[Group, ...]:
    """Datacenter frames (sorted), each holding its boxes, inside platform frames when `platforms`."""
    by_dc: dict[str, dict[str, list[str]]] = {}
    labels: dict[str, str] = {}
    for _, workload in sorted(boxes.items()):
        platform = _platform_key(workload)
        labels[platform] = _platform_label(workload)
        by_dc.setdefault(workload.datacenter, {}).setdefault(platform, []).append(key(workload))
    groups = []
    for dc, members in sorted(by_dc.items()):
        label = f"{dc} ({mesh.datacenters[dc].region})"
        if platforms:
            inner = tuple(
                Group(id=p, label=labels[p], nodes=tuple(ids)) for p, ids in sorted(members.items())
            )
            groups.append(Group(id=f"dc@{dc}", label=label, nodes=(), groups=inner))
        else:
            groups.append(
                Group(
                    id=f"dc@{dc}",
                    label=label,
                    nodes=tuple(sorted(i for ids in members.values() for i in ids)),
                )
            )
    return tuple(groups)


_LEVELS: tuple[tuple[str, Callable[[Mesh, Sequence[Workload], Sequence[Route]], Drawn]], ...] = (
    (WORKLOADS, _workload_level),
    (PLATFORMS, _platform_level),
    (DATACENTERS, _datacenter_level),
)
