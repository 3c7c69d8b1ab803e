"""The sidecar documents of a workload: their names (paths under the sidecar config_dir) and their record."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from compiler.ir.model import Workload

# Document names are paths relative to the sidecar config_dir (mesh.yaml `sidecar.config_dir`).
ENVOY_BOOTSTRAP = "envoy/bootstrap.json"
ENVOY_LDS = "envoy/lds.json"
ENVOY_CDS = "envoy/cds.json"
ENVOY_SDS = (
    "envoy/sds.json"  # the workload certificate as an SDS secret, so a renewed certificate hot-reloads
)
SYNAPSE = "synapse/synapse.json"
NERVE = "nerve/nerve.json"


@dataclass(frozen=True, kw_only=True, slots=True)
class SidecarConfig:
    """The sidecar documents of one workload, by document name; NERVE only for VM workloads."""

    workload: Workload
    documents: Mapping[str, Any]
