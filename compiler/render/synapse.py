"""Synapse document of a workload: per dependency, watchers over every source and the EDS file to write.

Two sections are extensions of the site's Synapse fork (upstream has neither): the `kubernetes`
watcher and the `envoy_eds` generator. README.md, "Synapse fork contract", defines every key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from compiler.ir.model import Egress, KubernetesSource, Mesh, Source, Workload, ZookeeperSource
from compiler.render.envoy import eds_dir, eds_path


def synapse(mesh: Mesh, workload: Workload, mesh_ports: Mapping[str, int]) -> dict[str, Any]:
    """The Synapse config: one service per dependency, plus the generators' global sections."""
    return synapse_document(
        mesh, {edge.service: service_entry(mesh, edge, mesh_ports[edge.service]) for edge in workload.egress}
    )


def synapse_document(mesh: Mesh, services: dict[str, Any]) -> dict[str, Any]:
    """The Synapse config around already rendered service entries (the renderer shares them)."""
    return {
        "services": services,
        "envoy_eds": {"output_directory": eds_dir(mesh)},
        "file_output": {"output_directory": f"{mesh.sidecar.runtime_dir}/synapse"},
    }


def service_entry(mesh: Mesh, edge: Egress, mesh_port: int) -> dict[str, Any]:
    """Discover a dependency through all its sources at once, and write its EDS file."""
    watchers = {source.name: watcher(mesh, source, mesh_port) for source in edge.sources}
    return {
        "discovery": {"method": "multi", "watchers": watchers, "resolver": {"method": "union"}},
        "envoy_eds": {
            "path": eds_path(mesh, edge.service),
            "cluster_name": edge.service,
            "localities": {source.name: _locality(source) for source in edge.sources},
        },
    }


def watcher(mesh: Mesh, source: Source, mesh_port: int) -> dict[str, Any]:
    """The watcher of one discovery source: a ZooKeeper path, or a Service through an API server."""
    if isinstance(source, ZookeeperSource):
        return {"method": "zookeeper", "hosts": list(source.hosts), "path": source.path}
    return _kubernetes_watcher(mesh, source, mesh_port)


def _kubernetes_watcher(mesh: Mesh, source: KubernetesSource, mesh_port: int) -> dict[str, Any]:
    credentials = discovery_credentials_dir(mesh, source.cluster)
    return {
        "method": "kubernetes",
        "cluster": source.cluster,
        "api_server": source.api_server,
        "namespace": source.namespace,
        "service": source.service,
        "port": mesh_port,
        "token_file": f"{credentials}/token",
        "ca_file": f"{credentials}/ca.crt",
    }


def discovery_credentials_dir(mesh: Mesh, cluster: str) -> str:
    """Where the platform puts the token and CA that let Synapse read Endpoints in one cluster."""
    return f"{mesh.sidecar.config_dir}/discovery/{cluster}"


def _locality(source: Source) -> dict[str, Any]:
    return {"region": source.region, "zone": source.datacenter, "priority": source.priority}


def watcher_paths(entry: Mapping[str, Any]) -> list[tuple[str, str, list[str]]]:
    """(datacenter, path, hosts) of every ZooKeeper watcher in one service entry of a Synapse document."""
    localities = entry["envoy_eds"]["localities"]
    return [
        (localities[name]["zone"], config["path"], config["hosts"])
        for name, config in entry["discovery"]["watchers"].items()
        if config["method"] == "zookeeper"
    ]
