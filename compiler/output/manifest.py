"""MANIFEST.json: what a build records of its tree (format, meshc version, sha256 of each file, files per target)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import chain
from pathlib import Path
from typing import Any

import orjson

from compiler import __version__
from compiler.emit import Artifact, dump_json
from compiler.output.disk import open_regular

MANIFEST = "MANIFEST.json"
MANIFEST_FORMAT = 1
# A 3,000-service mesh's manifest is a few MB; a bigger "manifest" is not meshc's.
MAX_MANIFEST_BYTES = 64 << 20


def manifest(artifacts: Sequence[Artifact], rollout: Mapping[str, Any] | None = None) -> bytes:
    """MANIFEST.json: format, meshc version, sha256 of every file, files of every target, the rollout if in force."""
    return manifest_of(((a.path, hashlib.sha256(a.data).hexdigest(), a.target) for a in artifacts), rollout)


def manifest_of(
    entries: Iterable[tuple[str, str, str | None]], rollout: Mapping[str, Any] | None = None
) -> bytes:
    """MANIFEST.json from (path, sha256, target) of every file: what a streamed build keeps instead of the bytes."""
    files: dict[str, str] = {}
    targets: dict[str, list[str]] = {}
    for path, digest, target in entries:
        files[path] = digest
        if target is not None:
            targets.setdefault(target, []).append(path)
    return manifest_json(files, targets, rollout)


def manifest_json(
    files: Mapping[str, str], targets: Mapping[str, Sequence[str]], rollout: Mapping[str, Any] | None = None
) -> bytes:
    """MANIFEST.json from path -> sha256 and target -> its paths, in any order: keys and paths come out sorted."""
    return dump_json(
        {
            "format": MANIFEST_FORMAT,
            "meshc_version": __version__,
            "files": files,  # dump_json sorts keys
            "targets": {target: sorted(paths) for target, paths in targets.items()},
            **({"rollout": rollout} if rollout is not None else {}),
        }
    )


def patched_manifest(
    previous: tuple[bytes, Any],
    files: Mapping[str, str],
    targets: Mapping[str, Sequence[str]],
    fresh: Iterable[str],
) -> bytes | None:
    """`manifest_json(files, targets)` made from the previous MANIFEST.json (its bytes and value, as `manifest_file`
    reads them) where the two list the same files and targets and differ only in the digests of the paths `fresh`
    (the files rendered anew; every other file is the previous one); None otherwise.

    A one-service rebuild at 1,000 services renders ~10 of 10,600 files: rewriting their digests in place (a
    digest is always 64 characters) takes ~3 ms, where making the 2.5 MB again took ~11 ms. Each key of "files"
    appears once in the text followed by its digest, so the pair `"<path>": "<old digest>"` names one place.
    """
    raw, value = previous
    if not isinstance(value, dict) or value.keys() != {"format", "meshc_version", "files", "targets"}:
        return None
    old_files, old_targets = value["files"], value["targets"]
    if (
        value["format"] != MANIFEST_FORMAT
        or value["meshc_version"] != __version__
        or not isinstance(old_files, dict)
        or not isinstance(old_targets, dict)
        or files.keys() != old_files.keys()
        or targets.keys() != old_targets.keys()
    ):
        return None
    for target, paths in targets.items():
        if paths is not old_targets[target] and sorted(paths) != old_targets[target]:
            return None
    pieces: list[bytes] = []
    done = 0
    for at, digest in sorted(_digest_places(raw, old_files, files, fresh)):
        if at < 0:
            return None
        pieces += (raw[done:at], digest.encode())
        done = at + 64
    return b"".join([*pieces, raw[done:]])


def _digest_places(
    raw: bytes, old_files: Mapping[str, Any], files: Mapping[str, str], paths: Iterable[str]
) -> Iterator[tuple[int, str]]:
    """Where in `raw` each changed path's digest starts (-1 if it is not there), with its new digest."""
    for path in paths:
        old, new = old_files[path], files[path]
        if old != new:
            key = orjson.dumps(path) + b': "'
            at = raw.find(key + str(old).encode() + b'"')
            yield (at + len(key) if at >= 0 else -1), new


