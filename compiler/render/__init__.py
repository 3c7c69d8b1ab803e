"""Render the Mesh IR into sidecar documents (Envoy, Synapse, Nerve), identical for VMs and pods."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from compiler.ir.model import Mesh, Workload

# Document names are paths relative to the sidecar config_dir (mesh.yaml `sidecar.config_dir`).
ENVOY_BOOTSTRAP = "envoy/bootstrap.json"
ENVOY_LDS = "envoy/lds.json"
ENVOY_CDS = "envoy/cds.json"
SYNAPSE = "synapse/synapse.json"
NERVE = "nerve/nerve.json"


@dataclass(frozen=True, kw_only=True, slots=True)
class SidecarConfig:
    """The sidecar documents of one workload, by document name; NERVE only for VM workloads."""

    workload: Workload
    documents: Mapping[str, Any]


def render(mesh: Mesh) -> dict[str, SidecarConfig]:
    """Workload id -> its sidecar documents. Filled in by the sidecar renderers."""
    return {}
