"""The build cache beside an output tree: per-target input hashes and the stat of every file meshc wrote.

`.<output>.meshc-cache` sits beside `output/` (like the lock file) and never inside it: the stat
data changes on every build and `output/` is committed. It is a hint, never trusted blindly. It is
used only when all of this holds, else ignored (the build starts from scratch):

- it is a regular file meshc wrote: its first line is the sha256 of the rest, so a truncated,
  corrupt or hand-edited cache fails the check;
- it was written by this meshc: same version and same code fingerprint (the compiler package's
  file names, sizes and mtimes, so an edited template or module is a different meshc);
- it describes the tree that is there: it records the sha256 of the MANIFEST.json it was written
  beside, and the MANIFEST.json in `output/` has it.

A file of `output/` is taken to hold its manifest hash without being read only if its size, mtime,
inode and ctime are the recorded ones and its mtime is older than the cache file's own ("racy" files,
written in the same clock tick as the cache, are hashed, as git does with its index). The ctime is what
catches an edit whose size and mtime were put back (`cp -p`, `touch -r`): no one can set it. meshc itself
changes it too, each time it links a file of the output into a new tree or the spare tree, or removes a
tree holding such a link: the build records the stat of those files after its last link and unlink
(`Swapped.relinked`), so that the next build still trusts every file it did not write.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from compiler import __version__
from compiler.output.disk import (
    DIRECTORY,
    REGULAR,
    OnDisk,
    entry_of,
    open_regular,
    read_regular,
    scan_tree,
)
from compiler.output.facts import Recorded, recorded_json
from compiler.output.manifest import MANIFEST, MAX_MANIFEST_BYTES, all_of, manifest_file
from compiler.output.sealed import foreign, rewrite_file, sealed, unsealed

if TYPE_CHECKING:
    from compiler.spec.load import Unreadable

CACHE_FORMAT = 3  # 3: each file's ctime is recorded (a format-2 cache is ignored, not misread)
MAX_CACHE_BYTES = 256 << 20  # 10,000 services record ~100,000 files in ~10 MB; more is not meshc's
MAGIC = b"meshc-cache"


@dataclass(frozen=True, kw_only=True, slots=True)
class Cached:
    """What a valid cache says about the tree in `output/`.

    `spec`: the digest of the spec files that built it (None for a rollout build); `inputs`: target id ->
    input hash; `trusted`: path -> sha256 of every file whose stat still matches; `targets`: the
    manifest's target id -> paths; `recorded`: the facts of the spec it was built from as JSON, unchecked
    (None for a rollout build; compiler.output.facts.recorded_of checks and reads them).
    """

    spec: str | None
    inputs: Mapping[str, str]
    trusted: Mapping[str, str]
    targets: Mapping[str, list[str]]
    files: Mapping[str, str]
    recorded: Any = None


def cache_path(real: Path) -> Path:
    """The cache file of an output directory, beside it."""
    return real.parent / f".{real.name}.meshc-cache"


@functools.cache  # once per process, which runs the code it started with; a build asks four times
def code_fingerprint() -> str:
    """meshc's version and the name, size and mtime of every file of the compiler package.

    A cache written by another meshc, or by this one before a module or template was edited, is
    another build's: its input hashes do not say what this code renders.
    """
    package = str(Path(__file__).resolve().parent.parent)
    digest = hashlib.sha256(__version__.encode())
    pending = [package]
    while pending:
        directory = pending.pop()
        with os.scandir(directory) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                if entry.name == "__pycache__":
                    continue
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
                    continue
                info = entry.stat(follow_symlinks=False)
                name = entry.path[len(package) + 1 :]  # relative to the package, as os.path.relpath says it
                digest.update(f"{name}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()


@dataclass(frozen=True, kw_only=True, slots=True)
class CacheFile:
    """A cache as read and checked (checksum, version, code, manifest hash) before the tree's stat is compared
    with it: `stamp` is the cache file's mtime, `manifest` the MANIFEST.json value it was written beside."""

    body: dict[str, Any]
    stamp: int
    manifest: dict[str, Any]

    @property
    def spec(self) -> str | None:
        spec: str | None = self.body["spec"]
        return spec

    @property
    def inputs(self) -> Mapping[str, str]:
        inputs: Mapping[str, str] = self.body["inputs"]
        return inputs

    @property
    def recorded(self) -> Any:
        return self.body["recorded"]


