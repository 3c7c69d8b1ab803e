"""Golden kube-applier trees of the example mesh: what `meshc build` renders, byte-exact against output/kubernetes/.

The committed output/ is the one copy of the golden trees (there is no second one under tests/golden/):
`make build` or `make golden` refreshes it and its diff is reviewed like code. A rendering change
without that refresh fails here, with the first differing file's diff.
"""

from __future__ import annotations

import pytest

from compiler.backends.kubernetes.layout import ROOT as KUBERNETES_ROOT
from tests.conftest import ROOT, assert_same_tree

GOLDEN = ROOT / "output" / KUBERNETES_ROOT
CLUSTERS = ("gke-usc1-a", "kube-iad-a", "kube-sjc-a")


@pytest.fixture(scope="module")
def trees(example_output: dict[str, bytes]) -> dict[str, dict[str, bytes]]:
    """Cluster -> its tree (path relative to kubernetes/<cluster>/ -> bytes), as `meshc build` renders it."""
    found: dict[str, dict[str, bytes]] = {}
    for path, data in example_output.items():
        root, _, rest = path.partition("/")
        if root == KUBERNETES_ROOT:
            cluster, _, relative = rest.partition("/")
            found.setdefault(cluster, {})[relative] = data
    return found


def test_golden_covers_every_cluster(trees: dict[str, dict[str, bytes]]) -> None:
    assert sorted(trees) == list(CLUSTERS)
    assert sorted(p.name for p in GOLDEN.iterdir()) == list(CLUSTERS)


@pytest.mark.golden
@pytest.mark.parametrize("cluster", CLUSTERS)
def test_cluster_tree_matches_golden(trees: dict[str, dict[str, bytes]], cluster: str) -> None:
    assert_same_tree(trees[cluster], GOLDEN / cluster, refresh="`make golden`")
