"""The mesh graph as one self-contained HTML page: Graphviz's SVG inline, `explain` details on hover and click."""

from __future__ import annotations

from compiler.commands.explain import explain, format_explain
from compiler.graph.dot import EDGE_COLORS, RESTART_COLOR, element_id
from compiler.graph.model import WORKLOADS, Graph, Node
from compiler.graph.page import Detail, render_page
from compiler.ir.model import Mesh

LEGEND = (
    (EDGE_COLORS["http"], "http call"),
    (EDGE_COLORS["grpc"], "grpc call"),
    (EDGE_COLORS["tcp"], "tcp call"),
    (RESTART_COLOR, "restart-sensitive service (double border)"),
)
COLLAPSED_HELP = (
    "Boxes are groups of workloads; an edge counts the routes between two boxes, by locality and protocol."
)
HELP = (
    "Boxes are workloads (a VM pool or a cluster deployment), framed by datacenter and platform. Solid edges are a "
    "client's priority-0 routes, dashed ones the failover routes it falls back to (p1, p2: by priority)."
)
MAX_LISTED_SERVICES = 200  # a collapsed box's panel names at most this many services


def render_html(mesh: Mesh, graph: Graph, svg: str) -> str:
    """The page for `graph`, whose SVG Graphviz laid out; `mesh` supplies each service's explain details."""
    return render_page(
        title=graph.title,
        notes=[graph.note] if graph.note else [],
        figure_svg=svg,
        details=node_details(mesh, graph),
        legend=LEGEND,
        help_text=HELP if graph.level == WORKLOADS else COLLAPSED_HELP,
    )


def node_details(mesh: Mesh, graph: Graph) -> dict[str, Detail]:
    """Per SVG element id: the explain report of a workload's service, or what a collapsed box holds."""
    explained: dict[str, str] = {}
    details = {}
    for node in graph.nodes:
        if node.workload:
            service = node.services[0]
            if service not in explained:
                explained[service] = format_explain(explain(mesh, service))
            details[element_id(node.id)] = Detail(title=node.id, text=explained[service])
        else:
            details[element_id(node.id)] = Detail(title=node.label, text=_group_text(node))
    return details


def _group_text(node: Node) -> str:
    listed = node.services[:MAX_LISTED_SERVICES]
    more = len(node.services) - len(listed)
    lines = [*node.lines, "", f"services ({len(node.services)}):", *(f"  {s}" for s in listed)]
    if more:
        lines.append(f"  … and {more} more; `meshc graph SERVICE` draws one service's neighbourhood")
    return "\n".join(lines)
