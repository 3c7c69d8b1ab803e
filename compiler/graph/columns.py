"""Columns of boxes coloured by state, as SVG: the building block of the rollout and drift pictures.

Waves are the columns, targets the boxes.

Pure Python and deterministic (no layout engine needed: columns are laid out on a grid). Put the SVG
in `compiler.graph.page.render_page` with a `Detail` per box id for hover and click, and
`state_legend()` as its legend.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from html import escape

from compiler.diagnostics import InternalError

# fill, stroke: GitHub's palette, readable in print and for common colour blindness (text says the state too)
STATE_COLORS: dict[str, tuple[str, str]] = {
    "at-revision": ("#ddf4ff", "#0969da"),
    "waiting": ("#f6f8fa", "#8c959f"),
    "converged": ("#dafbe1", "#1a7f37"),
    "pending": ("#fff8c5", "#9a6700"),
    "drifted": ("#ffebe9", "#cf222e"),
    "failed": ("#cf222e", "#82071e"),
    "unknown": ("#eaeef2", "#57606a"),
}
MARK_COLOR = "#bc4c00"  # the highlighted column and marked boxes: what moves next
COLUMN_WIDTH, GAP, HEADER, LINE, PAD, MARKER = 280, 24, 52, 14, 8, 24
MAX_LABEL_CHARS = 38  # a box's label is cut past this; its details say it all


@dataclass(frozen=True, kw_only=True, slots=True)
class Box:
    """One target or host: its element id (for details), label, state and a few more lines."""

    id: str
    label: str
    state: str
    lines: tuple[str, ...] = ()
    marked: bool = False  # drawn with a thick dashed outline: e.g. changes at the next promotion


@dataclass(frozen=True, kw_only=True, slots=True)
class Column:
    """One wave: its name, a line under it (e.g. its revision), its boxes; `highlight` marks the next to move."""

    title: str
    subtitle: str
    boxes: tuple[Box, ...]
    highlight: bool = False


def state_legend() -> list[tuple[str, str]]:
    """(colour, state) pairs for a page's legend."""
    return [(fill, state) for state, (fill, _) in STATE_COLORS.items()]


def render_columns(columns: Sequence[Column], marker: str = "") -> str:
    """An SVG document: one column per entry, left to right, a box per target coloured by its state."""
    for column in columns:
        for box in column.boxes:
            if box.state not in STATE_COLORS:
                raise InternalError(  # states come from meshc's own judgement, never from input
                    f"unknown state {box.state!r} of {box.id!r}; one of {', '.join(STATE_COLORS)}"
                )
    top = MARKER if marker else 0
    height = top + HEADER + max((_column_height(c) for c in columns), default=0) + PAD
    width = max(len(columns), 1) * (COLUMN_WIDTH + GAP) + GAP
    body = "\n".join(
        line
        for index, column in enumerate(columns)
        for line in _column(column, GAP + index * (COLUMN_WIDTH + GAP), top)
    )
    heading = (
        f'<text x="{GAP}" y="18" font-size="13" font-weight="bold">{escape(marker)}</text>\n'
        if marker
        else ""
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'font-family="DejaVu Sans, sans-serif" font-size="11">\n{heading}{body}\n</svg>\n'
    )


def _box_height(box: Box) -> int:
    return 2 * PAD + LINE * (2 + len(box.lines))  # the label, the lines, the state


def _column_height(column: Column) -> int:
    return sum(_box_height(b) + PAD for b in column.boxes) + PAD


def _column(column: Column, x: int, top: int) -> Iterator[str]:
    stroke = f' stroke="{MARK_COLOR}" stroke-width="3"' if column.highlight else ' stroke="#d0d7de"'
    yield (
        f'<rect x="{x}" y="{top + HEADER - 8}" width="{COLUMN_WIDTH}" height="{_column_height(column)}" '
        f'rx="8" fill="none"{stroke}/>'
    )
    yield f'<text x="{x + PAD}" y="{top + HEADER - 30}" font-size="13" font-weight="bold">{escape(column.title)}</text>'
    yield f'<text x="{x + PAD}" y="{top + HEADER - 14}" fill="#57606a">{escape(column.subtitle)}</text>'
    y = top + HEADER
    for box in column.boxes:
        yield from _box(box, x + PAD, y)
        y += _box_height(box) + PAD


def _box(box: Box, x: int, y: int) -> Iterator[str]:
    fill, stroke = STATE_COLORS[box.state]
    ink = "#ffffff" if box.state == "failed" else "#1f2328"
    label = box.label if len(box.label) <= MAX_LABEL_CHARS else box.label[: MAX_LABEL_CHARS - 1] + "…"
    outline = (
        f' stroke="{MARK_COLOR}" stroke-width="3" stroke-dasharray="6 3"'
        if box.marked
        else f' stroke="{stroke}"'
    )
    yield (
        f'<g id="{escape(box.id)}" class="box state-{box.state}{" marked" if box.marked else ""}">'
        f"<title>{escape(box.label)}: {box.state}</title>"
    )
    yield (
        f'<rect x="{x}" y="{y}" width="{COLUMN_WIDTH - 2 * PAD}" height="{_box_height(box)}" rx="4" '
        f'fill="{fill}"{outline}/>'
    )
    yield f'<text x="{x + PAD}" y="{y + PAD + 10}" fill="{ink}" font-weight="bold">{escape(label)}</text>'
    for index, line in enumerate((*box.lines, box.state)):
        yield f'<text x="{x + PAD}" y="{y + PAD + 10 + LINE * (index + 1)}" fill="{ink}">{escape(line)}</text>'
    yield "</g>"
