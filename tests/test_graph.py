"""`meshc graph`: a picture of the lowered IR, grouped and collapsed as promised; Graphviz accepts every DOT."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from compiler.cli import main
from compiler.diagnostics import InternalError
from compiler.graph.dot import element_id, render_dot, render_svg
from compiler.graph.draw import FORMATS, draw
from compiler.graph.html import render_html
from compiler.graph.mermaid import render_mermaid, text
from compiler.graph.model import (
    DATACENTERS,
    PLATFORMS,
    WORKLOADS,
    Graph,
    Group,
    Limits,
    build_graph,
    neighbourhood,
    source_workload,
)
from compiler.ir.model import Mesh
from compiler.pipeline import Build, compile_dir
from compiler.spec.load import read_tree
from tests.conftest import EXAMPLE, ROOT, require_tool, run_under_seeds, write_spec

DOCS_SVG = ROOT / "docs" / "mesh.svg"


@pytest.fixture(scope="module")
def mesh(example_build: Build) -> Mesh:
    return example_build.mesh


@pytest.fixture(scope="module")
def big_mesh(synthetic_1000: Build) -> Mesh:
    return synthetic_1000.mesh


def routes(mesh: Mesh) -> set[tuple[str, str]]:
    """Every (client workload, server workload) pair a sidecar discovers, straight from the IR."""
    return {
        (w.id, source_workload(e.service, s)) for w in mesh.workloads for e in w.egress for s in e.sources
    }


def frames(groups: tuple[Group, ...], path: tuple[str, ...] = ()) -> dict[str, tuple[str, ...]]:
    """Node id -> the labels of the frames around it, outermost first."""
    found: dict[str, tuple[str, ...]] = {}
    for group in groups:
        found |= {node: (*path, group.label) for node in group.nodes}
        found |= frames(group.groups, (*path, group.label))
    return found


# ---------------------------------------------------------------- the model


def test_every_workload_is_a_box_and_every_route_an_edge(mesh: Mesh) -> None:
    graph = build_graph(mesh)
    assert graph.level == WORKLOADS and graph.note == ""
    assert [n.id for n in graph.nodes] == sorted(w.id for w in mesh.workloads)
    assert {(e.source, e.target) for e in graph.edges} == routes(mesh)
    assert len(graph.edges) == len(routes(mesh)) == 119
    sensitive = {n.id for n in graph.nodes if n.restart_sensitive}
    assert sensitive == {"vm/key-manager/iad", "vm/key-manager/sjc"}
    assert all("restart-sensitive" in n.lines for n in graph.nodes if n.restart_sensitive)


def test_edges_are_labelled_with_locality_protocol_and_failover_priority(mesh: Mesh) -> None:
    edges = {(e.source, e.target): e for e in build_graph(mesh).edges}
    # upload in kube-sjc-a reaches encryption (grpc, failover): sjc first, then iad at priority 1
    assert edges[("k8s/kube-sjc-a/upload/upload", "vm/encryption/sjc")].label == "failover · grpc"
    assert edges[("k8s/kube-sjc-a/upload/upload", "vm/encryption/iad")].label == "failover p1 · grpc"
    assert edges[("k8s/kube-sjc-a/upload/upload", "vm/encryption/iad")].style == "fallback"
    assert edges[("vm/download/sjc", "vm/storage-gateway/gcp-usc1")].label.endswith("· grpc")
    assert edges[("vm/auth/sjc", "vm/user-store/sjc")].label == "local · grpc"
    assert ("vm/auth/sjc", "vm/user-store/iad") not in edges  # `local`: never another datacenter
    assert edges[("vm/audit-log/gcp-usc1", "vm/event-bus/sjc")].label == "global · tcp"


def test_boxes_sit_in_their_datacenter_and_platform_frames(mesh: Mesh) -> None:
    graph = build_graph(mesh)
    where = frames(graph.groups)
    # each box in exactly one frame (dict keys), none left out
    assert set(where) == {n.id for n in graph.nodes}
    for workload in mesh.workloads:
        platform = "VM pools" if workload.platform == "vm" else f"cluster {workload.cluster}"
        region = mesh.datacenters[workload.datacenter].region
        assert where[workload.id] == (f"{workload.datacenter} ({region})", platform)


def test_neighbourhood_follows_callers_and_dependencies_depth_hops(mesh: Mesh) -> None:
    # upload calls five services and is called by api-gateway only (mesh-spec/services/*.yaml)
    direct = {
        "upload",
        "encryption",
        "metadata",
        "storage-gateway",
        "event-bus",
        "feature-flags",
        "api-gateway",
    }
    assert neighbourhood(mesh, ["upload"], 1) == direct
    assert neighbourhood(mesh, ["upload"], 0) == {"upload"}
    # two hops: edge calls api-gateway; encryption calls key-manager; metadata calls mysql-proxy and permissions.
    # Not auth: api-gateway's other dependency is neither a caller nor a dependency of upload's.
    two = neighbourhood(mesh, ["upload"], 2)
    assert two == direct | {"edge", "key-manager", "mysql-proxy", "permissions"}
    graph = build_graph(mesh, ["upload"])
    assert {n.services[0] for n in graph.nodes} == direct
    assert all(mesh_service(e.source) in direct and mesh_service(e.target) in direct for e in graph.edges)
    assert "upload with callers and dependencies (1 hop)" in graph.title


def mesh_service(workload_id: str) -> str:
    return workload_id.split("/")[-1] if workload_id.startswith("k8s/") else workload_id.split("/")[1]


def test_collapsed_levels_keep_every_route_counted_and_say_so(mesh: Mesh) -> None:
    platforms = build_graph(mesh, limits=Limits(max_nodes=10))
    assert platforms.level == PLATFORMS
    assert "37 workloads and 119 routes are too many to draw one by one" in platforms.note
    assert sum(e.calls for e in platforms.edges) == 119
    assert {n.label for n in platforms.nodes} == {
        "VM pools",
        "cluster kube-sjc-a",
        "cluster kube-iad-a",
        "cluster gke-usc1-a",
    }
    assert len(platforms.nodes) == 6  # VM pools in 3 datacenters, 3 clusters
    datacenters = build_graph(mesh, limits=Limits(max_nodes=5))
    assert datacenters.level == DATACENTERS and len(datacenters.nodes) == 3
    assert sum(e.calls for e in datacenters.edges) == 119
    sjc_to_iad = next(e for e in datacenters.edges if (e.source, e.target) == ("dc@sjc", "dc@iad"))
    expected = sum(
        1 for client, server in routes(mesh) if "sjc" in _dc(mesh, client) and "iad" in _dc(mesh, server)
    )
    assert sjc_to_iad.calls == expected and sjc_to_iad.label.startswith(f"{expected} routes: ")


def _dc(mesh: Mesh, workload_id: str) -> str:
    return next(w.datacenter for w in mesh.workloads if w.id == workload_id)


@pytest.mark.consumer
def test_a_thousand_services_collapse_to_datacenters_and_the_picture_says_so(big_mesh: Mesh) -> None:
    require_tool("dot")
    graph = build_graph(big_mesh)
    assert graph.level == DATACENTERS
    assert len(graph.nodes) == 6 and len(graph.edges) <= 36
    assert sum(e.calls for e in graph.edges) == len(routes(big_mesh))
    assert "too many to draw one by one: collapsed to one box per datacenter" in graph.note
    assert f'note["{text(graph.note)}"]' in render_mermaid(graph)
    svg = render_svg(render_dot(graph))
    assert "too many to draw one by one" in svg
    # a neighbourhood of the same mesh is drawn box by box
    near = build_graph(big_mesh, ["svc-0001"])
    assert near.level == WORKLOADS and near.note == ""


# ---------------------------------------------------------------- formats


def test_restart_sensitive_services_are_marked_in_every_format(mesh: Mesh) -> None:
    graph = build_graph(mesh, ["encryption"])
    dot = render_dot(graph)
    assert re.search(r'"vm/key-manager/sjc" \[label="key-manager\\nrestart-sensitive".*peripheries=2', dot)
    assert re.search(r'n\d+\["key-manager<br/>restart-sensitive"\]:::restart', render_mermaid(graph))


@pytest.mark.consumer
def test_graphviz_renders_every_dot_meshc_writes_without_warnings(mesh: Mesh, big_mesh: Mesh) -> None:
    dot_binary = require_tool("dot")
    graphs = [
        build_graph(mesh),
        build_graph(mesh, limits=Limits(max_nodes=10)),
        build_graph(mesh, limits=Limits(max_nodes=5)),
        build_graph(big_mesh),
        build_graph(big_mesh, ["svc-0001"], depth=1),
    ]
    graphs += [
        build_graph(mesh, [service], depth=2) for service in sorted({w.service for w in mesh.workloads})
    ]
    for graph in graphs:
        proc = subprocess.run(
            [dot_binary, "-Tsvg"], input=render_dot(graph).encode(), capture_output=True, check=False
        )
        assert (proc.returncode, proc.stderr.decode()) == (0, ""), graph.title
        assert proc.stdout.count(b'class="node') == len(graph.nodes), graph.title
        assert proc.stdout.count(b'class="edge"') == len(graph.edges), graph.title


@pytest.mark.consumer
def test_html_is_one_self_contained_page_with_explain_details(mesh: Mesh) -> None:
    require_tool("dot")
    graph = build_graph(mesh)
    page = draw(mesh, "html")
    assert page.startswith("<!DOCTYPE html>") and page.count("<svg") == 1 and "<?xml" not in page
    assert "default-src 'none'" in page  # the browser itself refuses any fetch
    assert not re.search(r'(src|href)="(?!data:|#)', page) and "@import" not in page and "url(" not in page
    for node in graph.nodes:
        assert f'id="{element_id(node.id)}"' in page
    details = re.search(r'<script type="application/json" id="meshc-details">(.*?)</script>', page, re.S)
    assert details and "called by: api-gateway" in details.group(1)  # upload's explain text
    assert render_html(mesh, graph, render_svg(render_dot(graph))) == page


def render_all(mesh: Mesh, services: tuple[str, ...] = ()) -> dict[str, str]:
    return {fmt: draw(mesh, fmt, services) for fmt in FORMATS}


def has_edge(fmt: str, picture: str, client: str, server: str) -> bool:
    """Does the picture in `fmt` draw an edge from workload `client` to workload `server`?"""
    if fmt == "dot":
        return f'"{client}" -> "{server}"' in picture
    if fmt in ("svg", "html"):

        def escape(text: str) -> str:
            return text.replace("-", "&#45;")

        return f"<title>{escape(client)}&#45;&gt;{escape(server)}</title>" in picture
    ids = mermaid_ids(picture)
    if client not in ids or server not in ids:
        return False
    return re.search(rf"^  {ids[client]} -\.?->\|[^|]*\| {ids[server]}$", picture, re.M) is not None


def mermaid_ids(picture: str) -> dict[str, str]:
    """Workload id -> Mermaid node id, read back from the picture: frames give the place, the label the service."""
    ids: dict[str, str] = {}
    stack: list[str] = []
    for line in picture.splitlines():
        if match := re.match(r'\s*subgraph g\d+\["(.*)"\]$', line):
            stack.append(match.group(1))
        elif line.strip() == "end":
            stack.pop()
        elif match := re.match(r'\s*(n\d+)\["([^"<]*)', line):
            datacenter, platform = stack[0].split(" ")[0], stack[1]
            service = match.group(2)
            if platform == "VM pools":
                ids[f"vm/{service}/{datacenter}"] = match.group(1)
            else:
                cluster = platform.removeprefix("cluster ")
                namespace = re.search(r"namespace ([a-z0-9-]+)", line)
                ids[f"k8s/{cluster}/{namespace.group(1) if namespace else service}/{service}"] = match.group(
                    1
                )
    return ids


@pytest.mark.consumer
def test_a_changed_dependency_moves_the_edge_in_every_format(tmp_path: Path) -> None:
    require_tool("dot")
    files = {k: v for k, v in read_tree(EXAMPLE).items()}
    upload = files["services/upload.yaml"].decode()
    assert "  - service: metadata\n" in upload
    files["services/upload.yaml"] = upload.replace(
        "  - service: metadata\n", "  - service: search\n"
    ).encode()
    before = compile_dir(EXAMPLE).mesh
    after = compile_dir(write_spec(tmp_path / "spec", files)).mesh
    client, old_server, new_server = (
        "k8s/kube-sjc-a/upload/upload",
        "k8s/kube-sjc-a/metadata/metadata",
        "k8s/gke-usc1-a/search/search",
    )
    old_pictures, new_pictures = render_all(before), render_all(after)
    for fmt in FORMATS:
        assert has_edge(fmt, old_pictures[fmt], client, old_server) and not has_edge(
            fmt, old_pictures[fmt], client, new_server
        ), fmt
        assert has_edge(fmt, new_pictures[fmt], client, new_server) and not has_edge(
            fmt, new_pictures[fmt], client, old_server
        ), fmt
    explained = json.loads(
        re.search(r'id="meshc-details">(.*?)</script>', new_pictures["html"], re.S).group(1)
    )
    upload_details = explained[element_id(client)]["text"]
    assert "-> search on 127.0.0.1" in upload_details and "-> metadata on" not in upload_details


# ---------------------------------------------------------------- determinism and the command


# Each seed's child draws the text pictures one after the other, each through the command line's main: one
# interpreter start per seed, the seed being what the test varies. Prints [[exit code, stdout], ...] as JSON.
TEXT_PICTURES = r"""
import contextlib, io, json, sys
from compiler.cli import main

