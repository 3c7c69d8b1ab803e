"""Mermaid flowcharts: a Graph as GitHub renders it in Markdown, and the escaping every Mermaid text needs."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from compiler.graph.dot import EDGE_COLORS, RESTART_COLOR
from compiler.graph.model import AGGREGATE, FALLBACK, Graph, Group, Node

_ENTITIES = {"&": "#amp;", '"': "#quot;", "<": "#lt;", ">": "#gt;", "#": "#35;", "`": "#96;"}


def text(value: str) -> str:
    """A string safe inside a quoted Mermaid label: markup characters as Mermaid entity codes."""
    return "".join(_ENTITIES.get(ch, ch) for ch in value)


def frontmatter_title(title: str) -> str:
    """The YAML front matter that titles a Mermaid diagram (a double-quoted YAML string)."""
    escaped = title.replace("\\", "\\\\").replace('"', '\\"')
    return f'---\ntitle: "{escaped}"\n---\n'


def render_mermaid(graph: Graph) -> str:
    """The graph as a Mermaid flowchart, left to right, with datacenter and platform subgraphs."""
    ids = {node.id: f"n{index}" for index, node in enumerate(graph.nodes)}
    return frontmatter_title(graph.title) + "\n".join(_lines(graph, ids)) + "\n"


def _lines(graph: Graph, ids: Mapping[str, str]) -> Iterator[str]:
    yield "flowchart LR"
    yield f"  classDef restart stroke:{RESTART_COLOR},stroke-width:3px,fill:#fff1e5"
    if graph.note:
        yield f'  note["{text(graph.note)}"]'
    nodes = {n.id: n for n in graph.nodes}
    framed: set[str] = set()
    group_ids = _group_ids(graph.groups)
    for group in graph.groups:
        yield from _group(group, nodes, ids, group_ids, framed, "  ")
    for node in graph.nodes:
        if node.id not in framed:
            yield "  " + _node(ids[node.id], node.label, node.lines, node.restart_sensitive)
    for index, edge in enumerate(graph.edges):
        arrow = "-.->" if edge.style == FALLBACK else "-->"
        yield f'  {ids[edge.source]} {arrow}|"{text(edge.label)}"| {ids[edge.target]}'
        if edge.style != AGGREGATE:
            yield f"  linkStyle {index} stroke:{EDGE_COLORS.get(edge.protocol, '#57606a')}"


def _group_ids(groups: tuple[Group, ...]) -> dict[str, str]:
    ids: dict[str, str] = {}

    def walk(items: tuple[Group, ...]) -> None:
        for group in items:
            ids[group.id] = f"g{len(ids)}"
            walk(group.groups)

    walk(groups)
    return ids


def _group(
    group: Group,
    nodes: Mapping[str, Node],
    ids: Mapping[str, str],
    group_ids: Mapping[str, str],
    framed: set[str],
    indent: str,
) -> Iterator[str]:
    yield f'{indent}subgraph {group_ids[group.id]}["{text(group.label)}"]'
    for inner in group.groups:
        yield from _group(inner, nodes, ids, group_ids, framed, indent + "  ")
    for node_id in group.nodes:
        framed.add(node_id)
        node = nodes[node_id]
        yield indent + "  " + _node(ids[node_id], node.label, node.lines, node.restart_sensitive)
    yield f"{indent}end"


def _node(mermaid_id: str, label: str, lines: tuple[str, ...], restart_sensitive: bool) -> str:
    body = "<br/>".join(text(line) for line in (label, *lines))
    return f'{mermaid_id}["{body}"]' + (":::restart" if restart_sensitive else "")
