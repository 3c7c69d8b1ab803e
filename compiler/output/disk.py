"""What is on disk: entries of an output tree as lstat sees them, and regular files read or hashed safely."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

# ---------------------------------------------------------------- what is on disk

REGULAR, DIRECTORY = "regular file", "directory"
_CHUNK = 1 << 20  # files are hashed in 1 MiB reads: a 2 GiB hand-made file costs time, never memory


class OnDisk(NamedTuple):
    """One entry of an output tree as `lstat` sees it; nothing is opened to learn it.

    `mtime_ns`, `inode` and `ctime_ns` let a build tell an untouched file from its recorded stat (see output.cache).
    A NamedTuple, not a frozen dataclass: every build and check scans the whole output (12,363
    entries at 1,000 services), and a frozen dataclass's __init__ makes that scan 12 % slower
    (median CPU 76 ms against 68 ms over 15 interleaved runs; `python benchmarks/tricks.py --scan`).
    """

    kind: str
    size: int = 0
    mtime_ns: int = 0
    inode: int = 0
    # The inode's change time, which no one can set back: an edit whose size and mtime were put back (`cp -p`,
    # `touch -r`) still changes it, as git's index knows.
    ctime_ns: int = 0


_A_DIRECTORY = OnDisk(DIRECTORY)


def scan_tree(root: Path) -> dict[str, OnDisk]:
    """Every entry under `root` (relative posix path -> OnDisk), symlinks not followed; {} if `root` is no directory.

    A symlink, FIFO, socket or device is listed with its kind and never opened: opening a FIFO
    blocks until a writer comes, and a symlink may point anywhere. A directory is known from its
    listing (no lstat of its own): only files need their size, mtime, inode and ctime.
    """
    found: dict[str, OnDisk] = {}
    # Regular files told first and the record made through tuple.__new__ (OnDisk's own __new__ is Python): the
    # scan of a 1,000-service output takes a median 58 ms CPU, not 62 (15 interleaved runs).
    new = tuple.__new__
    for path, entry in _walk(root):
        if entry.is_dir(follow_symlinks=False):
            found[path] = _A_DIRECTORY
            continue
        info = entry.stat(follow_symlinks=False)
        mode = info.st_mode
        kind = REGULAR if stat.S_ISREG(mode) else kind_of(mode)
        found[path] = new(OnDisk, (kind, info.st_size, info.st_mtime_ns, info.st_ino, info.st_ctime_ns))
    return found


def entry_of(info: os.stat_result) -> OnDisk:
    """An entry as `scan_tree` records it, from the (l)stat of a file that is not a directory."""
    return OnDisk(kind_of(info.st_mode), info.st_size, info.st_mtime_ns, info.st_ino, info.st_ctime_ns)


def list_tree(root: Path) -> dict[str, OnDisk]:
    """`scan_tree` from the directory listings alone: each entry's kind and inode, size and times left 0.

    For a tree whose files are only told apart by inode (the spare tree, compiler.output.spare): the
    listing already names each entry's type and inode, so no file is lstat'ed. One listing's inode is
    checked against lstat first; where they differ (overlayfs without xino), the full scan runs instead.
    """
    found: dict[str, OnDisk] = {}
    checked = False
    for path, entry in _walk(root):
        if entry.is_dir(follow_symlinks=False):
            found[path] = _A_DIRECTORY
        elif entry.is_file(follow_symlinks=False):
            if not checked:
                if entry.inode() != entry.stat(follow_symlinks=False).st_ino:
                    return scan_tree(root)
                checked = True
            found[path] = OnDisk(REGULAR, 0, 0, entry.inode())
        else:
            found[path] = OnDisk(kind_of(entry.stat(follow_symlinks=False).st_mode), 0, 0, entry.inode())
    return found


def _walk(root: Path) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """Every entry under `root` with its relative posix path, directories walked into (none if `root` is no
    directory). The directory listing's type is cached in each entry: telling a directory costs no lstat."""
    if not root.is_dir():
        return
    pending = [""]
    while pending:
        relative = pending.pop()
        with os.scandir(f"{root}/{relative}" if relative else root) as entries:
            for entry in entries:
                path = f"{relative}/{entry.name}" if relative else entry.name
                if entry.is_dir(follow_symlinks=False):
                    pending.append(path)
                yield path, entry


def kind_of(mode: int) -> str:
    """What a file mode is, in words."""
    return _KINDS.get(stat.S_IFMT(mode), _SPECIAL)


_SPECIAL = "special file"
_KINDS = {
    stat.S_IFREG: REGULAR,
    stat.S_IFDIR: DIRECTORY,
    stat.S_IFLNK: "symlink",
    stat.S_IFIFO: "named pipe (FIFO)",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
}


def open_regular(path: Path) -> int:
    """Open a regular file for reading; refuse (OSError) a symlink, and never block on a FIFO swapped in meanwhile."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    return fd


def write_all(fd: int, data: bytes) -> None:
    """Write all of `data` to open file `fd`: a regular file takes it at once, but write() promises no more."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def file_digest(path: Path) -> str:
    """The sha256 hex of a regular file, read in chunks."""
    digest = hashlib.sha256()
    with os.fdopen(open_regular(path), "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def read_regular(path: Path, limit: int) -> bytes | None:
    """A regular file's bytes, or None if it is anything else or larger than `limit` bytes."""
    try:
        fd = open_regular(path)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(limit + 1)
    return data if len(data) <= limit else None


def read_tree(root: Path) -> dict[str, bytes]:
    """Every regular file under `root` as relative posix path -> bytes ({} if root is absent); for small trees."""
    return {
        path: (root / path).read_bytes() for path, entry in scan_tree(root).items() if entry.kind == REGULAR
    }


def remove_tree(path: str | Path, *, ignore_errors: bool = False) -> None:
    """shutil.rmtree, imported only when a tree is removed: shutil brings zlib, bz2 and lzma, ~1.5 ms of every start."""
    import shutil

    shutil.rmtree(path, ignore_errors=ignore_errors)


def cause(error: OSError) -> str:
    """An OSError in words, as the C library says it (`no space left on device`), never a bare errno."""
    text = error.strerror or str(error) or type(error).__name__
    return text[:1].lower() + text[1:]
