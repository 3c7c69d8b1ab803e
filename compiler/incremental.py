"""Incremental builds: re-render only the targets whose inputs changed, reuse the files of the others.

A target's input hash covers its slice of the spec: mesh.yaml, its service's file, the files of the
services it depends on (their ports, placements, identities) and of the services that call it (its
allow-list, its NetworkPolicy peers), plus the spec's label and the target id. Each file is hashed
by its bytes. The build cache (compiler.output.cache) records those hashes beside the output; a
target whose hash is unchanged and whose files are untouched on disk keeps its files (hard-linked
into the new tree), the others go through the backends. The result is the tree a clean build
writes: `tests/test_incremental.py` compares the two after random edit sequences.

A build whose spec files are the ones the cache recorded, over an untouched tree, is a no-op decided
before anything is parsed: that path imports no compiler stage.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from compiler.output.cache import Cached, read_cache, spec_digest, untouched, write_cache
from compiler.output.compare import TreeStatus, compare_stream
from compiler.output.disk import scan_tree
from compiler.output.documents import read_documents, write_documents
from compiler.output.guard import resolve_output
from compiler.output.lock import LOCK_TIMEOUT, output_lock
from compiler.output.manifest import MANIFEST, manifest_of
from compiler.output.writer import NewFile, WriteResult, new_file, previous_tree, write_files

if TYPE_CHECKING:
    from compiler.diff.records import DocumentDiff
    from compiler.emit import Artifact
    from compiler.ir.model import Mesh
    from compiler.spec.load import Unreadable
    from compiler.spec.model import Spec

ROLLOUT_FILE = "rollout.yaml"  # compiler.rollout.pins.ROLLOUT_FILE, without importing git for a plain build


def build_output(
    spec_dir: Path,
    out: Path,
    lock_timeout: float = LOCK_TIMEOUT,
    on_wait: Callable[[Path], None] | None = None,
) -> WriteResult:
    """`meshc build`: the rollout build when a rollout.yaml is there, else the incremental plain build."""
    real = resolve_output(out, protect=(("the spec directory", spec_dir),))
    with output_lock(real, str(out), lock_timeout, on_wait):
        if os.path.lexists(spec_dir / ROLLOUT_FILE):
            # every wave's revision, from git objects
            from compiler.rollout.rebuild import build_rollout_locked

            return build_rollout_locked(spec_dir, out)
        return build_locked(spec_dir, out)


def build_locked(spec_dir: Path, out: Path) -> WriteResult:
    """The incremental plain build, under the output's lock (see the module docstring)."""
    from compiler import pipeline  # the compiler stages, only once the no-op check has failed

    files = pipeline.spec_files(spec_dir)
    label = spec_dir.as_posix().rstrip("/")
    real, old = previous_tree(out)
    cached = read_cache(real, old)
    digest = spec_digest(files, label)
    if cached is not None and digest is not None and cached.spec == digest and untouched(cached, old):
        return WriteResult(changed=False)
    hashes = file_hashes(files, label)
    known = read_documents(real, hashes)
    spec, mesh, sidecars = pipeline.render_files(files, label, {n: k.document for n, k in known.items()})
    inputs = target_inputs(spec, mesh, hashes)
    reused = reusable(inputs, cached)
    artifacts = pipeline.stream_artifacts(mesh, sidecars, frozenset(inputs) - reused)
    stream = tree_files(artifacts, reused, cached)
    trusted = cached.trusted if cached is not None else None
    result = write_files(out, stream, (real, old), trusted, spare=real.parent / f".{real.name}.meshc-spare")
    # Every file is written: let the IR and the documents (most of the memory) go before the caches are built.
    del mesh, sidecars, artifacts, stream
    write_cache(real, digest, inputs)
    write_documents(real, spec.documents, hashes, known)
    return result


def check_output(
    spec_dir: Path,
    out: Path,
    lock_timeout: float = LOCK_TIMEOUT,
    on_wait: Callable[[Path], None] | None = None,
) -> tuple[TreeStatus, dict[str, DocumentDiff]]:
    """`meshc check`: how `out` differs from what the spec renders, and what a rebuild would change in each
    stale or hand-edited file. Streams like a build, reading only the files the build cache cannot vouch for."""
    if os.path.lexists(spec_dir / ROLLOUT_FILE):
        from compiler.diff.output import output_drift

        return output_drift(spec_dir, out, lock_timeout, on_wait)
    real = Path(os.path.realpath(out))
    with output_lock(real, str(out), lock_timeout, on_wait, required=False):
        status, rendered = output_status(spec_dir, real)
        if not rendered:
            return status, {}
        from compiler.diff.output import rebuild_edit  # the differ, only once something differs

        return status, {path: rebuild_edit(real, path, data) for path, data in rendered.items()}


