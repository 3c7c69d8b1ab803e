"""Backends wrap sidecar documents for one platform and lay them out as artifacts."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping

from compiler.backends.kubernetes import build_kubernetes
from compiler.backends.puppet import build_puppet
from compiler.emit import Artifact
from compiler.ir.model import Mesh
from compiler.render import SidecarConfig

# (mesh, sidecars, only): `only` limits the per-target artifacts (workloads, external readers) to those
# target ids (None: all); shared files are always built. A rollout build lays out each revision's own targets only.
Backend = Callable[[Mesh, Mapping[str, SidecarConfig], Collection[str] | None], list[Artifact]]

# Explicit registry (no discovery by name): each backend is a function of the mesh and the sidecars.
BACKENDS: dict[str, Backend] = {"kubernetes": build_kubernetes, "puppet": build_puppet}


def run_backends(
    mesh: Mesh, sidecars: Mapping[str, SidecarConfig], only: Collection[str] | None = None
) -> list[Artifact]:
    """Every artifact of every registered backend (of the workloads in `only`, when given, plus every shared file)."""
    return [artifact for backend in BACKENDS.values() for artifact in backend(mesh, sidecars, only)]
