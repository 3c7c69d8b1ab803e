"""What a build records of a spec that passed every check, target by target: each spec file's hash, each
target's owner and input hash (what its files are rendered from), and each service's facts for the next partial
build (compiler.output.facts). The incremental build (compiler.incremental) and the differ (compiler.diff) read them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from compiler.output.facts import Recorded, ServiceFacts
from compiler.output.reuse import face, input_hash, roles

if TYPE_CHECKING:
    from compiler.backends.kubernetes.readers import ExternalReader
    from compiler.ir.model import Mesh, Workload
    from compiler.spec.load import Unreadable
    from compiler.spec.model import Spec


def target_owners(mesh: Mesh, readers: Sequence[ExternalReader]) -> dict[str, str]:
    """Every target id (a workload's, an external reader's) -> the service it belongs to."""
    return {w.id: w.service for w in mesh.workloads} | {r.id: r.service for r in readers}


def file_hashes(files: Mapping[str, bytes | Unreadable], label: str) -> dict[str, str]:
    """sha256 of each spec file, by the name diagnostics and spec records give it (`<label>/<relative path>`)."""
    return {
        f"{label}/{name}": hashlib.sha256(data).hexdigest()
        for name, data in files.items()
        if isinstance(data, bytes)
    }


def target_inputs(
    spec: Spec, mesh: Mesh, hashes: Mapping[str, str], readers: Sequence[ExternalReader] | None = None
) -> dict[str, str]:
    """Target id -> hash of what its files are rendered from (workloads and external readers; see `input_hash`).

    `readers`: the mesh's external readers when the caller has them already (they are not cheap)."""
    if readers is None:
        from compiler.backends.kubernetes.readers import external_readers

        readers = external_readers(mesh)
    clients: dict[str, set[str]] = {name: set() for name in spec.services}
    for name, found in spec.services.items():
        for dependency in found.dependencies:
            clients.setdefault(dependency.service, set()).add(name)
    related: dict[str, str] = {}
    faces: dict[str, str] = {}
    inputs = {}
    for target, owner in target_owners(mesh, readers).items():
        if owner not in related:
            servers = {d.service for d in spec.services[owner].dependencies}
            related[owner] = roles(servers, clients.get(owner, set()), lambda name: _face(spec, faces, name))
        own = hashes.get(spec.services[owner].file, "")
        inputs[target] = input_hash(
            spec.mesh.file, hashes.get(spec.mesh.file, ""), target, own, related[owner]
        )
    return inputs


def _face(spec: Spec, faces: dict[str, str], service: str) -> str:
    """A service's face (compiler.output.reuse.face), each computed once; `-` for a service the spec lacks."""
    if service not in faces:
        found = spec.services.get(service)
        faces[service] = face(found) if found is not None else "-"
    return faces[service]


def recorded_facts(
    spec: Spec, mesh: Mesh, hashes: Mapping[str, str], readers: Sequence[ExternalReader]
) -> Recorded:
    """What the build cache records of a spec that passed every check, for the next partial build."""
    from compiler.render.invariants import exposed
    from compiler.spec.model import DISCOVERY_NAMESPACE

    targets: dict[str, list[str]] = {name: [] for name in spec.services}
    places: dict[str, set[tuple[str, str]]] = {name: set() for name in spec.services}
    workloads: dict[str, list[Workload]] = {name: [] for name in spec.services}
    for workload in mesh.workloads:
        workloads[workload.service].append(workload)
        targets[workload.service].append(workload.id)
        if workload.cluster is not None:
            places[workload.service].add((workload.cluster, workload.namespace))
    for reader in readers:
        targets[reader.service].append(reader.id)
        places[reader.service].add((reader.cluster, DISCOVERY_NAMESPACE))
    return Recorded(
        mesh_file=spec.mesh.file,
        mesh_digest=hashes.get(spec.mesh.file, ""),
        services={
            name: ServiceFacts(
                file=found.file,
                digest=hashes.get(found.file, ""),
                face=face(found),
                exposed=exposed(workloads[name]),
                dependencies=tuple(sorted({d.service for d in found.dependencies})),
                local_port=found.local_port,
                targets=tuple(sorted(targets[name])),
                places=tuple(sorted(places[name])),
            )
            for name, found in spec.services.items()
        },
    )