def read_cache(real: Path, entries: Mapping[str, OnDisk]) -> Cached | None:
    """The cache of `real` if it is valid for the tree there (whose entries are `entries`), else None."""
    return trusted_cache(load_cache(real), entries)


def load_cache(real: Path) -> CacheFile | None:
    """The cache of `real` if meshc wrote it beside the MANIFEST.json there now, else None (`read_cache`'s first
    half: nothing here needs the tree's scan)."""
    try:
        fd = open_regular(cache_path(real))
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        stamp = os.fstat(handle.fileno()).st_mtime_ns
        raw = handle.read(MAX_CACHE_BYTES + 1)
    body = _checked_body(raw)
    found = manifest_file(real) if body is not None else None
    if body is None or found is None:
        return None
    manifest_raw, manifest = found
    if body.get("manifest") != hashlib.sha256(manifest_raw).hexdigest():
        return None  # the cache of another tree: a build killed before it wrote its cache, or a checkout
    return CacheFile(body=body, stamp=stamp, manifest=manifest)


def trusted_cache(found: CacheFile | None, entries: Mapping[str, OnDisk]) -> Cached | None:
    """What cache `found` says of the tree whose entries are `entries` (`read_cache`'s second half)."""
    if found is None:
        return None
    body, stamp = found.body, found.stamp
    # The manifest is the very one this meshc wrote with the cache (its sha256 is the recorded one, and the
    # cache's checksum and code fingerprint hold): its shape needs no second check.
    files: dict[str, str] = found.manifest["files"]
    recorded: dict[str, list[int]] = body["files"]
    # Untouched: a regular file of the same size, mtime, inode and ctime as recorded, older than the cache itself.
    # Field by field from the record's side, the mtime (the likeliest to differ) first: 4.4 ms at 1,000 services
    # where a list made per entry and compared took 7.9 ms.
    found_at = entries.get
    trusted = {
        path: files[path]
        for path, (size, mtime_ns, inode, ctime_ns) in recorded.items()
        if (entry := found_at(path)) is not None
        and entry.mtime_ns == mtime_ns
        and entry.size == size
        and entry.inode == inode
        and entry.ctime_ns == ctime_ns
        and entry.kind == REGULAR
        and mtime_ns < stamp
        and path in files
    }
    return Cached(
        spec=body["spec"],
        inputs=body["inputs"],
        trusted=trusted,
        targets=found.manifest["targets"],
        files=files,
        recorded=body["recorded"],
    )


def _checked_body(raw: bytes) -> dict[str, Any] | None:
    """The cache's content if its checksum, shape, format, version and code fingerprint hold."""
    if len(raw) > MAX_CACHE_BYTES:
        return None
    rest = unsealed(MAGIC, raw)
    if rest is None:
        return None
    try:
        body = orjson.loads(rest)
    except orjson.JSONDecodeError:
        return None
    if not _is_cache(body):
        return None
    if body["format"] != CACHE_FORMAT or body["meshc_version"] != __version__:
        return None
    return body if body["code"] == code_fingerprint() else None


