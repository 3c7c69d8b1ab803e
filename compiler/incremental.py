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

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from compiler.lifetime import park
from compiler.output.cache import (
    Cached,
    CacheFile,
    Swapped,
    load_cache,
    read_cache,
    spec_digest,
    trusted_cache,
    untouched,
    write_cache,
)
from compiler.output.disk import OnDisk, scan_tree
from compiler.output.documents import Line, foreign_cache_notes, read_documents, write_documents
from compiler.output.facts import Recorded, recorded_of
from compiler.output.guard import output_directory, resolve_output
from compiler.output.lock import LOCK_TIMEOUT, output_lock
from compiler.output.prescan import Prescan, prescanned
from compiler.output.reuse import kept_files, reusable, spare_path, tree_files
from compiler.output.spare import Listing
from compiler.output.staging import NewFile
from compiler.output.worker import PARALLEL_FROM, Worker, as_one, worker_share
from compiler.output.writer import WriteResult, prepared_output, previous_entries, write_files
from compiler.targets import file_hashes, recorded_facts, target_inputs, target_owners

if TYPE_CHECKING:
    from compiler.diff.records import DocumentDiff
    from compiler.emit import Artifact
    from compiler.ir.model import Mesh
    from compiler.output.compare import TreeStatus
    from compiler.render import SidecarConfig
    from compiler.spec.document import Document
    from compiler.spec.load import Unreadable

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
    from compiler.spec import load  # at call time: the safety tests stand a failing reader in

    real = prepared_output(out)
    # The child reads the spec files while this process reads the caches (a failure there: read here).
    with prescanned(real, spare_path(real), lambda: load.files_bytes(load.spec_files(spec_dir))) as prescan:
        return _build_prescanned(spec_dir, out, real, prescan)


def _build_prescanned(spec_dir: Path, out: Path, real: Path, prescan: Prescan) -> WriteResult:
    from compiler.spec import load

    found = load_cache(real)
    files = _files_of(prescan.job_result()) or load.spec_files(spec_dir)
    label = spec_dir.as_posix().rstrip("/")
    digest = spec_digest(files, label)
    read = None
    if found is None or digest is None or found.spec != digest:
        # Not a no-op. While the child scans the output (compiler.output.prescan), the compiler stages load and
        # what a partial build reads of the caches is read.
        import compiler.partial  # noqa: F401

        read = _previous_facts(real, files, label, found, digest)
    # a valid cache holds the sha256 of the MANIFEST.json there: the tree is meshc's
    old = previous_entries(real, str(out), lambda _: prescan.scan(), vouched=found is not None)
    cached = trusted_cache(found, old)
    if _up_to_date(cached, digest, old):
        park(locals())  # the caches as read and the scan (compiler.lifetime)
        return WriteResult(changed=False)
    from compiler import pipeline  # the compiler stages, only once the no-op check has failed

    hashes, recorded, lines = read or _previous_facts(real, files, label, found, digest)

    checked: Mapping[str, Document] = {}
    # taken when the writer starts: the child may still be listing the spare while the partial build renders
    listing: Listing | None = prescan.listing
    if cached is not None and recorded is not None and digest is not None:
        from compiler.partial import Previous, build_partial

        previous = Previous(real=real, old=old, cached=cached, recorded=recorded, listing=listing)
        partial = build_partial(out, files, label, hashes, digest, previous, lines)
        if isinstance(partial, WriteResult):
            # the caches as read: freed one by one only for a library caller (compiler.lifetime)
            park(locals())
            return replace(partial, notes=partial.notes + foreign_cache_notes(real))
        checked = partial.documents  # parsed and checked file by file: not again
        listing = None  # the partial build may have staged in the spare before it gave up: listed anew
    from compiler.backends.kubernetes.readers import external_readers
    from compiler.render import render

    known = read_documents(real, hashes)
    documents = {**checked, **{n: k.document for n, k in known.items()}}
    spec, mesh = pipeline.lower_files(files, label, documents)
    readers = external_readers(mesh)
    inputs = target_inputs(spec, mesh, hashes, readers)
    owners = target_owners(mesh, readers)
    stream, kept, worker = _new_tree(
        mesh,
        inputs,
        cached,
        lambda part: render(mesh, only=part),
        owners,
        # the spec passed every check: its documents are recorded by the worker, if there is one, while this
        # process finishes its part of the tree (the document cache holds parsed spec files, not output)
        also=lambda: write_documents(real, spec.documents, hashes, known, renamed=True),
    )
    trusted = cached.trusted if cached is not None else None
    result = write_files(
        out, stream, (real, old), trusted, spare=spare_path(real), kept=kept, listing=listing, worker=worker
    )
    # Every file is written: let the documents (most of the memory) go before the caches are built.
    del stream
    swapped = Swapped(
        old=old,
        written=result.written,
        removed=result.removed,
        manifest=result.manifest,
        stats=result.stats,
        relinked=result.relinked,
    )
    write_cache(real, digest, inputs, recorded_facts(spec, mesh, hashes, readers), swapped)
    if worker is None or not worker.also_done:
        write_documents(real, spec.documents, hashes, known)
    # the spec, the IR and the caches: freed one by one only for a library caller (compiler.lifetime)
    park(locals())
    return replace(result, notes=result.notes + foreign_cache_notes(real))


def _files_of(blob: bytes | None) -> dict[str, bytes | Unreadable] | None:
    """The spec files the prescan child read, or None (none read there, or a frame that does not decode)."""
    from compiler.spec import load

    try:
        return load.files_of(blob) if blob is not None else None
    except (EOFError, ValueError, TypeError, IndexError):
        return None


