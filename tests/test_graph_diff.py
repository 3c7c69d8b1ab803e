"""The call graph in `meshc diff --format markdown`: exact changes, above the tables, omitted or capped as promised."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from compiler.commands.diff_markdown import GITHUB_COMMENT_LIMIT, format_markdown
from compiler.commands.diff_report import format_json
from compiler.diff.records import MeshDiff
from compiler.diff.revisions import diff_specs
from compiler.graph.calls import ADDED, CHANGED, MAX_DRAWN, REMOVED, CallChange, calls_mermaid
from compiler.spec.load import read_tree
from tests.conftest import EXAMPLE, ROOT

sys.path.insert(0, str(ROOT))
from benchmarks.synth import generate  # noqa: E402 - a big mesh whose every edge a defaults change touches

MERMAID_BLOCK = re.compile(r"```mermaid\n(.*?)```", re.S)


def edit(files: dict[str, bytes], name: str, old: str, new: str) -> None:
    text = files[name].decode()
    assert old in text, f"{name} no longer holds {old!r}; update the scenario"
    files[name] = text.replace(old, new, 1).encode()


def readme_change(files: dict[str, bytes]) -> dict[str, bytes]:
    """The change the README pictures: permissions starts calling storage-gateway, upload gives encryption 3s
    instead of 2s, preview stops reading feature flags."""
    head = dict(files)
    head["services/permissions.yaml"] += b"  - service: storage-gateway\n"
    edit(head, "services/upload.yaml", "timeout: 2s", "timeout: 3s")
    edit(head, "services/preview.yaml", "  - service: feature-flags\n", "")
    return head


def diff(head: dict[str, bytes], base: dict[str, bytes] | None = None) -> MeshDiff:
    return diff_specs(
        base if base is not None else read_tree(EXAMPLE),
        head,
        base="origin/main",
        head="working tree",
        label="mesh-spec",
    )


@pytest.fixture(scope="module")
def readme_diff() -> MeshDiff:
    return diff(readme_change(read_tree(EXAMPLE)))


def test_call_changes_are_exactly_the_edges_the_spec_change_touches(readme_diff: MeshDiff) -> None:
    assert readme_diff.calls == (
        CallChange(client="permissions", server="storage-gateway", status=ADDED, summary="failover · grpc"),
        CallChange(client="preview", server="feature-flags", status=REMOVED, summary="global · http"),
        CallChange(client="upload", server="encryption", status=CHANGED, summary="timeout 2s → 3s"),
    )


def test_markdown_draws_the_changes_above_the_tables(readme_diff: MeshDiff) -> None:
    comment = format_markdown(readme_diff)
    blocks = MERMAID_BLOCK.findall(comment)
    assert len(blocks) == 1
    assert comment.index("```mermaid") < comment.index("| Platform | Datacenter |")
    diagram = blocks[0]
    assert 'title: "call graph: 1 added, 1 removed, 1 changed"' in diagram
    ids = dict(re.findall(r'^  (s\d+)\["([a-z-]+)', diagram, re.M))
    names = {name: node for node, name in ids.items()}
    assert f'{names["permissions"]} ==>|"+ failover · grpc"| {names["storage-gateway"]}' in diagram
    assert f'{names["preview"]} -.->|"− global · http"| {names["feature-flags"]}' in diagram
    assert f'{names["upload"]} -->|"~ timeout 2s → 3s"| {names["encryption"]}' in diagram
    assert set(ids.values()) == {
        "permissions",
        "storage-gateway",
        "preview",
        "feature-flags",
        "upload",
        "encryption",
    }
    assert '"calls": [' in format_json(readme_diff)


def test_restart_sensitive_services_are_marked_only_when_the_change_restarts_them() -> None:
    head = read_tree(EXAMPLE)
    # encryption -> key-manager, a hot reload
    edit(head, "services/encryption.yaml", "timeout: 500ms", "timeout: 600ms")
    diagram = MERMAID_BLOCK.findall(format_markdown(diff(head)))[0]
    assert re.search(r'^  s\d+\["key-manager"\]$', diagram, re.M) and "restart-sensitive" not in diagram
    # Nerve's check port: key-manager's Nerve restarts
    edit(head, "services/key-manager.yaml", "port: 8080", "port: 8081")
    diagram = MERMAID_BLOCK.findall(format_markdown(diff(head)))[0]
    assert re.search(r'^  s\d+\["key-manager<br/>restart-sensitive, restarts"\]:::restart$', diagram, re.M)


@pytest.mark.parametrize("change", ["admin-port", "comment", "health-check"])
def test_no_diagram_when_the_call_graph_does_not_change(change: str) -> None:
    head = read_tree(EXAMPLE)
    if change == "admin-port":
        edit(head, "mesh.yaml", "admin_port: 9901", "admin_port: 9902")
    elif change == "comment":
        head["services/upload.yaml"] = b"# a comment\n" + head["services/upload.yaml"]
    else:
        edit(head, "mesh.yaml", "health_check: {http: /health,", "health_check: {http: /healthz,")
    result = diff(head)
    assert result.calls == ()
    assert "```mermaid" not in format_markdown(result)


def test_a_mesh_wide_change_is_capped_and_says_what_was_cut(tmp_path: Path) -> None:
    # 40 services change 284 calls, past MAX_DRAWN, and a comment the report must cut to fit.
    spec = generate(tmp_path / "spec", services=40, datacenters=3, clusters=4)
    base = read_tree(spec)
    head = dict(base)
    edit(head, "mesh.yaml", 'timeout: "15s"', 'timeout: "20s"')
    result = diff_specs(base, head, base="origin/main", head="working tree", label="spec")
    assert len(result.calls) > MAX_DRAWN
    comment = format_markdown(result)
    assert len(comment) < GITHUB_COMMENT_LIMIT
    diagram = MERMAID_BLOCK.findall(comment)[0]
    assert f"(first {MAX_DRAWN} of {len(result.calls)} drawn)" in diagram
    assert len(re.findall(r"^  s\d+ -->\|", diagram, re.M)) == MAX_DRAWN
    assert f"The diagram draws {MAX_DRAWN} of {len(result.calls)} call-graph changes" in comment


def test_labels_cannot_break_the_diagram_or_the_fence() -> None:
    change = CallChange(
        client="a", server="b", status=CHANGED, summary='retries.on x"]-->|`injected`|``` <b>'
    )
    diagram = calls_mermaid([change])
    assert "```" not in diagram and "<b>" not in diagram and 'x"]' not in diagram
    assert "x#quot;]--#gt;|#96;injected#96;|#96;#96;#96; #lt;b#gt;" in diagram


def test_readme_shows_the_diagram_of_its_change(readme_diff: MeshDiff) -> None:
    readme = (ROOT / "README.md").read_text()
    expected = MERMAID_BLOCK.findall(format_markdown(readme_diff))[0]
    assert expected in MERMAID_BLOCK.findall(readme), (
        "README's Mermaid block is not what `meshc diff` renders for its change"
    )
