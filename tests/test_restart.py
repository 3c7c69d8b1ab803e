"""Restart classification of real spec changes: what a change to a workload's documents costs."""

from __future__ import annotations

from typing import Any

import pytest

from compiler.memo import Memo
from compiler.pipeline import Build, compile, spec_files
from compiler.render import ENVOY_BOOTSTRAP, ENVOY_CDS, ENVOY_LDS, ENVOY_SDS, NERVE, SYNAPSE
from compiler.render.restart import (
    DOCUMENT_CLASS,
    RestartClass,
    changes,
    classify,
    document_prints,
    print_view,
    restart_view,
)
from tests.conftest import EXAMPLE

UPLOAD = "k8s/kube-sjc-a/upload/upload"
ENCRYPTION = "vm/encryption/sjc"


def edited(path: str, old: str, new: str) -> Build:
    """The example compiled with one textual edit to one spec file."""
    files = spec_files(EXAMPLE)
    text = files[path].decode()
    assert text.count(old) == 1, f"{old!r} must occur once in {path}"
    files[path] = text.replace(old, new).encode()
    return compile(files, "mesh-spec")


def costs(before: Build, after: Build) -> dict[str, RestartClass]:
    """Workload id -> class, for every workload whose documents changed; each also found from the documents' prints
    (what comparing two rollout builds keeps of them), which must say the same, document by document."""
    ids = set(before.sidecars) | set(after.sidecars)
    found = {wid: classify(_docs(before, wid), _docs(after, wid)) for wid in sorted(ids)}
    for wid in ids:
        old, new = _prints(before, wid), _prints(after, wid)
        assert changes(old, new, print_view) == changes(_docs(before, wid), _docs(after, wid)), wid
        assert (old == new) == (_docs(before, wid) == _docs(after, wid)), wid
    return {wid: cost for wid, cost in found.items() if cost is not RestartClass.NONE}


def _docs(build: Build, wid: str) -> Any:
    return build.sidecars[wid].documents if wid in build.sidecars else None


def _prints(build: Build, wid: str) -> Any:
    return document_prints(build.sidecars[wid].documents, Memo()) if wid in build.sidecars else None


def test_timeout_change_is_a_hot_reload_of_the_clients_only(example_build: Build) -> None:
    after = edited(
        "services/upload.yaml",
        "  - service: encryption\n    timeout: 2s",
        "  - service: encryption\n    timeout: 3s",
    )
    assert costs(example_build, after) == {
        "k8s/kube-iad-a/upload/upload": RestartClass.HOT_RELOAD,
        UPLOAD: RestartClass.HOT_RELOAD,
    }
    assert changes(_docs(example_build, UPLOAD), _docs(after, UPLOAD)) == {ENVOY_LDS: RestartClass.HOT_RELOAD}


def test_circuit_breaker_change_is_a_hot_reload(example_build: Build) -> None:
    after = edited("services/upload.yaml", "max_requests: 4096", "max_requests: 8192")
    assert changes(_docs(example_build, UPLOAD), _docs(after, UPLOAD)) == {ENVOY_CDS: RestartClass.HOT_RELOAD}


def test_new_dependency_is_a_hot_reload(example_build: Build) -> None:
    """Envoy hot-reloads the new listener and cluster, Synapse its services: no process restarts."""
    after = edited(
        "services/upload.yaml",
        "  - service: feature-flags\n",
        "  - service: feature-flags\n  - service: search\n",
    )
    assert changes(_docs(example_build, UPLOAD), _docs(after, UPLOAD)) == {
        ENVOY_CDS: RestartClass.HOT_RELOAD,
        ENVOY_LDS: RestartClass.HOT_RELOAD,
        SYNAPSE: RestartClass.HOT_RELOAD,
    }
    found = costs(example_build, after)
    # the server admits the new client: a hot reload of its LDS, nothing more
    assert found.pop("k8s/gke-usc1-a/search/search") == RestartClass.HOT_RELOAD
    assert found == {"k8s/kube-iad-a/upload/upload": RestartClass.HOT_RELOAD, UPLOAD: RestartClass.HOT_RELOAD}


