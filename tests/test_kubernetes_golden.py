"""Golden kube-applier trees of the example mesh, one per cluster, compared byte-exact.

Refresh on purpose with MESHC_UPDATE_GOLDEN=1 (or `make golden`) and review the diff like code.
"""

from __future__ import annotations

import difflib
import os
import shutil
from pathlib import Path

import pytest

from compiler.backends.kubernetes import build_kubernetes
from compiler.backends.kubernetes.layout import ROOT as KUBERNETES_ROOT
from compiler.ir.lower import lower
from compiler.output.disk import read_tree
from compiler.pipeline import spec_files
from compiler.render import render
from compiler.spec.checks import check
from compiler.spec.load import load_documents

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).parent / "golden" / "kubernetes"
CLUSTERS = ("gke-usc1-a", "kube-iad-a", "kube-sjc-a")


@pytest.fixture(scope="module")
def trees() -> dict[str, dict[str, bytes]]:
    """Cluster -> its tree (path relative to kubernetes/<cluster>/ -> bytes), from the stages this backend reads."""
    mesh = lower(check(load_documents(spec_files(ROOT / "mesh-spec"), "mesh-spec")))
    found: dict[str, dict[str, bytes]] = {}
    for artifact in build_kubernetes(mesh, render(mesh)):
        _, cluster, rest = artifact.path.split("/", 2)
        found.setdefault(cluster, {})[rest] = artifact.data
    return found


def test_golden_covers_every_cluster(trees: dict[str, dict[str, bytes]]) -> None:
    assert sorted(trees) == list(CLUSTERS)


@pytest.mark.golden
@pytest.mark.parametrize("cluster", CLUSTERS)
def test_cluster_tree_matches_golden(trees: dict[str, dict[str, bytes]], cluster: str) -> None:
    expected_dir = GOLDEN / cluster
    actual = trees[cluster]
    if os.environ.get("MESHC_UPDATE_GOLDEN"):
        shutil.rmtree(expected_dir, ignore_errors=True)
        for path, data in actual.items():
            (expected_dir / path).parent.mkdir(parents=True, exist_ok=True)
            (expected_dir / path).write_bytes(data)
    expected = read_tree(expected_dir)
    assert sorted(actual) == sorted(expected), (
        f"the file set of {KUBERNETES_ROOT}/{cluster} differs from {expected_dir}"
    )
    for path in sorted(actual):
        if actual[path] != expected[path]:
            diff = difflib.unified_diff(
                expected[path].decode().splitlines(),
                actual[path].decode().splitlines(),
                f"golden/{path}",
                f"built/{path}",
                lineterm="",
                n=2,
            )
            pytest.fail(f"{cluster}/{path} differs from the golden file:\n" + "\n".join(list(diff)[:40]))
