"""Reusing the targets of a previous tree: input hashes, the targets that keep their files, the new tree's stream.

Shared by the whole incremental build (compiler.incremental) and the partial one (compiler.partial).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from itertools import chain, compress
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from compiler.output.cache import Cached
from compiler.output.manifest import MANIFEST, manifest_json, patched_manifest
from compiler.output.staging import NewFile, new_file

if TYPE_CHECKING:
    from compiler.emit import Artifact
    from compiler.spec.model import ServiceSpec


def face(service: ServiceSpec) -> str:
    """sha256 of what lowering and rendering read of `service` for *other* services' targets: its name, ports,
    protocol, locality and placements. A client's egress to it reads its local and mesh ports, protocol,
    locality, identities (its namespaces) and discovery sources (its placements); a server's allow-list and
    NetworkPolicy read its name, identities and pods' namespaces. Everything else in its file (its own
    dependencies and their policy, health check, owner, ...) reaches its own targets only."""
    placements = [[p.cluster, p.namespace] for p in service.kubernetes]
    data = [service.name, service.local_port, service.mesh_port, service.protocol, service.locality]
    return hashlib.sha256(orjson.dumps([*data, service.vm_datacenters, placements])).hexdigest()


def roles(dependencies: Iterable[str], clients: Iterable[str], face_of: Callable[[str], str]) -> str:
    """The related services of a target's service for `input_hash`, as one text: `dependency <name>:<face>` and
    `client <name>:<face>`, sorted, NUL-separated. Once per service: each of its targets hashes the same text.

    Both roles are named: a service that is both a dependency and a client and stops being one changes
    what the target renders (its allow-list, or its egress) while its face stays the same.
    """
    found = {f"dependency {name}": face_of(name) for name in dependencies}
    found |= {f"client {name}": face_of(name) for name in clients}
    return "\0".join(f"{name}:{found[name]}" for name in sorted(found))


def input_hash(mesh_file: str, mesh_digest: str, target: str, own: str, related: str) -> str:
    """A target's input hash: mesh.yaml's name and sha256, the target id, its service file's sha256, and the
    `face` (`-`: no such service) of every service its service depends on or is called by (`roles`)."""
    parts = [mesh_file, target, mesh_digest, own, *([related] if related else [])]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def reusable(inputs: Mapping[str, str], cached: Cached | None) -> frozenset[str]:
    """Targets whose input hash is the recorded one and whose files are all untouched on disk."""
    if cached is None:
        return frozenset()
    # One lookup per target: 1.4 ms at 1,000 services, where a set of the two dicts' (target, hash) items, which
    # hashes every pair, took 3.2 ms.
    recorded = cached.inputs.get
    same = frozenset(target for target, digest in inputs.items() if recorded(target) == digest)
    return same.intersection(cached.targets) - untrusted_targets(cached)


def untrusted_targets(cached: Cached) -> set[str]:
    """The targets with a file the cache cannot vouch for (changed on disk since it was written, or gone)."""
    trusted = cached.trusted
    if len(trusted) == len(cached.files):
        return set()  # the usual case: no target's paths need a look (10,575 at 1,000 services)
    return {target for target, paths in cached.targets.items() if not all(p in trusted for p in paths)}


def kept_files(reused: AbstractSet[str], cached: Cached | None) -> dict[str, str]:
    """Path -> sha256 of every file of the reused targets: the new tree takes them from the previous one as they are."""
    if cached is None:
        return {}
    # In C, and in the manifest's order, in which its files lie in memory: 1.5 ms for 10,600 files, where the
    # order of the set `reused` took 3.0 ms and a loop 9.
    targets = cached.targets
    paths = list(chain.from_iterable(compress(targets.values(), map(reused.__contains__, targets))))
    return dict(zip(paths, map(cached.files.__getitem__, paths), strict=True))


def tree_files(
    artifacts: Iterable[Artifact],
    reused: Iterable[str],
    cached: Cached | None,
    kept: Mapping[str, str],
    more: Callable[[], Iterable[tuple[str, str, str | None]]] | None = None,
    previous: tuple[bytes, Any] | None = None,
) -> Iterator[NewFile]:
    """The new tree's rendered files as they stream, and MANIFEST.json last, which also lists the files `kept`
    from the previous tree (path -> sha256: the reused targets' files, `kept_files`, and any shared file kept; the
    writer takes those in bulk) and the reused targets' paths. `more()`: the (path, sha256, target) of files written
    beside this stream (compiler.output.worker), asked for once every rendered file is out, before the manifest.
    `previous`: the previous MANIFEST.json's bytes and value, which the new one is patched from where only digests
    changed (`patched_manifest`)."""
    files: dict[str, str] = {}
    targets: dict[str, list[str]] = {}
    fresh: list[str] = []  # the paths rendered here (or beside, by `more`): the only digests that can differ

    def note(path: str, digest: str, target: str | None) -> None:
        files[path] = digest
        if target is not None:
            targets.setdefault(target, []).append(path)
        fresh.append(path)

    for artifact in artifacts:
        file = new_file(artifact.path, artifact.data)
        note(file.path, file.digest, artifact.target)
        yield file
    for entry in more() if more is not None else ():
        note(*entry)
    files.update(kept)
    if cached is not None:
        targets.update((target, cached.targets[target]) for target in reused)
    data = patched_manifest(previous, files, targets, fresh) if previous is not None else None
    yield new_file(MANIFEST, data if data is not None else manifest_json(files, targets))


def spare_path(real: Path) -> Path:
    """The spare tree of an output directory, beside it (see compiler.output.writer.write_files)."""
    return real.parent / f".{real.name}.meshc-spare"
