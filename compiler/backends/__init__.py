"""Backends wrap sidecar documents for one platform and lay them out as artifacts."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping

from compiler.backends.kubernetes import stream_kubernetes
from compiler.backends.puppet import stream_puppet
from compiler.emit import Artifact
from compiler.ir.model import Mesh
from compiler.render import SidecarConfig

# (mesh, sidecars, only, values, shared): `only` limits the per-target artifacts (workloads, external readers) to
# those target ids (None: all). A rollout build lays out each revision's own targets only.
# `values`: do the artifacts carry their values (Artifact.value)? Only `meshc diff` reads them.
# `shared`: are the shared files (those of no target) built? A partial build (compiler.partial) asks for none: it
# keeps them from the previous tree, which holds for the puppet ones because they are functions of mesh.yaml and
# meshc's code alone (a partial build runs only when both are the recorded ones), and it renders the Kubernetes
# cluster files, which list the namespaces placed in each cluster, itself
# (tests/test_incremental.py::test_the_shared_files_a_partial_build_keeps_read_mesh_yaml_alone).
# Each yields its files one at a time (a build writes each before the next is serialized).
Backend = Callable[
    [Mesh, Mapping[str, SidecarConfig], Collection[str] | None, bool, bool], Iterator[Artifact]
]

# Explicit registry (no discovery by name): each backend is a function of the mesh and the sidecars.
BACKENDS: dict[str, Backend] = {"kubernetes": stream_kubernetes, "puppet": stream_puppet}


def run_backends(
    mesh: Mesh,
    sidecars: Mapping[str, SidecarConfig],
    only: Collection[str] | None = None,
    *,
    values: bool = True,
) -> list[Artifact]:
    """Every artifact of every registered backend (of the workloads in `only`, when given, plus every shared file).

    `values=False`: the artifacts carry no values. Only `meshc diff` reads them, and a build that held
    them all would peak 22 % higher (`make bench` meshc-build, 3,000 services: 1,345 MB, not 1,103).
    """
    return list(stream_backends(mesh, sidecars, only, values=values))


def stream_backends(
    mesh: Mesh,
    sidecars: Mapping[str, SidecarConfig],
    only: Collection[str] | None = None,
    *,
    values: bool = False,
    shared: bool = True,
) -> Iterator[Artifact]:
    """`run_backends`, one file at a time (without values unless asked: a streaming build writes bytes)."""
    for backend in BACKENDS.values():
        yield from backend(mesh, sidecars, only, values, shared)
