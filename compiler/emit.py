"""Canonical serialization, and the writer: atomic swap of the whole output tree plus MANIFEST.json, under a lock."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import hashlib
import json
import os
import re
import shutil
import stat
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import Any

import orjson

from compiler import __version__
from compiler.diagnostics import EnvironmentFailure

MANIFEST = "MANIFEST.json"
MANIFEST_FORMAT = 1

# A string is written plain only when no YAML 1.1 or 1.2 reader could take it for anything else.
_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_./-]*")
_YAML11_WORDS = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null"})
# Characters JSON leaves raw but YAML must escape: line breaks YAML 1.1 readers split on, and
# characters outside YAML's printable set (DEL, C1 controls, BOM, U+FFFE/U+FFFF) that readers reject.
_YAML_ESCAPE = re.compile("[\x7f-\x9f\u2028\u2029\ufeff\ufffe\uffff]")


@dataclass(frozen=True, kw_only=True, slots=True)
class Artifact:
    """One output file: its path under output/, its bytes, and the target (workload id) it belongs to."""

    path: str
    data: bytes
    target: str | None = None


# ---------------------------------------------------------------- serialization


def dump_json(data: Any) -> bytes:
    """Canonical JSON: sorted keys, two-space indent, UTF-8, trailing newline.

    orjson, because the stdlib's C encoder is skipped whenever `indent` is set, and the
    pure-Python one was a third of a 1,000-service build; the bytes are the same.
    """
    return orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def canonical_json(value: Any) -> bytes:
    """The one byte form meshc hashes: compact JSON, sorted keys, UTF-8 (stable across Python versions)."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def content_digest(value: Any) -> str:
    """sha256 hex of `canonical_json(value)`: equal data, equal digest, on every machine."""
    return hashlib.sha256(canonical_json(value)).hexdigest()


def dump_yaml(data: Any) -> bytes:
    """Canonical block YAML for dicts, lists, str, int, float, bool and None; keys keep insertion order."""
    lines: list[str] = []
    if isinstance(data, (dict, list)) and data:
        _block(data, 0, lines)
    else:
        lines.append(_scalar(data, 2))  # a top-level literal block still needs indented lines
    return ("\n".join(lines) + "\n").encode()


# Output repeats a few thousand keys and names a million times. At 1,000 services the backends take
# 1.42 s CPU with this cache and 1.73 s without (medians of 5, `python benchmarks/tricks.py`).
@functools.lru_cache(maxsize=1 << 16)
def yaml_string(value: str) -> str:
    """A string as a YAML scalar: plain where unambiguous in YAML 1.1 and 1.2, else double-quoted."""
    if _PLAIN.fullmatch(value) and value.lower() not in _YAML11_WORDS:
        return value
    quoted = json.dumps(value, ensure_ascii=False)
    return _YAML_ESCAPE.sub(lambda match: f"\\u{ord(match.group()):04x}", quoted)


def _block(data: dict[str, Any] | list[Any], indent: int, lines: list[str]) -> None:
    pad = " " * indent
    if isinstance(data, dict):
        for key, value in data.items():
            _entry(f"{pad}{yaml_string(str(key))}:", value, indent, lines)
    else:
        for item in data:
            if isinstance(item, dict) and item:
                start = len(lines)
                _block(item, indent + 2, lines)
                lines[start] = f"{pad}- {lines[start][indent + 2 :]}"
            else:
                _entry(f"{pad}-", item, indent, lines)


def _entry(head: str, value: Any, indent: int, lines: list[str]) -> None:
    if isinstance(value, (dict, list)) and value:
        lines.append(head)
        _block(value, indent + 2, lines)
    else:
        lines.append(f"{head} {_scalar(value, indent + 2)}")


def _scalar(value: Any, indent: int) -> str:
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, str):
        return _literal(value, indent) if _literal_ok(value) else yaml_string(value)
    if value == {}:
        return "{}"
    if value == []:
        return "[]"
    raise TypeError(f"cannot serialize {type(value).__name__} to YAML")


def _float(value: float) -> str:
    """Floats always with a dot and no exponent: YAML 1.1 (Psych) reads `1e-05` as a string."""
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError("NaN and infinity are not valid in meshc output")
    text = format(Decimal(repr(value)), "f")  # repr is the shortest text that reads back as the same float
    return text if "." in text else text + ".0"


