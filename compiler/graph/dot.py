"""Graphviz: a Graph as DOT text, and SVG from the real `dot` binary."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator

from compiler.diagnostics import EnvironmentFailure, InternalError
from compiler.graph.model import AGGREGATE, FALLBACK, WORKLOADS, Edge, Graph, Group, Node

FONT = "DejaVu Sans"  # Debian's default font: Graphviz measures text with it, Chromium draws with it
EDGE_COLORS = {"http": "#1f6feb", "grpc": "#8250df", "tcp": "#57606a"}
RESTART_COLOR = "#bc4c00"
# The key printed under the title, since an SVG has no legend of its own.
KEY = {
    WORKLOADS: "edges: solid = priority-0 route, dashed pN = failover route at priority N; "
    "blue http, purple grpc, grey tcp; double orange border = restart-sensitive"
}
_UNSAFE = re.compile(r"[^A-Za-z0-9]")


def element_id(node_id: str) -> str:
    """The SVG element id of a box: its node id with every character but letters and digits as `_xx` (hex), so
    ids stay distinct and Graphviz has nothing to escape (it writes `-` as `&#45;`)."""
    return "n_" + _UNSAFE.sub(lambda m: f"_{ord(m.group()):02x}", node_id)


def render_dot(graph: Graph) -> str:
    """The graph as DOT text: datacenter frames around platform frames around boxes."""
    return "\n".join(_dot_lines(graph)) + "\n"


def _dot_lines(graph: Graph) -> Iterator[str]:
    yield f"digraph {_quote(graph.mesh)} {{"
    label = "".join(
        _escape(line) + "\\l" for line in (graph.title, graph.note or KEY.get(graph.level, "")) if line
    )  # \l: left-aligned
    yield (
        f'  graph [rankdir=LR, newrank=true, nodesep=0.25, ranksep=1.1, fontname="{FONT}", fontsize=12, '
        f'labelloc=t, labeljust=l, label="{label}"];'
    )
    yield (
        '  node [shape=box, style="rounded,filled", fillcolor="#f6f8fa", color="#57606a", '
        f'fontname="{FONT}", fontsize=10];'
    )
    yield f'  edge [fontname="{FONT}", fontsize=7, arrowsize=0.6];'
    nodes = {n.id: n for n in graph.nodes}
    framed: set[str] = set()
    for group in graph.groups:
        yield from _group_lines(group, nodes, framed, "  ")
    for node in graph.nodes:
        if node.id not in framed:
            yield "  " + _node_line(node)
    for edge in graph.edges:
        yield "  " + _edge_line(edge)
    yield "}"


def _group_lines(group: Group, nodes: dict[str, Node], framed: set[str], indent: str) -> Iterator[str]:
    yield f"{indent}subgraph {_quote('cluster_' + group.id)} {{"
    yield f'{indent}  graph [label="{_escape(group.label)}", style="rounded", color="#d0d7de", fontsize=11];'
    for inner in group.groups:
        yield from _group_lines(inner, nodes, framed, indent + "  ")
    for node_id in group.nodes:
        framed.add(node_id)
        yield indent + "  " + _node_line(nodes[node_id])
    yield f"{indent}}}"


def _node_line(node: Node) -> str:
    label = "\\n".join(_escape(text) for text in (node.label, *node.lines))
    attrs = [f'label="{label}"', f'id="{element_id(node.id)}"', f'tooltip="{_escape(node.tooltip)}"']
    if node.restart_sensitive:
        attrs += [
            "peripheries=2",
            f'color="{RESTART_COLOR}"',
            'fillcolor="#fff1e5"',
            'class="restart-sensitive"',
        ]
    return f"{_quote(node.id)} [{', '.join(attrs)}];"


def _edge_line(edge: Edge) -> str:
    color = EDGE_COLORS.get(edge.protocol, "#57606a")
    attrs = [
        f'label="{_escape(edge.label)}"',
        f'color="{color}"',
        f'fontcolor="{color}"',
        f'tooltip="{_escape(edge.label)}"',
    ]
    if edge.style == FALLBACK:
        # Fallback routes outnumber primary ones; a short label keeps the picture readable, the tooltip says all.
        attrs[0] = f'label="p{edge.priority}"'
        attrs += ['style="dashed"', "penwidth=0.7"]
    elif edge.style == AGGREGATE:
        attrs = [
            f'label="{_escape(edge.label)}"',
            'color="#57606a"',
            f"penwidth={min(1 + edge.calls / 500, 4):.1f}",
        ]
    return f"{_quote(edge.source)} -> {_quote(edge.target)} [{', '.join(attrs)}];"


def _quote(text: str) -> str:
    return f'"{_escape(text)}"'


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render_svg(dot_text: str, dot_binary: str | None = None) -> str:
    """SVG laid out by Graphviz `dot`; raises EnvironmentFailure without it, InternalError if it complains."""
    binary = dot_binary or shutil.which("dot")
    if binary is None:
        raise EnvironmentFailure("dot", "Graphviz is not installed (Debian package graphviz)")
    proc = subprocess.run([binary, "-Tsvg"], input=dot_text.encode(), capture_output=True, check=False)
    if proc.returncode != 0 or proc.stderr:
        # meshc wrote the DOT, so anything Graphviz objects to is meshc's bug, not the spec's.
        raise InternalError(
            f"graphviz dot exited {proc.returncode}: {proc.stderr.decode(errors='replace').strip()}"
        )
    return proc.stdout.decode()
