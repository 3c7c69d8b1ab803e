"""The drift status page (`meshc drift --format html`) in headless Chromium: waves as columns of targets and hosts,
each coloured by its state (converged, pending, drifted, failed, unknown), orphans listed, findings on click;
a host that catches up changes colour.

The report comes from the real checks: a rollout build of a temporary git repository (MANIFEST rollout
with a canary-host wave), cluster dumps as the API server returns them, and hosts as a PuppetDB export."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from compiler.backends.puppet import HASHES_KEY
from compiler.drift.detect import assemble_report
from compiler.drift.html import render_drift_page
from compiler.drift.kube_dump import parse_dump
from compiler.drift.kubernetes import check_cluster, expected_objects
from compiler.drift.model import DriftReport
from compiler.drift.puppet import Policy, detect_puppet_drift, expected_rendering
from compiler.drift.puppet_records import host_records
from compiler.drift.puppetdb import read_export
from compiler.graph.dot import element_id
from compiler.pipeline import compile_dir
from compiler.rollout.hosts import INVENTORY_FILE
from compiler.rollout.output import output_for
from tests.browser import Chromium
from tests.conftest import EXAMPLE, ROOT
from tests.live_k8s import dump_json, dump_yaml, live_objects, orphan
from tests.test_gitsource import commit, make_repo
from tests.test_graph_browser import load_page
from tests.test_rollout_build import SPEC, add_timeout_change, set_policy
from tests.test_rollout_hosts import POLICY

pytestmark = pytest.mark.consumer  # every test here hands artifacts to Chromium

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
WAVES = ("canary", "canary-hosts", "west", "rest")
DUMPED = ("gke-usc1-a", "kube-sjc-a")  # kube-iad-a is given no dump: its targets have no evidence
FILL = {
    "converged": "rgb(218, 251, 225)",
    "pending": "rgb(255, 248, 197)",
    "drifted": "rgb(255, 235, 233)",
    "failed": "rgb(207, 34, 46)",
    "unknown": "rgb(234, 238, 242)",
}  # STATE_COLORS fills as the browser computes them
POOL = "vm/auth/sjc"  # in west; two of its hosts are canary hosts (canary-hosts wave)
INVENTORY = [f"auth-{i:02}.sjc.box.net" for i in range(5)]
GHOST = "ghost-1.sjc.box.net"  # reports mesh facts for a pool meshc does not render: an orphan


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The rollout build of a repo whose canary-hosts wave runs a newer revision than its pools (west, rest)."""
    repo = make_repo(tmp_path_factory.mktemp("drift-page") / "repo")
    spec = repo / SPEC
    set_policy(spec, POLICY)
    (spec / INVENTORY_FILE).parent.mkdir(exist_ok=True)
    (spec / INVENTORY_FILE).write_text(
        "".join(f"- {{certname: {c}, service: auth, datacenter: sjc}}\n" for c in INVENTORY)
    )
    base = commit(repo, "policy and inventory")
    (spec / "rollout.yaml").write_text(
        f"hold: false\npins:\n  canary-hosts: {base}\n  west: {base}\n  rest: {base}\n"
    )
    commit(repo, "rollout")
    head = add_timeout_change(repo)
    (spec / "rollout.yaml").write_text(
        f"hold: false\npins:\n  canary-hosts: {head}\n  west: {base}\n  rest: {base}\n"
    )
    commit(repo, "promote canary-hosts")
    return output_for(spec)


def canaries(tree: Mapping[str, bytes]) -> list[str]:
    return sorted(json.loads(tree["MANIFEST.json"])["rollout"]["hosts"])


def states(tree: Mapping[str, bytes], caught_up: bool = False) -> dict[str, str]:
    """What each inventory host does: the first canary host is behind (its pool's data) unless `caught_up`."""
    first, second = canaries(tree)
    edited, failed, cached = (c for c in INVENTORY if c not in (first, second))
    return {
        first: "fresh" if caught_up else "behind",
        second: "fresh",
        edited: "edited",
        failed: "failed",
        cached: "cached",
        GHOST: "ghost",
    }