def render_tree(artifacts: Sequence[Artifact], rollout: Mapping[str, Any] | None = None) -> dict[str, bytes]:
    """The complete file tree of a build, manifest included, checking paths are safe and unique."""
    files: dict[str, bytes] = {}
    for artifact in sorted(artifacts, key=lambda a: a.path):
        check_path(artifact.path)
        if artifact.path in files or artifact.path == MANIFEST:
            raise ValueError(f"two artifacts claim {artifact.path}")
        files[artifact.path] = artifact.data
    files[MANIFEST] = manifest(sorted(artifacts, key=lambda a: a.path), rollout)
    return files


def check_path(path: str) -> None:
    parts = path.split("/")
    if path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"unsafe artifact path {path!r}")


def read_manifest(root: Path) -> dict[str, Any] | None:
    """The MANIFEST.json meshc wrote in `root`, or None if there is none or it is not one meshc writes."""
    found = manifest_file(root)
    return found[1] if found is not None and is_manifest(found[1]) else None


# The last MANIFEST.json read, by the identity of the file it was read from. A build reads the previous tree's
# twice, to know the tree is meshc's and for the build cache: at 1,000 services 700 kB parsed twice, ~6 ms.
_last: tuple[tuple[str, int, int, int, int, int], bytes, Any] | None = None
RACY_NS = 100_000_000


def manifest_file(root: Path) -> tuple[bytes, Any] | None:
    """MANIFEST.json in `root`: its bytes and their JSON value (None where they are not JSON); None if it is no
    regular file within MAX_MANIFEST_BYTES. The value is shared between readers: never change it.

    Read again unless the file is the very one read last: same path, device, inode, size, mtime and ctime
    (any write to it changes its ctime). A file changed less than RACY_NS before it was read is not kept: the
    clock that stamps files ticks coarsely (a few ms on ext4, xfs, btrfs, tmpfs), so a write right after the
    read could leave the same ctime. A build reads the file twice within ~50 ms, under its output lock.
    """
    global _last
    try:
        fd = open_regular(root / MANIFEST)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        key = (str(root), info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
        if _last is not None and _last[0] == key:
            return _last[1], _last[2]
        raw = handle.read(MAX_MANIFEST_BYTES + 1)
    if len(raw) > MAX_MANIFEST_BYTES:
        return None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:  # also a hand-made file nested deeper than the parser goes
        value = None
    _last = (key, raw, value) if max(info.st_mtime_ns, info.st_ctime_ns) < time.time_ns() - RACY_NS else None
    return raw, value


def is_manifest(data: Any) -> bool:
    """The shape `manifest()` writes (`rollout` is added by rollout-aware builds); a stray JSON file is not one."""
    if not isinstance(data, dict) or not {"format", "meshc_version", "files", "targets"} <= set(data):
        return False
    files, targets = data["files"], data["targets"]
    return (
        type(data["format"]) is int
        and data["format"] == MANIFEST_FORMAT
        and isinstance(data["meshc_version"], str)
        and isinstance(files, dict)
        and all_of(str, files.values())
        # every value 64 hex digits: one match over them all, not one per file (a build reads 10,000 of them)
        and _HEX.fullmatch("".join(files.values())) is not None
        and set(map(len, files.values())) <= {64}
        and isinstance(targets, dict)
        and all_of(list, targets.values())
        and all_of(str, chain.from_iterable(targets.values()))
    )


def all_of(kind: type, values: Iterable[object]) -> bool:
    """Whether every value is exactly of type `kind` (one pass in C: a JSON document meshc reads holds 10,000s)."""
    return set(map(type, values)) <= {kind}


_HEX = re.compile(r"[0-9a-f]*")


def recorded_hashes(raw: bytes) -> dict[str, str]:
    """Path -> sha256 from a MANIFEST.json's `files` ({} if it is not one)."""
    try:
        return dict(json.loads(raw).get("files", {}))
    except (ValueError, AttributeError, TypeError):
        return {}
