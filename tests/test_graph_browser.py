"""The pictures in their real consumers: Mermaid (npm) in headless Chromium parses and renders every block meshc
writes; every HTML page loads from file:// with no console message and no request but itself, and is not blank."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from compiler.commands.diff_markdown import format_markdown
from compiler.graph.columns import Box, Column, render_columns
from compiler.graph.dot import element_id
from compiler.graph.draw import draw
from compiler.graph.mermaid import render_mermaid
from compiler.graph.model import Limits, build_graph
from compiler.graph.page import Detail, render_page
from compiler.ir.model import Mesh
from compiler.pipeline import Build
from compiler.spec.load import read_tree
from tests.browser import Chromium, ink, mermaid_check, mermaid_page
from tests.conftest import EXAMPLE, ROOT, require_tool
from tests.test_graph_diff import MERMAID_BLOCK, diff, edit, readme_change

pytestmark = pytest.mark.consumer  # every test here hands artifacts to Chromium with Mermaid (and Graphviz)

MIN_INK = 0.01  # share of sampled pixels that differ from the background; a blank page has 0


@pytest.fixture(scope="module")
def mesh(example_build: Build) -> Mesh:
    return example_build.mesh


@pytest.fixture(scope="module")
def big_mesh(synthetic_1000: Build) -> Mesh:
    return synthetic_1000.mesh


@pytest.fixture(scope="module")
def mermaid(chromium: Chromium, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    """The session's Chromium on a page holding the real Mermaid library."""
    chromium.load(mermaid_page(tmp_path_factory.mktemp("mermaid")))
    yield chromium


def diff_blocks() -> Iterator[tuple[str, str]]:
    """Every Mermaid block of the diff comments the tests know, and the README's."""
    readme = (ROOT / "README.md").read_text()
    for index, block in enumerate(MERMAID_BLOCK.findall(readme)):
        yield f"README block {index}", block
    yield "readme change", MERMAID_BLOCK.findall(format_markdown(diff(readme_change(read_tree(EXAMPLE)))))[0]
    head = read_tree(EXAMPLE)
    edit(head, "services/encryption.yaml", "timeout: 500ms", "timeout: 600ms")
    edit(head, "mesh.yaml", "consecutive_5xx: 5", "consecutive_5xx: 7")
    # restarts key-manager's Nerve: marked
    edit(head, "services/key-manager.yaml", "port: 8080", "port: 8081")
    yield "restart-sensitive and mesh-wide policy", MERMAID_BLOCK.findall(format_markdown(diff(head)))[0]
    removed = read_tree(EXAMPLE)
    del removed["services/audit-log.yaml"]
    yield "removed service", MERMAID_BLOCK.findall(format_markdown(diff(removed)))[0]


def graph_blocks(mesh: Mesh, big_mesh: Mesh) -> Iterator[tuple[str, str]]:
    """Every kind of `meshc graph --format mermaid` picture: whole, collapsed twice, neighbourhoods, 1,000 services."""
    yield "whole example", render_mermaid(build_graph(mesh))
    yield "platform groups", render_mermaid(build_graph(mesh, limits=Limits(max_nodes=10)))
    yield "datacenters", render_mermaid(build_graph(mesh, limits=Limits(max_nodes=5)))
    for service in sorted({w.service for w in mesh.workloads}):
        yield f"neighbourhood of {service}", render_mermaid(build_graph(mesh, [service]))
    yield "1,000 services", render_mermaid(build_graph(big_mesh))
    yield "1,000 services, neighbourhood", render_mermaid(build_graph(big_mesh, ["svc-0001"]))


def check_block(browser: Chromium, name: str, block: str, index: int) -> dict[str, Any]:
    result = mermaid_check(browser, block, index)
    assert result["ok"], f"{name}: Mermaid rejects it: {result['error']}"
    return result


def test_every_diff_diagram_parses_and_renders_with_mermaid(mermaid: Chromium) -> None:
    blocks = list(diff_blocks())
    assert len(blocks) >= 4
    for index, (name, block) in enumerate(blocks):
        svg = check_block(mermaid, name, block, index)["svg"]
        assert ("restart-sensitive, restarts" in block) == (
            name == "restart-sensitive and mesh-wide policy"
        ), name
        edges = len(re.findall(r"^  s\d+ (?:==>|-->|-\.->)\|", block, re.M))
        assert edges > 0 and svg.count('class="edgeLabel"') >= edges, name


def test_every_graph_diagram_parses_and_renders_with_mermaid(
    mermaid: Chromium, mesh: Mesh, big_mesh: Mesh
) -> None:
    for index, (name, block) in enumerate(graph_blocks(mesh, big_mesh)):
        svg = check_block(mermaid, name, block, 100 + index)["svg"]
        boxes = len(re.findall(r'^\s*n\d+\["', block, re.M))
        assert svg.count("restart") >= 1 if ":::restart" in block else True
        assert len(re.findall(r'class="node[ "]', svg)) >= boxes, name


