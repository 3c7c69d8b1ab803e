"""Backends wrap sidecar documents for one platform and lay them out as artifacts."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import replace

from compiler.emit import Artifact
from compiler.ir.model import Mesh
from compiler.render import SidecarConfig

# (mesh, sidecars, only): `only` limits the per-target artifacts (workloads, external readers) to those
# target ids (None: all); shared files are always built. A rollout build lays out each revision's own targets only.
Backend = Callable[[Mesh, Mapping[str, SidecarConfig], Collection[str] | None], list[Artifact]]

# Explicit registry (no discovery by name): each backend is a function of the mesh and the sidecars.
BACKENDS: dict[str, Backend] = {}

from compiler.backends.kubernetes import build_kubernetes  # noqa: E402 - after Backend, which backends may import
from compiler.backends.puppet import build_puppet  # noqa: E402

BACKENDS["kubernetes"] = build_kubernetes
BACKENDS["puppet"] = build_puppet


def run_backends(
    mesh: Mesh,
    sidecars: Mapping[str, SidecarConfig],
    only: Collection[str] | None = None,
    *,
    values: bool = True,
) -> list[Artifact]:
    """Every artifact of every registered backend (of the workloads in `only`, when given, plus every shared file).

    `values=False` drops each artifact's value as its backend returns: only `meshc diff` reads them, and
    a build that held them all would peak 19 % higher (a fresh build of 1,000 services: 392 -> 468 MB).
    """
    artifacts: list[Artifact] = []
    for backend in BACKENDS.values():
        made = backend(mesh, sidecars, only)
        if not values:  # rebound before the next backend runs, so this one's values are freed
            made = [replace(a, value=None) for a in made]
        artifacts += made
    return artifacts