def _previous_facts(
    real: Path,
    files: Mapping[str, bytes | Unreadable],
    label: str,
    found: CacheFile | None,
    digest: str | None,
) -> tuple[dict[str, str], Recorded | None, dict[str, Line] | None]:
    """The spec files' hashes, and what a partial build reads of the caches: the recorded facts, the document lines."""
    from compiler.output.documents import read_lines

    hashes = file_hashes(files, label)
    recorded = recorded_of(found.recorded, found.inputs) if found is not None and digest is not None else None
    return hashes, recorded, read_lines(real, hashes) if recorded is not None else None


def check_output(
    spec_dir: Path,
    out: Path,
    lock_timeout: float = LOCK_TIMEOUT,
    on_wait: Callable[[Path], None] | None = None,
) -> tuple[TreeStatus, dict[str, DocumentDiff]]:
    """`meshc check`: how `out` differs from what the spec renders, and what a rebuild would change in each
    stale or hand-edited file. Streams like a build, reading only the files the build cache cannot vouch for.

    A path that can hold no tree (a regular file, a FIFO, a dangling symlink...) is refused as a build refuses it
    (OutputRefused): "every file missing" would say a build could fix it. What a build refuses only because it
    would replace it (the current directory, a mount point) is read as any directory is."""
    real = output_directory(out)
    if os.path.lexists(spec_dir / ROLLOUT_FILE):
        from compiler.diff.output import output_drift

        return output_drift(spec_dir, out, lock_timeout, on_wait)
    with output_lock(real, str(out), lock_timeout, on_wait, required=False):
        status, rendered = output_status(spec_dir, real)
        if not rendered:
            return status, {}
        from compiler.diff.output import rebuild_edit  # the differ, only once something differs

        return status, {path: rebuild_edit(real, path, data) for path, data in rendered.items()}


def output_status(spec_dir: Path, real: Path) -> tuple[TreeStatus, dict[str, bytes]]:
    """The status of output directory `real` against the spec, and the rendered bytes of every file that differs."""
    from compiler import pipeline
    from compiler.output.compare import TreeStatus, compare_stream  # `check`'s alone: not in a build's start
    from compiler.spec.load import spec_files

    files = spec_files(spec_dir)
    label = spec_dir.as_posix().rstrip("/")
    old = scan_tree(real)
    cached = read_cache(real, old)
    digest = spec_digest(files, label)
    if _up_to_date(cached, digest, old):
        park(locals())  # the caches as read and the scan (compiler.lifetime)
        return TreeStatus(), {}
    hashes = file_hashes(files, label)
    known = {name: k.document for name, k in read_documents(real, hashes).items()}
    spec, mesh, sidecars = pipeline.render_files(files, label, known)
    stream, kept, _ = _new_tree(mesh, target_inputs(spec, mesh, hashes), cached, lambda part: sidecars)
    trusted = cached.trusted if cached is not None else {}
    return compare_stream(real, old, stream, trusted, kept)


def _up_to_date(cached: Cached | None, digest: str | None, old: Mapping[str, OnDisk]) -> bool:
    """Whether the output was built from these very spec files (`digest`) and is untouched since."""
    return cached is not None and digest is not None and cached.spec == digest and untouched(cached, old)


def _new_tree(
    mesh: Mesh,
    inputs: Mapping[str, str],
    cached: Cached | None,
    render: Callable[[frozenset[str] | None], Mapping[str, SidecarConfig]],
    owners: Mapping[str, str] | None = None,
    also: Callable[[], bool] | None = None,
) -> tuple[Iterator[NewFile], dict[str, str], Worker | None]:
    """The new tree as it streams, the targets whose inputs are the recorded ones left out; the files it keeps
    from the previous tree as they are (path -> sha256); and with `owners` (every target id -> its service), where
    there are PARALLEL_FROM targets to render or more, the worker that renders its share of the services
    (`worker_share`) and lays out their targets (compiler.output.worker), then runs `also()`. `render(part)`: the
    sidecars of the workloads of the target ids `part` (None: every one). Every workload is rendered, reused or
    not: the invariants of a rendering check each against the others (a client's watcher against a server's
    registration).

    Each share is rendered when its stream starts: this process's once the worker is forked, so the two render
    at once. The shares are whole services: the renderer and the Kubernetes backend build a service's shared
    documents once for all its workloads, and split workloads would build them twice."""
    from compiler.backends import stream_backends

    reused = reusable(inputs, cached)
    kept = kept_files(reused, cached)
    rendered = frozenset(inputs) - reused
    if owners is None or len(rendered) < PARALLEL_FROM:
        # rendered before anything is staged: a rendering bug leaves a spare tree as it was
        artifacts = stream_backends(mesh, render(None), rendered)
        return tree_files(artifacts, reused, cached, kept), kept, None
    their_share = worker_share(owners)
    theirs = rendered & their_share
    worker = Worker(lambda: stream_backends(mesh, render(their_share), theirs, shared=False), also)
    our_share = frozenset(owners) - their_share
    artifacts = _started(lambda: stream_backends(mesh, render(our_share), rendered - theirs))
    stream = tree_files(artifacts, reused, cached, kept, worker.entries)
    return as_one(stream, lambda: stream_backends(mesh, render(None), rendered)), kept, worker


def _started(stream: Callable[[], Iterable[Artifact]]) -> Iterator[Artifact]:
    """`stream()`'s artifacts, made only when the first is asked for."""
    yield from stream()
