"""Golden sidecar documents of representative workloads, compared byte-exact.

Refresh on purpose with MESHC_UPDATE_GOLDEN=1 (or `make golden`) and review the diff like code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from compiler.emit import dump_json

GOLDEN = Path(__file__).parent / "golden" / "sidecars"

WORKLOADS = {
    "k8s/kube-sjc-a/upload/upload": "upload in a cluster: calls encryption on VMs, global event-bus and feature-flags",
    "vm/encryption/sjc": "encryption on a VM pool (gRPC): Nerve registration, failover to iad",
    "vm/auth/sjc": "a `local` dependency (user-store): one source, priority 0 only",
    "k8s/kube-iad-a/notification/notification": "a `global` tcp dependency (event-bus): every DC at priority 0",
    "vm/download/iad": "a VM client of a Kubernetes-only service (metadata): kubernetes watchers",
}


def golden_files(documents: dict[str, Any]) -> dict[str, bytes]:
    return {name: dump_json(doc) for name, doc in sorted(documents.items())}


@pytest.mark.golden
@pytest.mark.parametrize("workload", sorted(WORKLOADS))
def test_sidecar_documents_match_golden(example_build: Any, workload: str) -> None:
    expected_dir = GOLDEN / workload
    actual = golden_files(dict(example_build.sidecars[workload].documents))
    if os.environ.get("MESHC_UPDATE_GOLDEN"):
        for name, data in actual.items():
            (expected_dir / name).parent.mkdir(parents=True, exist_ok=True)
            (expected_dir / name).write_bytes(data)
    expected = {
        p.relative_to(expected_dir).as_posix(): p.read_bytes() for p in sorted(expected_dir.rglob("*.json"))
    }
    assert sorted(actual) == sorted(expected), "document set differs from the golden files"
    for name in actual:
        assert actual[name] == expected[name], f"{workload}: {name} differs from {expected_dir / name}"
