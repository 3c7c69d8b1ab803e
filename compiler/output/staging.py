"""The staging tree of one write: files linked from the previous tree or written, directories made, fsync before
the swap.

compiler.output.writer drives it (and swaps it in); compiler.output.spare stages in the spare tree instead.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from compiler.diagnostics import InternalError
from compiler.output import durable
from compiler.output.disk import REGULAR, OnDisk, entry_of, file_digest, remove_tree, write_all
from compiler.output.flusher import Flusher
from compiler.output.manifest import MANIFEST, check_path

# From this many files written on, a helper process fsyncs them as the write goes on (compiler.output.flusher).
# Below it the helper's start (~10 ms, beside the build) is not worth it: a one-service rebuild writes ~10.
FLUSH_FROM = 256


@dataclass(frozen=True, kw_only=True, slots=True)
class NewFile:
    """One file of the tree being written: its sha256 and its bytes, or None to keep the previous tree's file.

    `data=None` is a promise of the caller (an incremental build reusing a target): the previous
    tree holds this path with this digest, as the build cache vouched.
    """

    path: str
    digest: str
    data: bytes | None = None


def stat_of(fd: int) -> OnDisk:
    """An open file's entry as `scan_tree` would find it, from fstat (no path looked up)."""
    return entry_of(os.fstat(fd))


def new_file(path: str, data: bytes) -> NewFile:
    """A file given by its bytes."""
    return NewFile(path=path, digest=hashlib.sha256(data).hexdigest(), data=data)


def new_files(tree: Mapping[str, bytes]) -> Iterator[NewFile]:
    """A tree held in memory (path -> bytes) as the writer takes it, one file at a time."""
    for path, data in tree.items():
        yield new_file(path, data)