def export(tree: Mapping[str, bytes], path: Path, hosts_do: Mapping[str, str]) -> Path:
    """A PuppetDB export (its nodes and facts answers): a converged host per pool, plus `hosts_do`.

    `hosts_do` maps a certname to what that host does."""
    rendering = expected_rendering(tree)
    nodes, facts = [], []
    hosts = {
        f"{w.split('/')[1]}-ok.{w.split('/')[2]}.box.net": (w, dict(e.hashes), "ok")
        for w, e in rendering.pools.items()
    }
    for certname, how in hosts_do.items():
        node = rendering.nodes.get(certname)
        documents = dict(
            node.hashes if node is not None and how != "behind" else rendering.pools[POOL].hashes
        )
        if how == "edited":
            documents = documents | {next(iter(sorted(documents))): "edited:sha256:" + "1" * 64}
        hosts[certname] = ("vm/ghost/sjc" if how == "ghost" else POOL, documents, how)
    for certname, (workload, documents, how) in sorted(hosts.items()):
        _, service, datacenter = workload.split("/")
        stamp = (NOW - timedelta(minutes=5)).isoformat()
        nodes.append(
            {
                "certname": certname,
                "facts_timestamp": stamp,
                "report_timestamp": stamp,
                "latest_report_status": "failed" if how == "failed" else "unchanged",
                "cached_catalog_status": "on_failure" if how == "cached" else "not_used",
            }
        )
        values = {
            "mesh_service": service,
            "mesh_datacenter": datacenter,
            "mesh_applied": {
                "workload": workload,
                "service": service,
                "datacenter": datacenter,
                "documents": documents,
            },
        }
        facts += [{"certname": certname, "name": name, "value": value} for name, value in values.items()]
    path.write_text(json.dumps({"nodes": nodes, "facts": facts}, indent=1))
    return path


def report_of(
    tree: Mapping[str, bytes], directory: Path, caught_up: bool = False, edit_sjc: bool = True
) -> DriftReport:
    """The real checks: two clusters' dumps (sjc: a hand-edited ConfigMap key, an orphan), the PuppetDB export."""
    checked = []
    for cluster in DUMPED:
        objects = live_objects(tree, cluster)
        if cluster == "kube-sjc-a" and edit_sjc:
            config = next(
                o
                for o in objects
                if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "upload-mesh-envoy"
            )
            config["data"]["debug.json"] = "{}"
            objects.append(orphan("box", cluster, "ConfigMap", "v1", "upload", "old-config"))
        checked.append(
            check_cluster(
                "box",
                cluster,
                expected_objects(tree)[cluster],
                parse_dump(f"{cluster}.yaml", dump_yaml(objects).encode()),
            )
        )
    vms = detect_puppet_drift(
        expected_rendering(tree),
        read_export(export(tree, directory / "export.json", states(tree, caught_up))),
        Policy(now=NOW),
    )
    checked.append(host_records(vms))
    return assemble_report(checked, [("kubernetes", "kube-iad-a")], tree=dict(tree), today="2026-11-30")


def shown(chromium: Chromium) -> dict[str, Any]:
    return chromium.evaluate("""(() => ({
        boxes: Object.fromEntries([...document.querySelectorAll("g.box")].map(g => [g.id,
            {state: [...g.classList].find(c => c.startsWith("state-")).slice(6),
             fill: getComputedStyle(g.querySelector("rect")).fill}])),
        titles: [...document.querySelectorAll("svg > text[font-weight=bold]")].map(t => t.textContent),
    }))()""")


def click(chromium: Chromium, box_id: str) -> str:
    return chromium.evaluate(f"""(() => {{
        document.getElementById({box_id!r}).dispatchEvent(new MouseEvent("click", {{bubbles: true}}));
        return document.getElementById("meshc-panel-body").textContent;
    }})()""")


def test_drift_page_colours_every_state_by_wave(
    chromium: Chromium, tree: dict[str, bytes], tmp_path: Path
) -> None:
    report = report_of(tree, tmp_path)
    does = {how: certname for certname, how in states(tree).items()}
    load_page(chromium, tmp_path / "drift.html", render_drift_page(report))
    page = shown(chromium)
    assert page["titles"][0].startswith("meshc drift: NOT CONVERGED")
    assert page["titles"][1:] == [*WAVES, "no wave", "orphans"], (
        "waves in promotion order (MANIFEST rollout), shared objects, orphans"
    )
    boxes = page["boxes"]
    host = lambda certname: boxes[element_id(f"host/puppet/{tmp_path / 'export.json'}/{certname}")]  # noqa: E731
    assert (host(does["behind"])["state"], host(does["fresh"])["state"]) == ("pending", "converged"), (
        "canary hosts, by their node files"
    )
    assert host(does["edited"])["state"] == "drifted" and host(does["failed"])["state"] == "failed"
    assert host(does["cached"])["state"] == "unknown"
    for name, box in boxes.items():
        assert box["fill"] == FILL[box["state"]], name
    pool = boxes[element_id(f"puppet/{tmp_path / 'export.json'}/{POOL}")]
    assert pool["state"] == "drifted"  # its worst host
    upload = boxes[element_id("kubernetes/kube-sjc-a/k8s/kube-sjc-a/upload/upload")]
    assert upload["state"] == "drifted"
    assert boxes[element_id("no-evidence/k8s/kube-iad-a/upload/upload")]["state"] == "unknown", (
        "no dump of kube-iad-a: no data"
    )
    assert boxes[element_id("kubernetes/gke-usc1-a/k8s/gke-usc1-a/search/search")]["state"] == "converged"
    assert {n for n in boxes if n.startswith(element_id("orphan/"))} == {
        element_id("orphan/kubernetes/kube-sjc-a/ConfigMap/upload/old-config"),
        element_id(f"orphan/puppet/{tmp_path / 'export.json'}/{GHOST}"),
    }
    body = click(chromium, element_id("kubernetes/kube-sjc-a/k8s/kube-sjc-a/upload/upload"))
    assert "ConfigMap/upload/upload-mesh-envoy: drifted" in body and "extra data[debug.json]" in body
    body = click(chromium, element_id("orphan/kubernetes/kube-sjc-a/ConfigMap/upload/old-config"))
    assert "delete by hand: kubectl --context kube-sjc-a delete -n upload configmap/old-config" in body


