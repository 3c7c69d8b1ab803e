"""The drift status page (`meshc drift --format html`) in headless Chromium: waves as columns of targets, each coloured
by its state, orphans listed, findings on click; a cluster that is fixed turns green.

The report comes from the real checks: a rollout build of a temporary git repository (MANIFEST rollout), cluster
dumps as the API server returns them (tests/live_k8s.py). The Puppet half (hosts: pending, failed) is wired into
`meshc drift` on branch drift-wire; these tests cover what main's drift report holds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from compiler.drift.detect import assemble_report
from compiler.drift.html import render_drift_page
from compiler.drift.kubernetes import check_cluster, expected_objects, parse_dump
from compiler.drift.model import DriftReport
from compiler.graph.dot import element_id
from compiler.rollout.build import output_for
from tests.browser import Chromium
from tests.conftest import EXAMPLE, ROOT
from tests.live_k8s import dump_json, dump_yaml, live_objects, orphan
from tests.test_graph_browser import load_page
from tests.test_rollout_build import SPEC, add_timeout_change, start_rollout

FILL = {"converged": "rgb(218, 251, 225)", "pending": "rgb(255, 248, 197)", "drifted": "rgb(255, 235, 233)",
        "failed": "rgb(207, 34, 46)", "unknown": "rgb(234, 238, 242)"}  # STATE_COLORS fills as the browser computes them
DUMPED = ("gke-usc1-a", "kube-sjc-a")  # kube-iad-a is given no dump: its targets have no evidence
UPLOAD = "k8s/kube-sjc-a/upload/upload"  # west


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The rollout build of a repo (waves canary, west, rest) with a change in the first wave only."""
    repo, _, _ = start_rollout(tmp_path_factory.mktemp("drift-page") / "repo")
    add_timeout_change(repo)
    return output_for(repo / SPEC)


def wave_order(tree: Mapping[str, bytes]) -> list[str]:
    return [w["name"] for w in json.loads(tree["MANIFEST.json"])["rollout"]["waves"]]


def report_of(tree: Mapping[str, bytes], edit: bool) -> DriftReport:
    """The real check of two cluster dumps; with `edit`, sjc has a hand-added ConfigMap key, an orphan, and no Secrets listed."""
    checked = []
    for cluster in DUMPED:
        objects = live_objects(tree, cluster)
        if cluster == "kube-sjc-a" and edit:
            config = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "upload-mesh-envoy")
            config["data"]["debug.json"] = "{}"
            objects.append(orphan("box", cluster, "ConfigMap", "v1", "upload", "old-config"))
        dump = parse_dump(f"{cluster}.yaml", dump_yaml(objects).encode())
        checked.append(check_cluster("box", cluster, expected_objects(tree)[cluster], dump))
    return assemble_report(checked, [("kubernetes", "kube-iad-a")], tree=dict(tree), today="2026-11-30")


def shown(chromium: Chromium) -> dict[str, Any]:
    return chromium.evaluate("""(() => ({
        boxes: Object.fromEntries([...document.querySelectorAll("g.box")].map(g => [g.id,
            {state: [...g.classList].find(c => c.startsWith("state-")).slice(6), fill: getComputedStyle(g.querySelector("rect")).fill}])),
        titles: [...document.querySelectorAll("svg > text[font-weight=bold]")].map(t => t.textContent),
    }))()""")


def click(chromium: Chromium, box_id: str) -> str:
    return chromium.evaluate(f"""(() => {{
        document.getElementById({box_id!r}).dispatchEvent(new MouseEvent("click", {{bubbles: true}}));
        return document.getElementById("meshc-panel-body").textContent;
    }})()""")