def test_synapse_process_settings_still_need_a_restart(example_build: Build) -> None:
    """Only `services` reloads live; the generators' global sections are read at Synapse's start."""
    before = example_build.sidecars[UPLOAD].documents
    after = dict(before)
    after[SYNAPSE] = {**before[SYNAPSE], "file_output": {"output_directory": "/elsewhere"}}
    assert changes(before, after) == {SYNAPSE: RestartClass.SIDECAR_RESTART}
    assert restart_view(SYNAPSE, before[SYNAPSE]) == {
        k: v for k, v in before[SYNAPSE].items() if k != "services"
    }
    assert restart_view(ENVOY_LDS, before[ENVOY_LDS]) is None
    assert restart_view(ENVOY_BOOTSTRAP, before[ENVOY_BOOTSTRAP]) == before[ENVOY_BOOTSTRAP]


def test_admin_port_change_restarts_every_envoy(example_build: Build) -> None:
    after = edited("mesh.yaml", "admin_port: 9901", "admin_port: 9902")
    found = costs(example_build, after)
    assert set(found) == set(example_build.sidecars)
    assert set(found.values()) == {RestartClass.ENVOY_RESTART}
    assert changes(_docs(example_build, UPLOAD), _docs(after, UPLOAD)) == {
        ENVOY_BOOTSTRAP: RestartClass.ENVOY_RESTART
    }


def test_node_locality_change_restarts_envoy(example_build: Build) -> None:
    """A datacenter's region is part of the node's locality, which Envoy reads only at start."""
    after = edited("mesh.yaml", "region: us-west", "region: us-west-2")
    found = costs(example_build, after)
    assert found[ENCRYPTION] == RestartClass.ENVOY_RESTART
    assert found[UPLOAD] == RestartClass.ENVOY_RESTART
    assert ENVOY_BOOTSTRAP in changes(_docs(example_build, ENCRYPTION), _docs(after, ENCRYPTION))


def test_health_check_change_restarts_nerve_only(example_build: Build) -> None:
    after = edited("services/encryption.yaml", "rise: 2", "rise: 4")
    assert costs(example_build, after) == {
        "vm/encryption/iad": RestartClass.SIDECAR_RESTART,
        ENCRYPTION: RestartClass.SIDECAR_RESTART,
    }
    assert changes(_docs(example_build, ENCRYPTION), _docs(after, ENCRYPTION)) == {
        NERVE: RestartClass.SIDECAR_RESTART
    }


def test_unchanged_spec_costs_nothing(example_build: Build) -> None:
    for sidecar in example_build.sidecars.values():
        assert classify(sidecar.documents, sidecar.documents) is RestartClass.NONE


def test_a_workload_that_appears_or_disappears_costs_a_start(example_build: Build) -> None:
    documents = example_build.sidecars[ENCRYPTION].documents
    assert classify(None, documents) is RestartClass.ENVOY_RESTART
    assert classify(documents, None) is RestartClass.ENVOY_RESTART


@pytest.mark.parametrize(
    "name, expected",
    [
        (ENVOY_LDS, RestartClass.HOT_RELOAD),
        (ENVOY_CDS, RestartClass.HOT_RELOAD),
        (ENVOY_SDS, RestartClass.HOT_RELOAD),
        (SYNAPSE, RestartClass.SIDECAR_RESTART),
        (NERVE, RestartClass.SIDECAR_RESTART),
        (ENVOY_BOOTSTRAP, RestartClass.ENVOY_RESTART),
    ],
)
def test_every_rendered_document_has_a_class(example_build: Build, name: str, expected: RestartClass) -> None:
    assert DOCUMENT_CLASS[name] is expected
    assert any(name in s.documents for s in example_build.sidecars.values())


def test_unknown_document_is_assumed_costliest() -> None:
    assert classify({"x/y.json": 1}, {"x/y.json": 2}) is RestartClass.ENVOY_RESTART


def test_labels() -> None:
    assert [c.label for c in RestartClass] == [
        "none",
        "hot-reload",
        "sidecar-restart",
        "envoy-restart",
        "pod-roll",
    ]


def test_no_rendered_document_falls_back_to_the_default(example_build: Build) -> None:
    names = {name for sidecar in example_build.sidecars.values() for name in sidecar.documents}
    assert names <= set(DOCUMENT_CLASS)