def _literal_ok(value: str) -> bool:
    """Multi-line text reads best as a literal block, if it has nothing a block cannot hold."""
    # One C-level isprintable() over the text: a per-character loop here dominated big builds.
    return (
        "\n" in value.rstrip("\n")
        and not value.startswith((" ", "\n"))
        and value.replace("\n", "").replace("\t", "").isprintable()
    )


def _literal(value: str, indent: int) -> str:
    body = value.rstrip("\n")
    trailing = len(value) - len(body)
    chomp = "-" if trailing == 0 else ("" if trailing == 1 else "+")
    pad = " " * indent
    lines = body.split("\n") + [""] * max(trailing - 1, 0)
    if "" not in lines:  # the common case (embedded JSON): indent with one C-level replace
        return f"|{chomp}\n{pad}" + "\n".join(lines).replace("\n", "\n" + pad)
    return f"|{chomp}\n" + "\n".join(f"{pad}{line}" if line else "" for line in lines)


# ---------------------------------------------------------------- writing


@dataclass(frozen=True, kw_only=True, slots=True)
class WriteResult:
    """What a write changed: files written (new or different bytes) and files removed."""

    changed: bool
    written: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class TreeStatus:
    """How an output tree differs from what the spec renders."""

    stale: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()
    hand_edited: tuple[str, ...] = ()

    @property
    def clean(self) -> bool:
        return not (self.stale or self.missing or self.extra or self.hand_edited)


def manifest(artifacts: Sequence[Artifact], rollout: Mapping[str, Any] | None = None) -> bytes:
    """MANIFEST.json: format, meshc version, every file's sha256, each target's files, the rollout if any."""
    targets: dict[str, list[str]] = {}
    for artifact in artifacts:
        if artifact.target is not None:
            targets.setdefault(artifact.target, []).append(artifact.path)
    return dump_json(
        {
            "format": MANIFEST_FORMAT,
            "meshc_version": __version__,
            "files": {a.path: hashlib.sha256(a.data).hexdigest() for a in artifacts},
            "targets": {target: sorted(paths) for target, paths in targets.items()},
            **({"rollout": rollout} if rollout is not None else {}),
        }
    )


def render_tree(artifacts: Sequence[Artifact], rollout: Mapping[str, Any] | None = None) -> dict[str, bytes]:
    """The complete file tree of a build, manifest included, checking paths are safe and unique."""
    files: dict[str, bytes] = {}
    for artifact in sorted(artifacts, key=lambda a: a.path):
        _check_path(artifact.path)
        if artifact.path in files or artifact.path == MANIFEST:
            raise ValueError(f"two artifacts claim {artifact.path}")
        files[artifact.path] = artifact.data
    files[MANIFEST] = manifest(sorted(artifacts, key=lambda a: a.path), rollout)
    return files


def _check_path(path: str) -> None:
    parts = path.split("/")
    if path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"unsafe artifact path {path!r}")


def read_tree(root: Path) -> dict[str, bytes]:
    """Every regular file under `root` as relative posix path -> bytes ({} if absent); for small trees."""
    return {
        path: (root / path).read_bytes() for path, entry in scan_tree(root).items() if entry.kind == REGULAR
    }


# ---------------------------------------------------------------- what is on disk

REGULAR, DIRECTORY = "regular file", "directory"
_CHUNK = 1 << 20  # files are hashed in 1 MiB reads: a 2 GiB hand-made file costs time, never memory
# a 3,000-service mesh's manifest is a few MB; a bigger "manifest" is not meshc's
MAX_MANIFEST_BYTES = 64 << 20


@dataclass(frozen=True, kw_only=True, slots=True)
class OnDisk:
    """One entry of an output tree as `lstat` sees it: its kind and size; nothing is opened to learn them."""

    kind: str
    size: int = 0