class Staging:
    """The staging tree of one write, started at the first file that differs from the previous tree.

    Until then, files equal to the previous tree's are only noted; once started, they are hard-linked
    as they come, new bytes are written, and every path written is kept for the fsync before the swap.
    """

    def __init__(
        self, real: Path, old: Mapping[str, OnDisk], trusted: Mapping[str, str], root: Path | None = None
    ) -> None:
        self.real, self.old, self.trusted = real, old, trusted
        self.root = root or real.parent / f".{real.name}.meshc-new-{os.getpid()}"
        # Plain strings in the per-file loop: pathlib's joins cost more than the link syscalls they name.
        self.source, self.target = f"{real}/", f"{self.root}/"
        self.started = False
        self.seen: set[str] = set()
        self.pending: list[str] = []  # equal files noted before the staging tree existed
        self.written: list[str] = []
        # Each written file's stat as fstat gave it once written, for the build cache: one lstat by path per file
        # after the swap took ~60 ms of a full build at 1,000 services (compiler.output.cache.Swapped).
        self.stats: dict[str, OnDisk] = {}
        self.directories: set[str] = set()
        # The directories this process made an entry in (a file, a link, a directory), and whether a worker beside
        # it (compiler.output.worker) fsynced the ones it made entries in, after its last: then `finish` fsyncs
        # these alone, not every directory of the tree.
        self.created_in: set[str] = set()
        self.others_synced = False
        self.flusher: Flusher | None = None
        self.manifest: str | None = None  # the sha256 of the MANIFEST.json taken, if any
        # Paths may hold files already (a failed worker's, compiler.output.worker): replace them.
        self.replacing = False

    def add(self, file: NewFile) -> None:
        """Take one file of the new tree: link it if the previous tree holds it, else write it."""
        check_path(file.path)
        if file.path in self.seen or (file.path == MANIFEST and file.data is None):
            raise InternalError(f"two artifacts claim {file.path}")
        self.seen.add(file.path)
        if file.path == MANIFEST:
            self.manifest = file.digest
        if self._held(file):
            if self.started:
                self._link(file.path)
            else:
                self.pending.append(file.path)
            return
        if file.data is None:
            raise InternalError(f"{file.path}: reused from a previous tree that does not hold it")
        self.start()
        self._write(file.path, file.data)
        self.written.append(file.path)
        if self.flusher is not None:
            self.flusher.file(self.target + file.path)
        elif len(self.written) == FLUSH_FROM and type(self) is Staging:
            self.flush_in_background()

    def flush_in_background(self) -> None:
        """From the FLUSH_FROM-th file written on, a helper process fsyncs each file once written (see
        compiler.output.flusher), the ones before first. A spare tree's few rewrites are fsynced at the end."""
        self.flusher = durable.background_flusher()
        if self.flusher is not None:
            for path in self.written:
                self.flusher.file(self.target + path)

    def abandon(self) -> None:
        """The write is given up (its staging tree is being removed): no helper is left behind."""
        if self.flusher is not None:
            self.flusher.close()
            self.flusher = None

    def keep(self, kept: Mapping[str, str]) -> None:
        """Take the files the caller reuses from the previous tree, in bulk (see `write_files`).

        The trusted digests come from the build cache's stat check of the previous tree's regular files,
        so a path trusted with the same digest is held there. The paths are the manifest's, which meshc
        checked when it first wrote them.
        """
        if not kept:
            return
        if not kept.items() <= self.trusted.items():  # one C-level pass over 10,600 pairs
            wrong = min(path for path, digest in kept.items() if self.trusted.get(path) != digest)
            raise InternalError(f"{wrong}: reused from a previous tree that does not hold it")
        self.seen.update(kept)
        self.pending.extend(kept)

    def _write(self, path: str, data: bytes) -> None:
        self._parent(path)
        if self.replacing and os.path.lexists(self.target + path):
            os.unlink(self.target + path)  # it may be a link to the output's file: never written through
        # os.open, not Path.write_bytes: a buffered file object costs an fstat, an isatty ioctl and
        # its own allocations per file. Writing 20,000 files of 20 kB: 0.03-0.08 s user, not 0.22-0.27 s.
        # O_EXCL: nothing is ever written over, so never through a link into the output, even where a worker
        # beside this process (compiler.output.worker) claims the same path.
        try:
            fd = os.open(self.target + path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        except FileExistsError:
            raise InternalError(f"two artifacts claim {path}") from None
        self.created_in.add(path.rpartition("/")[0])
        try:
            write_all(fd, data)
            self.stats[path] = stat_of(fd)
        finally:
            os.close(fd)

    def start(self) -> None:
        """Create the staging tree (once) and link the equal files noted so far."""
        if self.started:
            return
        self.started = True
        if (
            self.root.is_dir() and not self.root.is_symlink()
        ):  # only this pid names it: a reused pid's leftover
            remove_tree(self.root)
        elif os.path.lexists(self.root):
            self.root.unlink()
        self.root.parent.mkdir(parents=True, exist_ok=True)
        self.root.mkdir()
        self.directories.add("")
        for path in self.pending:
            self._link(path)
        self.pending = []

    def finish(self) -> None:
        """Everything written reaches the disk before the swap publishes it: files, then the directories naming them.

        Hard-linked files are already durable. Not os.sync(): that flushes every filesystem on the
        machine, everybody's dirty pages included.
        """
        self.start()  # a tree that only lost files still needs its staging copy
        self.flush(self.created_in if self.others_synced else self.directories)

    def flush(self, directories: Collection[str]) -> None:
        """fsync every file written, then `directories`: through the helper if there is one (and it answers),
        else here."""
        paths = [self.target + path for path in sorted(directories)]
        if self.flusher is not None:
            flusher, self.flusher = self.flusher, None
            if flusher.finish(paths):
                return
        durable.fsync_paths([self.target + path for path in self.written], os.O_RDONLY)
        durable.fsync_paths(paths, os.O_RDONLY | os.O_DIRECTORY)

    def vouched(self, path: str) -> str | None:
        """The sha256 the build cache vouches that the previous tree's regular file at `path` holds; None if none."""
        entry = self.old.get(path)
        return self.trusted.get(path) if entry is not None and entry.kind == REGULAR else None

    def _held(self, file: NewFile) -> bool:
        known = self.vouched(file.path)
        if known is not None:
            return known == file.digest
        entry = self.old.get(file.path)
        if entry is None or entry.kind != REGULAR:
            return False
        if file.data is not None and entry.size != len(file.data):
            return False
        try:
            return file_digest(self.real / file.path) == file.digest
        except OSError:  # unreadable: write it anew
            return False

    def _link(self, path: str) -> None:
        self._parent(path)
        if self.replacing and os.path.lexists(self.target + path):
            os.unlink(self.target + path)
        try:
            os.link(self.source + path, self.target + path, follow_symlinks=False)
        except FileExistsError:
            raise InternalError(f"two artifacts claim {path}") from None
        self.created_in.add(path.rpartition("/")[0])

    def _parent(self, path: str) -> None:
        parent = path.rpartition("/")[0]
        missing = []
        while parent not in self.directories:
            missing.append(parent)
            parent = parent.rpartition("/")[0]
        for directory in reversed(missing):  # parents first
            self._mkdir(directory)

    def _mkdir(self, directory: str) -> None:
        try:
            os.mkdir(self.target + directory)
            self.created_in.add(directory.rpartition("/")[0])
        except FileExistsError:  # made by the worker writing beside this process (compiler.output.worker)
            if not stat.S_ISDIR(os.lstat(self.target + directory).st_mode):
                raise
        self.directories.add(directory)