def test_a_host_that_catches_up_and_a_fixed_cluster_change_colour(
    chromium: Chromium, tree: dict[str, bytes], tmp_path: Path
) -> None:
    box_id = element_id(f"host/puppet/{tmp_path / 'export.json'}/{canaries(tree)[0]}")
    upload = element_id("kubernetes/kube-sjc-a/k8s/kube-sjc-a/upload/upload")
    load_page(chromium, tmp_path / "before.html", render_drift_page(report_of(tree, tmp_path)))
    before = shown(chromium)["boxes"]
    load_page(
        chromium,
        tmp_path / "after.html",
        render_drift_page(report_of(tree, tmp_path, caught_up=True, edit_sjc=False)),
    )
    after = shown(chromium)["boxes"]
    assert (before[box_id]["fill"], after[box_id]["fill"]) == (FILL["pending"], FILL["converged"])
    assert (before[upload]["fill"], after[upload]["fill"]) == (FILL["drifted"], FILL["converged"])
    assert not any(name.startswith(element_id("orphan/kubernetes/")) for name in after), (
        "the orphan is gone from the page"
    )


def test_meshc_drift_html_is_the_same_bytes_across_hash_seeds(chromium: Chromium, tmp_path: Path) -> None:
    """Through the command line: the example spec without its wave policy (columns are the scopes), every cluster
    dumped, the VMs from an export; two hash seeds give the same bytes, and the page loads clean."""
    spec = tmp_path / "spec"
    shutil.copytree(EXAMPLE, spec, ignore=shutil.ignore_patterns("rollout.yaml", "inventory"))
    set_policy(spec, "")
    args = []
    plain = compile_dir(spec).tree()
    for cluster in ("gke-usc1-a", "kube-iad-a", "kube-sjc-a"):
        path = tmp_path / f"{cluster}.json"
        path.write_text(dump_json(live_objects(plain, cluster)))
        args += ["--kubernetes", f"{cluster}={path}"]
    args += [
        "--puppet-facts",
        str(export(plain, tmp_path / "facts.json", {INVENTORY[0]: "edited", INVENTORY[1]: "failed"})),
    ]
    pages = set()
    for seed in ("0", "1"):
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "MESHC_TODAY": "2026-11-30",
            "MESHC_NOW": NOW.isoformat(),
            "PYTHONHASHSEED": seed,
        }
        result = subprocess.run(
            [sys.executable, "-m", "compiler", "drift", str(spec), *args, "--format", "html"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            timeout=300,
            check=False,
        )
        # the export's edited and failed hosts
        assert result.returncode == 1 and result.stderr == b"", result.stderr
        pages.add(result.stdout)
    assert len(pages) == 1
    page = pages.pop().decode()
    assert page.startswith("<!DOCTYPE html>") and HASHES_KEY not in page
    load_page(chromium, tmp_path / "drift.html", page)
    boxes = shown(chromium)
    assert boxes["titles"][1:] == [
        "kubernetes: gke-usc1-a",
        "kubernetes: kube-iad-a",
        "kubernetes: kube-sjc-a",
        f"puppet: {tmp_path / 'facts.json'}",  # a path scope reads as the others do: not puppet//tmp/…
    ]
    assert {n: b["state"] for n, b in boxes["boxes"].items() if b["state"] != "converged"} == {
        # its worst host: a hand edit is worse than a failed run
        element_id(f"puppet/{tmp_path / 'facts.json'}/{POOL}"): "drifted",
        element_id(f"host/puppet/{tmp_path / 'facts.json'}/{INVENTORY[0]}"): "drifted",
        element_id(f"host/puppet/{tmp_path / 'facts.json'}/{INVENTORY[1]}"): "failed",
    }
