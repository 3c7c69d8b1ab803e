"""Synapse rendering: multi watchers over every source, the EDS generator entry, locality and priority."""

from __future__ import annotations

from typing import Any

from compiler.render import ENVOY_CDS, SYNAPSE
from compiler.render.envoy import eds_config_path


def entry(build: Any, wid: str, service: str) -> dict[str, Any]:
    return build.sidecars[wid].documents[SYNAPSE]["services"][service]


def test_one_service_per_dependency_and_global_sections(example_build: Any) -> None:
    doc = example_build.sidecars["k8s/kube-sjc-a/upload/upload"].documents[SYNAPSE]
    assert list(doc["services"]) == [
        "encryption",
        "metadata",
        "storage-gateway",
        "event-bus",
        "feature-flags",
    ]
    assert doc["envoy_eds"] == {"output_directory": "/var/run/mesh/eds"}
    assert doc["file_output"] == {"output_directory": "/var/run/mesh/synapse"}


def test_failover_dependency_on_vms_watches_each_zookeeper_in_priority_order(example_build: Any) -> None:
    encryption = entry(example_build, "k8s/kube-sjc-a/upload/upload", "encryption")
    assert encryption["discovery"]["method"] == "multi"
    assert encryption["discovery"]["resolver"] == {"method": "union"}
    assert encryption["discovery"]["watchers"]["zk-sjc"] == {
        "method": "zookeeper",
        "hosts": ["zk1.sjc.box.net:2181", "zk2.sjc.box.net:2181", "zk3.sjc.box.net:2181"],
        "path": "/nerve/services/encryption/services",
    }
    assert encryption["envoy_eds"] == {
        "path": "/var/run/mesh/eds/encryption.json",
        "cluster_name": "encryption",
        "localities": {
            "zk-sjc": {"region": "us-west", "zone": "sjc", "priority": 0},
            "zk-iad": {"region": "us-east", "zone": "iad", "priority": 1},
        },
    }


def test_failover_order_follows_the_client_datacenter(example_build: Any) -> None:
    localities = entry(example_build, "k8s/kube-iad-a/upload/upload", "encryption")["envoy_eds"]["localities"]
    assert localities == {
        "zk-iad": {"region": "us-east", "zone": "iad", "priority": 0},
        "zk-sjc": {"region": "us-west", "zone": "sjc", "priority": 1},
    }


def test_kubernetes_watcher(example_build: Any) -> None:
    watchers = entry(example_build, "vm/download/sjc", "metadata")["discovery"]["watchers"]
    assert watchers["k8s-kube-sjc-a"] == {
        "method": "kubernetes",
        "cluster": "kube-sjc-a",
        "api_server": "https://kube-sjc-a.box.net:6443",
        "namespace": "metadata",
        "service": "metadata",
        "port": 18080,
        "token_file": "/etc/mesh/discovery/kube-sjc-a/token",
        "ca_file": "/etc/mesh/discovery/kube-sjc-a/ca.crt",
    }


def test_mixed_service_gets_both_watcher_kinds(example_build: Any) -> None:
    # storage-gateway: VM pools in sjc, iad, gcp-usc1 and pods in gke-usc1-a (namespace storage)
    storage = entry(example_build, "vm/download/sjc", "storage-gateway")
    assert {name: w["method"] for name, w in storage["discovery"]["watchers"].items()} == {
        "zk-sjc": "zookeeper",
        "zk-iad": "zookeeper",
        "zk-gcp-usc1": "zookeeper",
        "k8s-gke-usc1-a": "kubernetes",
    }
    assert storage["discovery"]["watchers"]["k8s-gke-usc1-a"]["namespace"] == "storage"
    priorities = {name: loc["priority"] for name, loc in storage["envoy_eds"]["localities"].items()}
    assert priorities == {"zk-sjc": 0, "zk-iad": 1, "zk-gcp-usc1": 2, "k8s-gke-usc1-a": 2}


def test_local_dependency_has_only_the_own_datacenter(example_build: Any) -> None:
    user_store = entry(example_build, "vm/auth/iad", "user-store")
    assert list(user_store["discovery"]["watchers"]) == ["zk-iad"]
    assert user_store["envoy_eds"]["localities"] == {
        "zk-iad": {"region": "us-east", "zone": "iad", "priority": 0}
    }


def test_global_dependency_has_every_datacenter_at_priority_zero(example_build: Any) -> None:
    event_bus = entry(example_build, "k8s/kube-iad-a/notification/notification", "event-bus")
    assert {name: loc["priority"] for name, loc in event_bus["envoy_eds"]["localities"].items()} == {
        "zk-gcp-usc1": 0,
        "zk-iad": 0,
        "zk-sjc": 0,
    }


def test_every_watcher_has_a_locality_and_vice_versa(example_build: Any) -> None:
    for sidecar in example_build.sidecars.values():
        for service in sidecar.documents[SYNAPSE]["services"].values():
            assert set(service["discovery"]["watchers"]) == set(service["envoy_eds"]["localities"])


def test_generator_writes_what_the_cluster_reads(example_build: Any) -> None:
    for sidecar in example_build.sidecars.values():
        reads = [p for c in sidecar.documents[ENVOY_CDS]["resources"] if (p := eds_config_path(c))]
        written = [s["envoy_eds"]["path"] for s in sidecar.documents[SYNAPSE]["services"].values()]
        assert reads == written
