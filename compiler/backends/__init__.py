"""Backends wrap sidecar documents for one platform and lay them out as artifacts."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping

from compiler.backends.kubernetes import stream_kubernetes
from compiler.backends.puppet import stream_puppet
from compiler.emit import Artifact
from compiler.ir.model import Mesh
from compiler.render import SidecarConfig

# (mesh, sidecars, only): `only` limits the per-target artifacts (workloads, external readers) to those
# target ids (None: all); shared files are always built. A rollout build lays out each revision's own targets only.
# Each yields its files one at a time (a build writes each before the next is serialized).
Backend = Callable[[Mesh, Mapping[str, SidecarConfig], Collection[str] | None], Iterator[Artifact]]

# Explicit registry (no discovery by name): each backend is a function of the mesh and the sidecars.
BACKENDS: dict[str, Backend] = {"kubernetes": stream_kubernetes, "puppet": stream_puppet}


def run_backends(
    mesh: Mesh, sidecars: Mapping[str, SidecarConfig], only: Collection[str] | None = None
) -> list[Artifact]:
    """Every artifact of every registered backend (of the workloads in `only`, when given, plus every shared file)."""
    return [artifact for backend in BACKENDS.values() for artifact in backend(mesh, sidecars, only)]


def stream_backends(
    mesh: Mesh, sidecars: Mapping[str, SidecarConfig], only: Collection[str] | None = None
) -> Iterator[Artifact]:
    """`run_backends`, one file at a time."""
    for backend in BACKENDS.values():
        yield from backend(mesh, sidecars, only)