def output_status(spec_dir: Path, real: Path) -> tuple[TreeStatus, dict[str, bytes]]:
    """The status of output directory `real` against the spec, and the rendered bytes of every file that differs."""
    from compiler import pipeline

    files = pipeline.spec_files(spec_dir)
    label = spec_dir.as_posix().rstrip("/")
    old = scan_tree(real)
    cached = read_cache(real, old)
    digest = spec_digest(files, label)
    if cached is not None and digest is not None and cached.spec == digest and untouched(cached, old):
        return TreeStatus(), {}
    hashes = file_hashes(files, label)
    known = {name: k.document for name, k in read_documents(real, hashes).items()}
    spec, mesh, sidecars = pipeline.render_files(files, label, known)
    inputs = target_inputs(spec, mesh, hashes)
    reused = reusable(inputs, cached)
    stream = tree_files(pipeline.stream_artifacts(mesh, sidecars, frozenset(inputs) - reused), reused, cached)
    return compare_stream(real, old, stream, cached.trusted if cached is not None else {})


def file_hashes(files: Mapping[str, bytes | Unreadable], label: str) -> dict[str, str]:
    """sha256 of each spec file, by the name diagnostics and spec records give it (`<label>/<relative path>`)."""
    return {
        f"{label}/{name}": hashlib.sha256(data).hexdigest()
        for name, data in files.items()
        if isinstance(data, bytes)
    }


def target_inputs(spec: Spec, mesh: Mesh, hashes: Mapping[str, str]) -> dict[str, str]:
    """Target id -> hash of the spec files its files are rendered from (workloads and external readers)."""
    from compiler.backends.kubernetes.readers import external_readers

    clients: dict[str, set[str]] = {name: set() for name in spec.services}
    for name, found in spec.services.items():
        for dependency in found.dependencies:
            clients.setdefault(dependency.service, set()).add(name)
    slices: dict[str, list[str]] = {}
    owners = [(w.id, w.service) for w in mesh.workloads] + [(r.id, r.service) for r in external_readers(mesh)]
    inputs = {}
    for target, owner in owners:
        if owner not in slices:
            slices[owner] = _slice(spec, hashes, owner, clients.get(owner, set()))
        inputs[target] = hashlib.sha256(
            "\0".join([spec.mesh.file, target, *slices[owner]]).encode()
        ).hexdigest()
    return inputs


def _slice(spec: Spec, hashes: Mapping[str, str], service: str, clients: set[str]) -> list[str]:
    """The hashes a service's targets depend on: mesh.yaml, its file, its dependencies' and its clients' files."""
    found = spec.services[service]
    related = {d.service for d in found.dependencies} | clients
    return [
        hashes.get(spec.mesh.file, ""),
        hashes.get(found.file, ""),
        *(f"{name}:{_file_hash(spec, hashes, name)}" for name in sorted(related)),
    ]


def _file_hash(spec: Spec, hashes: Mapping[str, str], service: str) -> str:
    found = spec.services.get(service)
    return hashes.get(found.file, "") if found is not None else "-"


def reusable(inputs: Mapping[str, str], cached: Cached | None) -> frozenset[str]:
    """Targets whose input hash is the recorded one and whose files are all untouched on disk."""
    if cached is None:
        return frozenset()
    return frozenset(
        target
        for target, digest in inputs.items()
        if cached.inputs.get(target) == digest
        and target in cached.targets
        and all(path in cached.trusted for path in cached.targets[target])
    )


def tree_files(
    artifacts: Iterable[Artifact], reused: Iterable[str], cached: Cached | None
) -> Iterator[NewFile]:
    """The new tree as it streams: each rendered artifact, each reused target's files, and MANIFEST.json last."""
    entries: list[tuple[str, str, str | None]] = []
    for artifact in artifacts:
        file = new_file(artifact.path, artifact.data)
        entries.append((file.path, file.digest, artifact.target))
        yield file
    if cached is not None:
        for target in sorted(reused):
            for path in cached.targets[target]:
                entries.append((path, cached.files[path], target))
                yield NewFile(path=path, digest=cached.files[path])
    yield new_file(MANIFEST, manifest_of(entries))
