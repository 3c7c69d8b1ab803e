"""One self-contained HTML page around an inline SVG figure, with a details panel fed by hover and click.

Shared by every picture meshc publishes (the mesh graph; a rollout status page can reuse it): no
network fetch of any kind — the Content-Security-Policy forbids them, so a page that tried would
fail loudly in a browser instead of leaking a request — and no external script or font.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from compiler.diagnostics import InternalError

CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"

_STYLE = """
body { margin: 0; font-family: "DejaVu Sans", sans-serif; color: #1f2328; background: #ffffff; }
header { padding: 12px 16px; border-bottom: 1px solid #d0d7de; }
h1 { font-size: 18px; margin: 0 0 4px 0; }
p.note { margin: 4px 0; color: #9a6700; }
p.help { margin: 4px 0; font-size: 12px; }
ul.summary { margin: 4px 0; padding-left: 18px; font-size: 12px; }
ul.legend { list-style: none; margin: 4px 0 0 0; padding: 0;
  display: flex; flex-wrap: wrap; gap: 14px; font-size: 12px; }
ul.legend span.swatch { display: inline-block; width: 14px; height: 10px; margin-right: 4px;
  border: 1px solid #57606a; vertical-align: middle; }
main { display: flex; align-items: flex-start; }
figure { margin: 0; padding: 8px; overflow: auto; flex: 1 1 auto; min-width: 0; max-height: 100vh; }
aside { background: #ffffff; flex: 0 0 420px; max-height: 100vh; overflow: auto; position: sticky; top: 0;
  border-left: 1px solid #d0d7de; padding: 8px 12px; }
aside h2 { font-size: 14px; margin: 4px 0; }
aside pre { font-size: 11px; white-space: pre-wrap; }
.has-details { cursor: pointer; }
.pinned polygon, .pinned path, .pinned rect { stroke-width: 3px; }
"""

_SCRIPT = """
(function () {
  "use strict";
  var details = JSON.parse(document.getElementById("meshc-details").textContent);
  var title = document.getElementById("meshc-panel-title");
  var body = document.getElementById("meshc-panel-body");
  var pinned = null;
  function show(id) { title.textContent = details[id].title; body.textContent = details[id].text; }
  Object.keys(details).forEach(function (id) {
    var element = document.getElementById(id);
    if (!element) { return; }
    element.classList.add("has-details");
    element.addEventListener("mouseenter", function () { if (pinned === null) { show(id); } });
    element.addEventListener("click", function () {
      if (pinned !== null) { document.getElementById(pinned).classList.remove("pinned"); }
      pinned = pinned === id ? null : id;
      if (pinned !== null) { element.classList.add("pinned"); }
      show(id);
    });
  });
})();
"""


@dataclass(frozen=True, kw_only=True, slots=True)
class Detail:
    """What the panel shows for one element of the figure."""

    title: str
    text: str


def render_page(
    *,
    title: str,
    notes: Sequence[str],
    figure_svg: str,
    details: Mapping[str, Detail],
    legend: Sequence[tuple[str, str]] = (),
    help_text: str = "",
    summary: Sequence[str] = (),
) -> str:
    """The page: a header (title, warnings, summary, help, colour legend), the figure, and a details panel."""
    data = {key: {"title": d.title, "text": d.text} for key, d in sorted(details.items())}
    legend_items = "".join(
        f'<li><span class="swatch" style="background:{html.escape(color)}"></span>{html.escape(meaning)}</li>'
        for color, meaning in legend
    )
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
            '<link rel="icon" href="data:,">',  # or the browser asks the server for /favicon.ico
            f"<title>{html.escape(title)}</title>",
            f"<style>{_STYLE}</style>",
            "</head>",
            "<body>",
            f"<header><h1>{html.escape(title)}</h1>",
            *(f'<p class="note">{html.escape(note)}</p>' for note in notes),
            '<ul class="summary">' + "".join(f"<li>{html.escape(line)}</li>" for line in summary) + "</ul>"
            if summary
            else "",
            f'<p class="help">{html.escape(help_text)}</p>' if help_text else "",
            f'<ul class="legend">{legend_items}</ul>' if legend else "",
            "</header>",
            "<main>",
            f"<figure>{inline_svg(figure_svg)}</figure>",
            '<aside><h2 id="meshc-panel-title">Details</h2>'
            '<pre id="meshc-panel-body">Hover over a box for its details; click to keep them.</pre></aside>',
            "</main>",
            f'<script type="application/json" id="meshc-details">{script_json(data)}</script>',
            f"<script>{_SCRIPT}</script>",
            "</body>",
            "</html>",
            "",
        ]
    )


def inline_svg(svg: str) -> str:
    """An SVG document as an element to inline in HTML: without its XML declaration, DOCTYPE and leading comments."""
    start = svg.find("<svg")
    if start < 0:
        raise InternalError("not an SVG document: no <svg> element")  # meshc or its Graphviz call went wrong
    return svg[start:].strip()


def script_json(data: object) -> str:
    """JSON safe inside a <script> element: no `<` that could close it."""
    return json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")
