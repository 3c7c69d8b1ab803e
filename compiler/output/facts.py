"""What a plain build records of the spec it was built from, service by service, in the build cache
(compiler.output.cache): the facts a partial build (compiler.partial) works from instead of the whole spec.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, kw_only=True, slots=True)
class ServiceFacts:
    """What a plain build recorded of one service of a spec that passed every check (see compiler.partial).

    `file`/`digest`: its spec file's name and sha256; `face`: what other services' targets read of its spec
    (compiler.output.reuse.face); `exposed`: what other workloads' invariants read of its workloads
    (compiler.render.invariants.exposed); `places`: the (cluster, namespace) pairs its
    targets write into, external readers' `meshc-discovery` included.
    """

    file: str
    digest: str
    face: str
    exposed: str
    dependencies: tuple[str, ...]
    local_port: int
    targets: tuple[str, ...]
    places: tuple[tuple[str, str], ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class Recorded:
    """The spec a plain build's tree was built from, by facts: mesh.yaml's name and sha256, and every service's."""

    mesh_file: str
    mesh_digest: str
    services: Mapping[str, ServiceFacts]


def recorded_of(raw: Any, inputs: Iterable[str]) -> Recorded | None:
    """The facts of the spec the cached tree was built from, if the cache holds them (`raw`, its "recorded") in the
    shape meshc writes; `inputs`: the targets the cache holds input hashes of.

    Parsed only here, for a partial build: a no-op build or `check` never pays for them. Each service's
    targets are the input-hashed target ids it owns (`vm/<service>/<dc>`, `k8s/<cluster>/<namespace>/<service>`,
    an external reader's `k8s/<cluster>/meshc-discovery/<service>`), its places their cluster and namespace.
    """
    if not _is_recorded(raw):
        return None
    targets: dict[str, list[str]] = {name: [] for name in raw["services"]}
    places: dict[str, set[tuple[str, str]]] = {name: set() for name in raw["services"]}
    for target in inputs:
        parts = target.split("/")
        vm, k8s = parts[0] == "vm" and len(parts) == 3, parts[0] == "k8s" and len(parts) == 4
        owner = parts[1] if vm else parts[3] if k8s else None
        if owner not in targets:
            return None
        targets[owner].append(target)
        if k8s:
            places[owner].add((parts[1], parts[2]))
    return Recorded(
        mesh_file=raw["mesh"][0],
        mesh_digest=raw["mesh"][1],
        services={
            name: ServiceFacts(
                file=file,
                digest=digest,
                face=face,
                exposed=exposed,
                dependencies=tuple(dependencies),
                local_port=local_port,
                targets=tuple(sorted(targets[name])),
                places=tuple(sorted(places[name])),
            )
            for name, (file, digest, face, exposed, dependencies, local_port) in raw["services"].items()
        },
    )


def recorded_json(recorded: Recorded | None) -> Any:
    """The facts as the cache holds them (`recorded_of` reads them back)."""
    if recorded is None:
        return None
    return {
        "mesh": [recorded.mesh_file, recorded.mesh_digest],
        "services": {
            name: [f.file, f.digest, f.face, f.exposed, f.dependencies, f.local_port]
            for name, f in recorded.services.items()
        },
    }


def _is_recorded(raw: Any) -> bool:
    return (
        isinstance(raw, dict)
        and set(raw) == {"mesh", "services"}
        and _strings(raw["mesh"], 2)
        and isinstance(raw["services"], dict)
        and all(_is_facts(v) for v in raw["services"].values())
    )


def _is_facts(raw: Any) -> bool:
    """[file, digest, face, exposed, dependencies, local_port], as `recorded_json` writes it."""
    if not (isinstance(raw, list) and len(raw) == 6):
        return False
    *names, dependencies, local_port = raw
    return _strings(names) and _strings(dependencies) and type(local_port) is int


def _strings(raw: Any, length: int | None = None) -> bool:
    return (
        isinstance(raw, list)
        and (length is None or len(raw) == length)
        and all(isinstance(item, str) for item in raw)
    )