def scan_tree(root: Path) -> dict[str, OnDisk]:
    """Every entry under `root` (relative posix path -> OnDisk), symlinks not followed; {} if `root` is no directory.

    A symlink, FIFO, socket or device is listed with its kind and never opened: opening a FIFO
    blocks until a writer comes, and a symlink may point anywhere.
    """
    if not root.is_dir():
        return {}
    found: dict[str, OnDisk] = {}
    pending = [""]
    while pending:
        relative = pending.pop()
        with os.scandir(root / relative if relative else root) as entries:
            for entry in entries:
                path = f"{relative}/{entry.name}" if relative else entry.name
                info = entry.stat(follow_symlinks=False)
                found[path] = OnDisk(kind=kind_of(info.st_mode), size=info.st_size)
                if stat.S_ISDIR(info.st_mode):
                    pending.append(path)
    return found


def kind_of(mode: int) -> str:
    """What a file mode is, in words."""
    kinds = (
        (stat.S_ISREG, REGULAR),
        (stat.S_ISDIR, DIRECTORY),
        (stat.S_ISLNK, "symlink"),
        (stat.S_ISFIFO, "named pipe (FIFO)"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    )
    return next((name for test, name in kinds if test(mode)), "special file")


def _open_regular(path: Path) -> int:
    """Open a regular file for reading; refuse (OSError) a symlink, and never block on a FIFO swapped in meanwhile."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    return fd


def file_digest(path: Path) -> str:
    """The sha256 hex of a regular file, read in chunks."""
    digest = hashlib.sha256()
    with os.fdopen(_open_regular(path), "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def read_regular(path: Path, limit: int) -> bytes | None:
    """A regular file's bytes, or None if it is anything else or larger than `limit` bytes."""
    try:
        fd = _open_regular(path)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(limit + 1)
    return data if len(data) <= limit else None


def read_manifest(root: Path) -> dict[str, Any] | None:
    """The MANIFEST.json meshc wrote in `root`, or None if there is none or it is not one meshc writes."""
    raw = read_regular(root / MANIFEST, MAX_MANIFEST_BYTES)
    try:
        data = json.loads(raw) if raw is not None else None
    # RecursionError: a hand-made file nested deeper than the parser goes
    except (ValueError, RecursionError):
        return None
    return data if _is_manifest(data) else None


def _is_manifest(data: Any) -> bool:
    """The shape `manifest()` writes (`rollout` is added by rollout-aware builds); a stray JSON file is not one."""
    if not isinstance(data, dict) or not {"format", "meshc_version", "files", "targets"} <= set(data):
        return False
    files, targets = data["files"], data["targets"]
    return (
        type(data["format"]) is int
        and data["format"] == MANIFEST_FORMAT
        and isinstance(data["meshc_version"], str)
        and isinstance(files, dict)
        and all(isinstance(v, str) and _SHA256.fullmatch(v) for v in files.values())
        and isinstance(targets, dict)
        and all(isinstance(v, list) and all(isinstance(p, str) for p in v) for v in targets.values())
    )


_SHA256 = re.compile(r"[0-9a-f]{64}")


# ---------------------------------------------------------------- which output paths meshc may replace


class OutputRefused(Exception):
    """meshc will not build into this path (exit 2): it is no directory meshc may replace as a whole."""

    def __init__(self, path: str, reason: str) -> None:
        self.path, self.reason = path, reason
        super().__init__(f"{path}: {reason}")


def resolve_output(out: Path, protect: Sequence[tuple[str, Path]] = ()) -> Path:
    """The real directory a build into `out` replaces; raise OutputRefused for a path meshc must never replace.

    A symlink to a directory is built through: its target is replaced and the link keeps pointing
    at the new tree. The current directory and every `protect` path (what, path) may not be the
    output or inside it, since a build replaces the whole directory.
    """
    label = str(out)
    path = Path(os.path.abspath(out))
    info = _lstat(out, label)
    link = info is not None and stat.S_ISLNK(info.st_mode)
    if link:
        info = _link_target(path, label)
    if info is not None and not stat.S_ISDIR(info.st_mode):
        what = f"a symlink to a {kind_of(info.st_mode)}" if link else f"a {kind_of(info.st_mode)}"
        raise OutputRefused(
            label, f"is {what}, not a directory; name a directory that is new, empty or built by meshc"
        )
    real = Path(os.path.realpath(path))
    if ".git" in real.parts:
        raise OutputRefused(
            label,
            "is inside a .git directory, which belongs to git; give the build a directory of its own (e.g. output)",
        )
    for what, guarded in (("the current directory", Path.cwd()), *protect):
        guarded = Path(os.path.realpath(guarded))
        if guarded == real or guarded.is_relative_to(real):
            relation = f"is {what}" if guarded == real else f"contains {what} ({guarded})"
            raise OutputRefused(
                label,
                f"{relation}; a build replaces its whole output directory, so give it one of its own (e.g. output)",
            )
    if info is not None and _is_mount_point(real):
        # Publishing is one rename of the whole directory, which cannot replace a mount point (EBUSY), and the
        # staging copy beside it would land on the parent filesystem (a cross-device rename fails anyway).
        # Building in place file by file would give up atomicity, so a mount point is refused on purpose.
        raise OutputRefused(
            label,
            f"is a mount point; meshc publishes a build by renaming the whole directory, which a mount point "
            f"cannot be, so build into a directory inside it (e.g. {label.rstrip('/')}/output)",
        )
    return real


def _lstat(path: Path, label: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        raise OutputRefused(label, f"lies under {_blocking_file(path)}, which is not a directory") from None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise OutputRefused(label, "lies under a symlink loop") from None
        raise EnvironmentFailure(label, cause(error)) from error


def _link_target(path: Path, label: str) -> os.stat_result:
    target = os.readlink(path)
    try:
        return os.stat(path)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise OutputRefused(label, f"is a symlink loop (-> {target})") from None
        if error.errno in (errno.ENOENT, errno.ENOTDIR):
            raise OutputRefused(
                label, f"is a dangling symlink (-> {target}); point it at a directory or remove it"
            ) from None
        raise EnvironmentFailure(label, cause(error)) from error


def _blocking_file(path: Path) -> str:
    """The first ancestor of `path` (as the user wrote it) that exists and is not a directory."""
    for ancestor in reversed(path.parents):
        if os.path.lexists(ancestor) and not ancestor.is_dir():
            return str(ancestor)
    return str(path.parent)


def _is_mount_point(path: Path) -> bool:
    """os.path.ismount misses a bind mount of the same filesystem; the kernel's mount table does not."""
    if os.path.ismount(path):
        return True
    try:
        table = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return False
    # Field 5 is the mount point, with space, tab, newline and backslash written as octal escapes.
    points = {
        re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
        for line in table.splitlines()
        if line
    }
    return str(path) in points


def check_replaceable(root: Path, label: str, entries: Mapping[str, OnDisk]) -> None:
    """Refuse to replace a directory that holds a git repository, or that is neither empty nor a tree meshc built."""
    git = next((path for path in sorted(entries) if PurePosixPath(path).name == ".git"), None)
    if git is not None:
        raise OutputRefused(
            label, f"holds {git}, a git repository, which a build would delete with the rest of the directory"
        )
    if entries and read_manifest(root) is None:
        raise OutputRefused(
            label,
            "is not empty and holds no MANIFEST.json written by meshc; a build replaces its whole output "
            "directory, so it writes only into a new or empty directory or one it built",
        )


def cause(error: OSError) -> str:
    """An OSError in words, as the C library says it (`no space left on device`), never a bare errno."""
    text = error.strerror or str(error) or type(error).__name__
    return text[:1].lower() + text[1:]


# ---------------------------------------------------------------- the lock

LOCK_TIMEOUT = 600.0
_LOCK_POLL = 0.05


def lock_path(real: Path) -> Path:
    """The lock file of an output directory, beside it."""
    return real.parent / f".{real.name}.meshc-lock"


@contextmanager
def output_lock(
    real: Path,
    label: str,
    timeout: float = LOCK_TIMEOUT,
    on_wait: Callable[[Path], None] | None = None,
    required: bool = True,
) -> Iterator[None]:
    """Hold the exclusive lock of output directory `real` (flock on a file beside it) for a whole build or check.

    Without it, a build that compared `output/` with its rendering could link files of a tree
    another build has just swapped in, and publish a tree no spec renders. A second meshc waits
    (calling `on_wait` once) up to `timeout` seconds, then fails. `required=False` (check) goes on
    unlocked where no lock file can be made, a place where no build can write either.
    """
    lock = lock_path(real)
    try:
        if required:
            real.parent.mkdir(parents=True, exist_ok=True)
        fd = _acquire(lock, label, timeout, on_wait)
    except OSError as error:
        if required:
            raise EnvironmentFailure(
                label, f"cannot create its lock file {lock.name} beside it: {cause(error)}"
            ) from error
        fd = None
    try:
        yield
    finally:
        if fd is not None:
            # Unlinked while held; a waiter that then locks the unlinked file sees a different inode and retries.
            with contextlib.suppress(OSError):
                os.unlink(lock)
            os.close(fd)


def _acquire(lock: Path, label: str, timeout: float, on_wait: Callable[[Path], None] | None) -> int:
    deadline, told = time.monotonic() + timeout, False
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            while not _try_lock(fd):
                if not told and on_wait is not None:
                    on_wait(lock)
                    told = True
                if time.monotonic() >= deadline:
                    raise EnvironmentFailure(
                        label,
                        f"another meshc build or check still holds its lock ({lock.name}) after "
                        f"{timeout:g}s; try again when it has finished",
                    )
                time.sleep(_LOCK_POLL)
            if _same_file(fd, lock):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (on_disk.st_dev, on_disk.st_ino)


# ---------------------------------------------------------------- writing


def write_tree(out: Path, files: Mapping[str, bytes]) -> WriteResult:
    """Make `out` hold exactly `files`, atomically: the old tree stays whole until one rename swaps it.

    The caller holds `output_lock`. Unchanged files are hard-linked into the staging tree, so a
    one-service change writes one service's files; a build whose bytes equal what is there writes
    nothing. On any failure the staging tree is removed and `out` is left as it was.
    """
    label = str(out)
    real = resolve_output(out)
    _recover(real)
    try:
        old = scan_tree(real)
    except OSError as error:
        raise EnvironmentFailure(label, f"cannot read the previous output: {cause(error)}") from error
    check_replaceable(real, label, old)
    kept = frozenset(
        path for path, data in files.items() if path in old and _same(real / path, old[path], data)
    )
    written = tuple(sorted(set(files) - kept))
    removed = tuple(
        sorted(path for path, entry in old.items() if entry.kind != DIRECTORY and path not in files)
    )
    if not written and not removed:
        return WriteResult(changed=False)
    staging = real.parent / f".{real.name}.meshc-new-{os.getpid()}"
    try:
        _stage(staging, real, files, kept)
        _swap(staging, real)
    except BaseException as error:
        # the partial tree must not keep the disk full until the next build
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(error, OSError):
            raise EnvironmentFailure(
                label, f"cannot write the new tree: {cause(error)}; the output is left as it was"
            ) from error
        raise
    try:
        _fsync(real.parent, os.O_RDONLY | os.O_DIRECTORY)  # the swap itself survives a crash
    except OSError as error:
        raise EnvironmentFailure(
            label, f"the new output is in place, but the swap cannot be flushed to disk: {cause(error)}"
        ) from error
    _remove_previous(staging)
    return WriteResult(changed=True, written=written, removed=removed)


def _remove_previous(staging: Path) -> None:
    """Remove the previous tree, which the swap left at `staging` (nothing is there if there was none)."""
    try:
        if os.path.lexists(staging):
            shutil.rmtree(staging)
    except OSError as error:
        raise EnvironmentFailure(
            str(staging),
            f"the new output is in place, but this copy of the previous one cannot be "
            f"removed: {cause(error)}",
        ) from error


def _same(path: Path, entry: OnDisk, data: bytes) -> bool:
    """Whether a file on disk already holds `data`: sizes first, then a streamed hash (never read whole)."""
    if entry.kind != REGULAR or entry.size != len(data):
        return False
    try:
        return file_digest(path) == hashlib.sha256(data).hexdigest()
    except OSError:  # unreadable: write it anew
        return False


def _stage(staging: Path, real: Path, files: Mapping[str, bytes], kept: frozenset[str]) -> None:
    """Write the new tree at `staging`, durably: new bytes written, unchanged files hard-linked from `real`."""
    # only this process's pid names it: a leftover of a reused pid
    if staging.is_dir() and not staging.is_symlink():
        shutil.rmtree(staging)
    elif os.path.lexists(staging):
        staging.unlink()
    staging.parent.mkdir(parents=True, exist_ok=True)
    directories = tree_directories(staging, files)
    for directory in directories:  # parents first
        directory.mkdir()
    written = []
    for path, data in files.items():
        if path in kept:
            os.link(real / path, staging / path, follow_symlinks=False)
        else:
            (staging / path).write_bytes(data)
            written.append(staging / path)
    # What was written reaches the disk before the swap publishes it: its files, then the directories
    # that name them (hard-linked files are already durable). Not os.sync(): that flushes every
    # filesystem on the machine, everybody's dirty pages included.
    fsync_paths(written, os.O_RDONLY)
    fsync_paths(directories, os.O_RDONLY | os.O_DIRECTORY)


def tree_directories(root: Path, files: Mapping[str, bytes]) -> list[Path]:
    """`root` and every directory under it that holds a file of `files`, parents before children."""
    found = {root}
    for path in files:
        parent = (root / path).parent
        while parent not in found:
            found.add(parent)
            parent = parent.parent
    return sorted(found)


# ext4 folds concurrent fsyncs into one journal commit. Writing a fresh 1,000-service tree (34,110 files)
# on a loaded 2-core VM, wall: one fsync at a time 84 s, 16 threads 25-45 s, 64 threads 21-31 s, and
# the machine-wide os.sync() this replaced 26-36 s (`python benchmarks/tricks.py --writes`).
FSYNC_THREADS = 64


def fsync_paths(paths: Sequence[Path], flags: int) -> None:
    """fsync every path (opened with `flags`), FSYNC_THREADS at a time."""
    with ThreadPoolExecutor(max_workers=FSYNC_THREADS) as pool:
        for _ in pool.map(lambda path: _fsync(path, flags), paths):
            pass


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _recover(out: Path) -> None:
    """Undo what a build killed between the two renames of the fallback swap left behind."""
    parked = out.parent / f".{out.name}.meshc-old"
    if parked.is_dir() and not os.path.lexists(out):
        os.rename(parked, out)
    shutil.rmtree(parked, ignore_errors=True)
    for stale in out.parent.glob(f".{out.name}.meshc-new-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if not pid.isdigit() or not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _swap(staging: Path, out: Path) -> None:
    """Put `staging` at `out`, leaving the previous tree at `staging`. Exchange is one atomic syscall on Linux."""
    if os.path.lexists(out) and _exchange(staging, out):
        return
    parked = out.parent / f".{out.name}.meshc-old"
    if os.path.lexists(out):
        os.rename(out, parked)
    try:
        os.rename(staging, out)
    except BaseException:
        if os.path.lexists(parked):
            os.rename(parked, out)  # the previous tree goes back where it was
        raise
    if os.path.lexists(parked):
        os.rename(parked, staging)


def _exchange(a: Path, b: Path) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    result: int = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return result == 0


# ---------------------------------------------------------------- comparing


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
    stale: list[str] = []
    edited: list[str] = []
    for path in sorted(set(files) & set(actual) - {MANIFEST}):
        digest = actual[path]
        if digest == hashlib.sha256(files[path]).hexdigest():
            continue
        (stale if digest is not None and recorded.get(path) == digest else edited).append(path)
    missing = sorted(set(files) - set(actual))
    extra = sorted(set(actual) - set(files))
    if MANIFEST in files and MANIFEST in actual:
        if actual[MANIFEST] is None:
            edited.append(MANIFEST)
        elif (
            not (stale or edited or missing or extra)
            and actual[MANIFEST] != hashlib.sha256(files[MANIFEST]).hexdigest()
        ):
            # the manifest follows the files: listed only when nothing else explains it
            stale.append(MANIFEST)
    return TreeStatus(
        stale=tuple(stale), missing=tuple(missing), extra=tuple(extra), hand_edited=tuple(edited)
    )


def recorded_hashes(raw: bytes) -> dict[str, str]:
    """Path -> sha256 from a MANIFEST.json's `files` ({} if it is not one)."""
    try:
        return dict(json.loads(raw).get("files", {}))
    except (ValueError, AttributeError, TypeError):
        return {}