def test_drift_page_colours_targets_by_wave(chromium: Chromium, tree: dict[str, bytes], tmp_path: Path) -> None:
    report = report_of(tree, edit=True)
    load_page(chromium, tmp_path / "drift.html", render_drift_page(report, wave_order(tree)))
    page = shown(chromium)
    assert page["titles"][0].startswith("meshc drift: NOT CONVERGED")
    assert page["titles"][1:] == ["canary", "west", "rest", "no wave", "orphans"], "waves in promotion order, shared objects, orphans"
    boxes = page["boxes"]
    for name, box in boxes.items():
        assert box["fill"] == FILL[box["state"]], name
    assert boxes[element_id(f"kubernetes/kube-sjc-a/{UPLOAD}")]["state"] == "drifted"
    assert boxes[element_id("kubernetes/gke-usc1-a/k8s/gke-usc1-a/search/search")]["state"] == "converged"
    no_evidence = {n for n, b in boxes.items() if n.startswith(element_id("no-evidence/"))}
    assert no_evidence == {element_id(f"no-evidence/{t}") for t, w in report.waves.items() if t.startswith(("k8s/kube-iad-a/", "vm/"))}
    assert {boxes[n]["state"] for n in no_evidence} == {"unknown"}, "no dump (kube-iad-a), no PuppetDB: no data is not a pass"
    assert [n for n in boxes if n.startswith(element_id("orphan/"))] == [element_id("orphan/kubernetes/kube-sjc-a/ConfigMap/upload/old-config")]
    body = click(chromium, element_id(f"kubernetes/kube-sjc-a/{UPLOAD}"))
    assert body.startswith("kubernetes: kube-sjc-a\nwave: west\nstate: drifted\n")
    assert "ConfigMap/upload/upload-mesh-envoy: drifted" in body and "extra data[debug.json]" in body
    body = click(chromium, element_id("orphan/kubernetes/kube-sjc-a/ConfigMap/upload/old-config"))
    assert "delete by hand: kubectl --context kube-sjc-a delete -n upload configmap/old-config" in body


def test_a_fixed_cluster_turns_green(chromium: Chromium, tree: dict[str, bytes], tmp_path: Path) -> None:
    upload = element_id(f"kubernetes/kube-sjc-a/{UPLOAD}")
    load_page(chromium, tmp_path / "before.html", render_drift_page(report_of(tree, edit=True), wave_order(tree)))
    before = shown(chromium)
    load_page(chromium, tmp_path / "after.html", render_drift_page(report_of(tree, edit=False), wave_order(tree)))
    after = shown(chromium)
    assert (before["boxes"][upload]["fill"], after["boxes"][upload]["fill"]) == (FILL["drifted"], FILL["converged"])
    assert "orphans" in before["titles"] and "orphans" not in after["titles"]
    assert {b["state"] for n, b in after["boxes"].items() if not n.startswith(element_id("no-evidence/"))} == {"converged"}


def test_meshc_drift_html_is_the_same_bytes_across_hash_seeds(chromium: Chromium, example_tree: dict[str, bytes],
                                                               tmp_path: Path) -> None:
    """Through the command line: the example spec, every cluster dumped (sjc with a hand edit); two hash seeds give the
    same bytes, and the page (columns are the clusters: `meshc drift` compares against the plain build) loads clean."""
    args = []
    for cluster in ("gke-usc1-a", "kube-iad-a", "kube-sjc-a"):
        objects = live_objects(example_tree, cluster)
        if cluster == "kube-sjc-a":
            objects.append(orphan("box", cluster, "ConfigMap", "v1", "upload", "old-config"))
        path = tmp_path / f"{cluster}.json"
        path.write_text(dump_json(objects))
        args += ["--kubernetes", f"{cluster}={path}"]
    pages = set()
    for seed in ("0", "1"):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "MESHC_TODAY": "2026-11-30", "PYTHONHASHSEED": seed}
        result = subprocess.run([sys.executable, "-m", "compiler", "drift", str(EXAMPLE), *args, "--format", "html"], cwd=ROOT,
                                env=env, capture_output=True, timeout=300, check=False)
        assert result.returncode == 1 and result.stderr == b"", result.stderr  # the orphan
        pages.add(result.stdout)
    assert len(pages) == 1
    page = pages.pop().decode()
    assert page.startswith("<!DOCTYPE html>")
    load_page(chromium, tmp_path / "drift.html", page)
    boxes = shown(chromium)
    assert boxes["titles"][1:] == ["kubernetes/gke-usc1-a", "kubernetes/kube-iad-a", "kubernetes/kube-sjc-a", "orphans"]
    assert {n: b["state"] for n, b in boxes["boxes"].items() if b["state"] != "converged"} == {
        element_id("orphan/kubernetes/kube-sjc-a/ConfigMap/upload/old-config"): "drifted"}


@pytest.fixture(scope="module")
def example_tree(example_build: Any) -> dict[str, bytes]:
    return example_build.tree()