drawn = []
for args in json.loads(sys.argv[1]):
    with contextlib.redirect_stdout(io.StringIO()) as out:
        code = main(["graph", *args])
    drawn.append([code, out.getvalue()])
print(json.dumps(drawn))
"""


def test_text_pictures_are_byte_identical_across_runs_and_hash_seeds() -> None:
    pictures = json.dumps(
        [[*args, "--spec", str(EXAMPLE)] for args in (("--format", "mermaid"), ("--format", "dot"))]
    )
    command = [sys.executable, "-c", TEXT_PICTURES, pictures]
    results = run_under_seeds(dict.fromkeys(("0", "1", "4242"), command), timeout=120)
    assert all(result.returncode == 0 for result in results.values()), results
    outputs = {result.stdout for result in results.values()}
    assert len(outputs) == 1
    drawn = json.loads(outputs.pop())
    assert len(drawn) == 2 and all(code == 0 and len(picture) > 1000 for code, picture in drawn), drawn


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(("--format", "svg"), marks=pytest.mark.consumer),  # svg and html run Graphviz
        pytest.param(("--format", "html"), marks=pytest.mark.consumer),
        pytest.param(("upload", "--depth", "2", "--format", "svg"), marks=pytest.mark.consumer),
    ],
)
def test_pictures_are_byte_identical_across_runs_and_hash_seeds(args: tuple[str, ...]) -> None:
    if "svg" in args or "html" in args:
        require_tool("dot")
    command = [sys.executable, "-m", "compiler", "graph", *args, "--spec", str(EXAMPLE)]
    results = run_under_seeds(dict.fromkeys(("0", "1", "4242"), command), timeout=120)
    assert all(result.returncode == 0 for result in results.values()), results
    outputs = {result.stdout for result in results.values()}
    assert len(outputs) == 1 and len(next(iter(outputs))) > 1000


def test_command_writes_a_file_and_reports_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "upload.mmd"
    assert main(["graph", "upload", "--spec", str(EXAMPLE), "-o", str(out)]) == 0
    assert out.read_text() == draw(compile_dir(EXAMPLE).mesh, "mermaid", ["upload"])
    assert main(["graph", "uplaod", "--spec", str(EXAMPLE)]) == 2
    assert capsys.readouterr().err == "meshc: error: unknown service 'uplaod' (did you mean 'upload'?)\n"
    assert main(["graph", "--spec", str(EXAMPLE), "-o", str(tmp_path / "missing" / "x.mmd")]) == 4
    assert capsys.readouterr().err.startswith(f"meshc: error: {tmp_path / 'missing' / 'x.mmd'}: ")
    assert main(["graph", "--depth", "2", "--spec", str(EXAMPLE)]) == 2
    assert capsys.readouterr().err.startswith("meshc: error: --depth counts hops from a SERVICE")
    with pytest.raises(SystemExit) as exit_info:
        main(["graph", "upload", "--depth", "-1"])
    assert exit_info.value.code == 2


def test_missing_graphviz_is_an_environment_failure(
    mesh: Mesh, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no `dot` anywhere
    assert main(["graph", "--format", "svg", "--spec", str(EXAMPLE)]) == 4
    assert (
        capsys.readouterr().err == "meshc: error: dot: Graphviz is not installed (Debian package graphviz)\n"
    )
    assert main(["graph", "--format", "mermaid", "--spec", str(EXAMPLE)]) == 0  # Mermaid needs no Graphviz


@pytest.mark.consumer
def test_readme_picture_is_what_the_example_renders() -> None:
    """docs/mesh.svg is committed like output/: `make build` rewrites it, and a stale one fails here."""
    require_tool("dot")
    assert DOCS_SVG.read_text() == draw(compile_dir(EXAMPLE).mesh, "svg"), (
        "docs/mesh.svg is stale: run `make build`"
    )
    assert "docs/mesh.svg" in (ROOT / "README.md").read_text()


def test_graph_title_counts_what_is_drawn(mesh: Mesh) -> None:
    graph: Graph = build_graph(mesh)
    assert graph.title == "mesh box: 18 services, 37 workloads in 3 datacenters"


def test_columns_draw_one_box_per_target_in_its_state_colour() -> None:
    from compiler.graph.columns import STATE_COLORS, Box, Column, render_columns

    columns = [
        Column(
            title="canary",
            subtitle="",
            boxes=(
                Box(id="a", label="vm/x/sjc", state="converged"),
                Box(id="b", label="k8s/c/x/x", state="failed", lines=("2 hosts",)),
            ),
        ),
        Column(
            title="rest", subtitle="", boxes=(Box(id="c", label="vm/x/iad", state="waiting"),), highlight=True
        ),
    ]
    svg = render_columns(columns, marker="next: rest")
    assert svg == render_columns(columns, marker="next: rest")
    assert re.findall(r'<g id="(\w)" class="box state-([a-z-]+)">', svg) == [
        ("a", "converged"),
        ("b", "failed"),
        ("c", "waiting"),
    ]
    assert f'fill="{STATE_COLORS["failed"][0]}"' in svg and ">2 hosts<" in svg and 'stroke="#bc4c00"' in svg
    with pytest.raises(InternalError, match="unknown state 'late' of 'd'"):
        render_columns([Column(title="w", subtitle="", boxes=(Box(id="d", label="x", state="late"),))])


def test_output_never_replaces_the_spec_a_directory_or_a_device(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "spec"
    shutil.copytree(EXAMPLE, spec)
    mesh_yaml = (spec / "mesh.yaml").read_bytes()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for target in (
        spec / "mesh.yaml",
        spec / "new.html",
        spec,
        tmp_path,
        fifo,
        fifo / "x.html",
    ):  # a FIFO stands for devices (never /dev/null here: tests may run as root)
        assert main(["graph", "--spec", str(spec), "-o", str(target)]) == 2, target
        err = capsys.readouterr().err
        assert err.startswith(f"meshc: error: {target}: ") and err.count("\n") == 1, err
    assert (spec / "mesh.yaml").read_bytes() == mesh_yaml and not (spec / "new.html").exists()
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
