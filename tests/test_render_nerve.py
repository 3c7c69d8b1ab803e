"""Nerve rendering: VM workloads register their mesh port where Synapse watches, while healthy."""

from __future__ import annotations

from typing import Any

import pytest

from compiler.render import NERVE, SYNAPSE
from compiler.render.nerve import seconds


@pytest.mark.parametrize("ms, value", [(2000, 2), (1000, 1), (250, 0.25), (1500, 1.5)])
def test_seconds(ms: int, value: float) -> None:
    assert seconds(ms) == value and isinstance(seconds(ms), type(value))


def test_only_vm_workloads_have_nerve(example_build: Any) -> None:
    for sidecar in example_build.sidecars.values():
        assert (NERVE in sidecar.documents) == (sidecar.workload.platform == "vm")


def test_encryption_registration(example_build: Any) -> None:
    doc = example_build.sidecars["vm/encryption/iad"].documents[NERVE]
    assert "instance_id" not in doc  # per host: filled by the platform
    service = doc["services"]["encryption"]
    assert "host" not in service
    # encryption.yaml: health_check {http: /healthz, interval: 1s, rise: 2, fall: 3}; timeout from the mesh default
    assert service == {
        "port": 18080,
        "reporter_type": "zookeeper",
        "zk_hosts": ["zk1.iad.box.net:2181", "zk2.iad.box.net:2181", "zk3.iad.box.net:2181"],
        "zk_path": "/nerve/services/encryption/services",
        "check_interval": 1,
        "checks": [
            {
                "type": "http",
                "name": "app",
                "host": "127.0.0.1",
                "port": 8080,
                "uri": "/healthz",
                "timeout": 1,
                "rise": 2,
                "fall": 3,
            },
            {
                "type": "tcp",
                "name": "sidecar",
                "host": "127.0.0.1",
                "port": 18080,
                "timeout": 1,
                "rise": 2,
                "fall": 3,
            },
        ],
        "labels": {"datacenter": "iad", "region": "us-east"},
    }


def test_tcp_service_checks_tcp(example_build: Any) -> None:
    [app, _] = example_build.sidecars["vm/mysql-proxy/sjc"].documents[NERVE]["services"]["mysql-proxy"][
        "checks"
    ]
    assert app == {
        "type": "tcp",
        "name": "app",
        "host": "127.0.0.1",
        "port": 3306,
        "timeout": 1,
        "rise": 3,
        "fall": 2,
    }


def test_registration_path_is_where_clients_watch(example_build: Any) -> None:
    nerve = example_build.sidecars["vm/encryption/sjc"].documents[NERVE]["services"]["encryption"]
    watcher = example_build.sidecars["vm/download/iad"].documents[SYNAPSE]["services"]["encryption"][
        "discovery"
    ]["watchers"]["zk-sjc"]
    assert (watcher["path"], watcher["hosts"]) == (nerve["zk_path"], nerve["zk_hosts"])