def test_mermaid_really_rejects_a_broken_diagram(mermaid: Chromium) -> None:
    """The check above means something: the same harness fails an invalid block."""
    assert not mermaid_check(mermaid, 'flowchart LR\n  a -->|"x| b', 999)["ok"]


def load_page(chromium: Chromium, path: Path, text: str) -> Any:
    path.write_text(text, encoding="utf-8")
    page = chromium.load(path.as_uri())
    assert page.console == (), f"{path.name}: console output {page.console}"
    assert page.requests == (path.as_uri(),), (
        f"{path.name}: requests besides the page itself: {page.requests}"
    )
    assert ink(page.screenshot) > MIN_INK, f"{path.name}: the screenshot is blank"
    return page


def test_html_pages_load_clean_and_show_explain_details_on_click(
    chromium: Chromium, mesh: Mesh, tmp_path: Path
) -> None:
    require_tool("dot")
    load_page(chromium, tmp_path / "mesh.html", draw(mesh, "html"))
    target = element_id("k8s/kube-sjc-a/upload/upload")
    panel = chromium.evaluate(f"""(() => {{
        const box = document.getElementById({target!r});
        box.dispatchEvent(new MouseEvent("click", {{bubbles: true}}));
        return [document.getElementById("meshc-panel-title").textContent,
                document.getElementById("meshc-panel-body").textContent, box.classList.contains("pinned")];
    }})()""")
    assert panel[0] == "k8s/kube-sjc-a/upload/upload" and panel[2] is True
    assert panel[1].startswith("upload  owner storage-frontend, protocol http\n  called by: api-gateway")
    hovered = chromium.evaluate(f"""(() => {{
        document.getElementById({element_id("vm/key-manager/sjc")!r}).dispatchEvent(new MouseEvent("mouseenter"));
        return document.getElementById("meshc-panel-title").textContent;
    }})()""")
    # pinned by the click: hovering elsewhere does not replace it
    assert hovered == "k8s/kube-sjc-a/upload/upload"
    load_page(chromium, tmp_path / "upload.html", draw(mesh, "html", ["upload"], 2))


def test_html_page_of_a_thousand_services_loads_clean(
    chromium: Chromium, big_mesh: Mesh, tmp_path: Path
) -> None:
    require_tool("dot")
    load_page(chromium, tmp_path / "big.html", draw(big_mesh, "html"))
    text = chromium.evaluate("document.querySelector('header').textContent")
    assert "too many to draw one by one: collapsed to one box per datacenter" in text
    load_page(chromium, tmp_path / "big-neighbourhood.html", draw(big_mesh, "html", ["svc-0001"]))


def test_a_page_that_fetches_would_be_caught(chromium: Chromium, tmp_path: Path) -> None:
    """The checks above mean something: a page with an external image logs a refusal, a script error is seen."""
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg" width="200" height="100">'
        '<rect width="200" height="100" fill="#123456"/></svg>'
    )
    page = (
        render_page(title="t", notes=[], figure_svg=svg, details={})
        .replace("</figure>", '<img src="http://127.0.0.1:9/x.png"></figure>')
        .replace("</body>", "<script>undefinedFunction();</script></body>")
    )
    (tmp_path / "bad.html").write_text(page)
    loaded = chromium.load((tmp_path / "bad.html").as_uri())
    assert any("Content Security Policy" in line for line in loaded.console), loaded.console
    assert any("undefinedFunction" in line for line in loaded.console), loaded.console


def test_columns_of_state_boxes_render_in_a_clean_page(chromium: Chromium, tmp_path: Path) -> None:
    """The building block of the rollout status page: columns of boxes coloured by state, details on hover."""
    columns = (
        Column(
            title="canary",
            subtitle="at abc1234",
            boxes=(
                Box(id="t1", label="vm/upload/gcp-usc1", state="converged", lines=("3 hosts",)),
                Box(id="t2", label="k8s/gke-usc1-a/upload/upload", state="drifted"),
            ),
        ),
        Column(
            title="west", subtitle="waiting", boxes=(Box(id="t3", label="vm/upload/sjc", state="pending"),)
        ),
        Column(title="rest", subtitle="", boxes=()),
    )
    svg = render_columns(columns, marker="next promotion: west")
    details = {"t1": Detail(title="vm/upload/gcp-usc1", text="converged at abc1234")}
    load_page(
        chromium,
        tmp_path / "columns.html",
        render_page(title="rollout", notes=[], figure_svg=svg, details=details),
    )
    fill = chromium.evaluate("getComputedStyle(document.querySelector('#t2 rect')).fill")
    assert fill == "rgb(255, 235, 233)"  # drifted