def _is_cache(body: Any) -> bool:
    return (
        isinstance(body, dict)
        and {"format", "meshc_version", "code", "manifest", "spec", "inputs", "files", "recorded"}
        <= set(body)
        and type(body["format"]) is int
        and isinstance(body["spec"], (str, type(None)))
        and isinstance(body["inputs"], dict)
        and all_of(str, body["inputs"].values())
        and isinstance(body["files"], dict)
        and all_of(list, body["files"].values())
        and set(map(len, body["files"].values())) <= {4}
        and all_of(int, chain.from_iterable(body["files"].values()))
        and (body["recorded"] is None or isinstance(body["recorded"], dict))  # checked when read: recorded_of
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class Swapped:
    """What a build knows of the tree it just swapped in: the previous tree's entries, the paths it wrote and the
    paths it removed (every other file of the new tree is a link to the previous tree's, the very inode scanned)."""

    old: Mapping[str, OnDisk]
    written: Collection[str]
    removed: Collection[str]
    manifest: str | None = None  # the sha256 of the MANIFEST.json it wrote (else it is read from the tree)
    # the files written, as fstat found them once written (any missing is lstat'ed)
    stats: Mapping[str, OnDisk] = field(default_factory=dict)
    # The files kept from the previous tree whose inode the write linked or unlinked a name of since the scan
    # (compiler.output.writer.WriteResult.relinked): their ctime is no longer the scanned one, so they are lstat'ed
    # now. None: every file kept may be.
    relinked: Collection[str] | None = ()


def write_cache(
    real: Path,
    spec: str | None,
    inputs: Mapping[str, str],
    recorded: Recorded | None = None,
    swapped: Swapped | None = None,
) -> bool:
    """Record the tree now in `real` (after a build's swap): its manifest hash, each file's stat, the input hashes
    and the facts of the spec it was built from.

    `swapped`: what the build wrote, so that only those files are stat'ed (else the whole tree is scanned).
    Best effort: a cache that cannot be written only makes the next build slower, so nothing is raised.
    An existing file at the cache's path that is not a meshc cache is left alone (meshc never
    replaces what it did not write); returns whether a cache was written.

    Only ever called on a tree meshc just wrote or found replaceable (compiler.output.guard.check_replaceable): a
    cache vouches for its tree's MANIFEST.json being meshc's, and a build then checks its shape no more.
    """
    target = cache_path(real)
    if foreign(target, MAGIC):
        return False
    manifest = swapped.manifest if swapped is not None else None
    if manifest is None:
        manifest_raw = read_regular(real / MANIFEST, MAX_MANIFEST_BYTES)
        if manifest_raw is None:
            return False
        manifest = hashlib.sha256(manifest_raw).hexdigest()
    try:
        entries = scan_tree(real) if swapped is None else _swapped_entries(real, swapped)
    except OSError:
        return False
    body = orjson.dumps(
        {
            "format": CACHE_FORMAT,
            "meshc_version": __version__,
            "code": code_fingerprint(),
            "manifest": manifest,
            "spec": spec,
            "inputs": dict(inputs),
            "recorded": recorded_json(recorded),
            "files": {
                path: [e.size, e.mtime_ns, e.inode, e.ctime_ns]
                for path, e in entries.items()
                if e.kind == REGULAR
            },
        },
        # In the order the build made them, not sorted: nothing reads the cache in order (its readers look paths
        # and targets up), and sorting 21,000 keys took 3 ms of every rebuild at 1,000 services (4.1 ms against
        # 1.1 ms for the dump).
    )
    return rewrite_file(target, sealed(MAGIC, body))


def _swapped_entries(real: Path, swapped: Swapped) -> dict[str, OnDisk]:
    """The entries of the files of the tree now in `real`, from the previous scan and a stat of each file written.

    The new tree is the previous one's files less those removed, with those written (new or replaced): a
    file the writer kept is a link to the previous tree's, and anything there that was not a regular file was
    written anew or removed. A link has its inode's size and mtime, as scanned before the build: a file changed
    since is seen as changed by the next build (its stat differs from the record) and hashed, never trusted. A
    file `relinked` (a link to it made or removed in this build) has a new ctime: it is lstat'ed, after the
    write's last link or unlink.
    """
    dropped = {*swapped.written, *swapped.removed}
    entries = {path: e for path, e in swapped.old.items() if e.kind != DIRECTORY and path not in dropped}
    stats = swapped.stats
    relinked = list(entries) if swapped.relinked is None else swapped.relinked
    for path in relinked:
        scanned = entries.get(path)
        if scanned is not None:
            entries[path] = _relinked(entry_of(os.lstat(f"{real}/{path}")), scanned)
    for path in swapped.written:
        found = stats.get(path)
        if found is None:
            found = entry_of(os.lstat(f"{real}/{path}"))
        entries[path] = found
    return entries


def _relinked(now: OnDisk, scanned: OnDisk) -> OnDisk:
    """The entry to record of a file linked or unlinked since the scan: its stat now, if only its ctime changed.

    Anything else changed means someone wrote to it during the build: the scanned entry is kept, which the next
    build finds different and hashes."""
    return now if now[:4] == scanned[:4] else scanned


def spec_digest(files: Mapping[str, bytes | Unreadable], label: str) -> str | None:
    """One hash of every spec file's name and bytes (None if one is unreadable: that build must fail as usual)."""
    digest = hashlib.sha256(label.encode() + b"\0")
    for name, data in sorted(files.items()):
        if not isinstance(data, bytes):
            return None
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return digest.hexdigest()


def untouched(cached: Cached, old: Mapping[str, OnDisk]) -> bool:
    """Whether the output holds exactly the manifest's files, each as the cache recorded it."""
    present = {path for path, entry in old.items() if entry.kind != DIRECTORY}
    return present == {*cached.files, MANIFEST} and len(cached.trusted) == len(cached.files)
