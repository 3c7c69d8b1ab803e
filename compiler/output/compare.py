"""Comparing an output tree with what the spec renders: stale files told from hand-edited ones."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from compiler.output.disk import DIRECTORY, REGULAR, OnDisk, file_digest, scan_tree
from compiler.output.manifest import MANIFEST, read_manifest
from compiler.output.staging import NewFile


@dataclass(frozen=True, kw_only=True, slots=True)
class TreeStatus:
    """How an output tree differs from what the spec renders."""

    stale: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()
    hand_edited: tuple[str, ...] = ()
    # data files holding the very values meshc renders in other bytes (the deployed hiera tree's, which Puppet
    # parses): re-indented or re-ordered by hand, neither stale nor holding other data
    reformatted: tuple[str, ...] = ()

    @property
    def clean(self) -> bool:
        return not (self.stale or self.missing or self.extra or self.hand_edited or self.reformatted)


def compare_tree(out: Path, files: Mapping[str, bytes]) -> TreeStatus:
    """Compare `out` with the tree a build would write; tell stale files from hand-edited ones.

    Files are hashed in chunks, and non-regular files are never opened (see `compare_digests`).
    """
    root = Path(os.path.realpath(out))
    on_disk = {
        path: file_digest(root / path) if entry.kind == REGULAR else None
        for path, entry in scan_tree(root).items()
        if entry.kind != DIRECTORY
    }
    return compare_digests(on_disk, files, (read_manifest(root) or {}).get("files", {}))


def compare_files(
    actual: Mapping[str, bytes], files: Mapping[str, bytes], recorded: Mapping[str, str]
) -> TreeStatus:
    """`compare_tree` on a tree held in memory (path -> bytes)."""
    return compare_digests(
        {path: hashlib.sha256(data).hexdigest() for path, data in actual.items()}, files, recorded
    )


def compare_digests(
    actual: Mapping[str, str | None], files: Mapping[str, bytes], recorded: Mapping[str, str]
) -> TreeStatus:
    """Compare a tree (path -> sha256, None for what is not a regular file) with the tree a build would write.

    A file that differs from the new rendering but matches the hash a past build recorded
    (`recorded`, from its manifest) is stale (the spec changed, nobody rebuilt); one that matches
    neither was edited by hand, and so is anything at a rendered path that is not a regular file.
    """
    return _compare(
        actual, {path: hashlib.sha256(data).hexdigest() for path, data in files.items()}, recorded
    )


def compare_stream(
    root: Path,
    entries: Mapping[str, OnDisk],
    files: Iterable[NewFile],
    trusted: Mapping[str, str],
    kept: Mapping[str, str] | None = None,
) -> tuple[TreeStatus, dict[str, bytes]]:
    """`compare_tree` on a tree as a build streams it; also the rendered bytes of every file that differs.

    Only digests are kept, and a file on disk is read only when `trusted` (the build cache) cannot
    vouch for its digest. `kept`: path -> sha256 of files the build takes from the tree as they are
    (compiler.output.reuse.kept_files), which `files` does not stream.
    """
    expected: dict[str, str] = dict(kept or {})
    actual: dict[str, str | None] = {
        path: None for path, entry in entries.items() if entry.kind not in (DIRECTORY, REGULAR)
    }
    differing: dict[str, bytes] = {}
    for path in expected:  # the kept files: on disk, the cache vouches for them
        if (entry := entries.get(path)) is not None and entry.kind == REGULAR:
            actual[path] = trusted.get(path) or file_digest(root / path)
    for file in files:
        expected[file.path] = file.digest
        entry = entries.get(file.path)
        if entry is None:
            continue
        if entry.kind != REGULAR:  # hand-edited (a link, a FIFO...): never opened, described by what it is
            if file.data is not None:
                differing[file.path] = file.data
            continue
        digest = trusted.get(file.path) or file_digest(root / file.path)
        actual[file.path] = digest
        if digest != file.digest and file.data is not None:
            differing[file.path] = file.data
    actual.update(
        {path: "" for path, entry in entries.items() if entry.kind == REGULAR and path not in expected}
    )
    status = _compare(actual, expected, (read_manifest(root) or {}).get("files", {}))
    return status, {
        path: differing[path] for path in (*status.stale, *status.hand_edited) if path in differing
    }


def _compare(
    actual: Mapping[str, str | None], expected: Mapping[str, str], recorded: Mapping[str, str]
) -> TreeStatus:
    stale: list[str] = []
    edited: list[str] = []
    for path in sorted(set(expected) & set(actual) - {MANIFEST}):
        digest = actual[path]
        if digest == expected[path]:
            continue
        (stale if digest is not None and recorded.get(path) == digest else edited).append(path)
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    if MANIFEST in expected and MANIFEST in actual:
        if actual[MANIFEST] is None:
            edited.append(MANIFEST)
        elif not (stale or edited or missing or extra) and actual[MANIFEST] != expected[MANIFEST]:
            # the manifest follows the files: listed only when nothing else explains it
            stale.append(MANIFEST)
    return TreeStatus(
        stale=tuple(stale), missing=tuple(missing), extra=tuple(extra), hand_edited=tuple(edited)
    )
