"""The spec files, the output's scan and the spare's listing, made by a forked child while the build reads its
caches and imports its stages.

A one-service rebuild at 1,000 services reads 1,001 spec files, lstats 10,600 output files and lists the spare's
12,000 entries: ~100 ms, mostly in the kernel, with the second core idle. The child is forked under the output's
lock, before the build has loaded its stages (a small process, few pages to copy), and hands each result back as
a frame (see `Prescan`). Whatever goes wrong in the child (it dies, is killed, cannot fork, sends something
short), the build does that part in its own process, as it did without one, so a failure is reported with the
very message a build without the child gives.
"""

from __future__ import annotations

import marshal
import os
import signal
import struct
from array import array
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from itertools import chain, repeat
from pathlib import Path

from compiler.output.disk import DIRECTORY, REGULAR, OnDisk, kind_of, list_tree, scan_tree, write_all
from compiler.output.forked import fork_child
from compiler.output.manifest import MANIFEST
from compiler.output.spare import Listed, listed

# A MANIFEST.json this big lists ~1,000 files or more (~240 bytes each): below, the scan here takes a few ms,
# less than the fork (the 1,000-service output's is 2.5 MB).
PRESCAN_FROM_BYTES = 256 << 10


# The kinds an entry can have (compiler.output.disk.kind_of), by the one-byte code a frame gives them.
_KINDS = (REGULAR, DIRECTORY, *sorted({kind_of(mode << 12) for mode in range(16)} - {REGULAR, DIRECTORY}))
_CODES = {kind: code for code, kind in enumerate(_KINDS)}
_HEADER = struct.Struct("<Q")  # a frame's length


class Prescan:
    """`job()`'s bytes, `scan_tree(real)` and then `list_tree(spare)` told apart against that scan
    (compiler.output.spare.Listed), computed in a child and sent as three frames; each is taken once. The job (a
    build reads its spec files there) runs first: its result is wanted first.

    The frames go into a memory file (memfd), so the child never waits for the parent to read one; one byte
    on a pipe says a frame is there, and the pipe's end says the child is done. A frame is one `marshal`
    blob of a tree's entries in columns (the paths joined by NUL, which no path holds, the kinds as one
    byte each, the numbers as arrays): decoding 12,000 entries so takes ~5 ms where marshalled tuples, one per
    entry, took ~15 ms to load and rebuild.
    """

    def __init__(self, real: Path, spare: Path, job: Callable[[], bytes] | None = None) -> None:
        self.real, self.spare, self.job = real, spare, job
        self.pid: int | None = None
        self.fd: int | None = None  # the pipe's reading end
        self.memory: int | None = None  # the memory file the frames are in
        self.offset = 0  # where the next frame starts in it
        self.frames = 0  # frames taken
        # the child's scan as `scan()` gave it: the one the child's listing serves
        self.scanned: dict[str, OnDisk] | None = None

    def start(self) -> None:
        try:
            memory = os.memfd_create("meshc-prescan", os.MFD_CLOEXEC)
        except (OSError, AttributeError):  # not Linux: the build scans in its own process
            return
        try:
            read, write = os.pipe2(os.O_CLOEXEC)
        except OSError:
            os.close(memory)
            return
        pid = fork_child(lambda: self._work(read, write, memory))
        os.close(write)
        if pid is None:
            os.close(read)
            os.close(memory)
            return
        self.pid, self.fd, self.memory = pid, read, memory

    def _work(self, read: int, signal_fd: int, memory: int) -> None:
        """In the child: the job's bytes, the scan and the listing, each sent as soon as it is made."""
        os.close(read)  # the parent's end
        try:
            first = self.job() if self.job is not None else b""
        except Exception:  # noqa: BLE001 - the parent runs the job itself and reports what fails
            first = b""
        _send(signal_fd, memory, first)
        scanned = scan_tree(self.real)
        _send(signal_fd, memory, _encode(scanned))
        if self.spare.is_dir():
            found = listed(scanned, list_tree(self.spare))
            _send(signal_fd, memory, marshal.dumps(("\0".join(found.linked), _columns(found.others))))

    def job_result(self) -> bytes | None:
        """What `job()` returned in the child; None if it failed there (or there is no child): run it here."""
        found = self._frame(0)
        return found if found else None

    def scan(self) -> dict[str, OnDisk]:
        """The output's entries (`scan_tree`), from the child if it made them, else scanned here."""
        self.scanned = _decoded(self._frame(1))
        return self.scanned if self.scanned is not None else scan_tree(self.real)

    def listing(self) -> Listed | None:
        """The spare's entries told apart against the scan `scan()` gave, if the child listed them and that scan
        was the child's; None: the caller lists the spare itself.

        Called when the writer starts (compiler.output.spare.Listing), so the child lists while the build checks,
        lowers and renders."""
        if self.scanned is None:
            self.close()  # its links serve no scan this build has: the child's last work is not waited for
            return None
        frame = self._frame(2)
        if frame is None:
            return None
        try:
            joined, columns = marshal.loads(frame)
            others = _from_columns(columns)
        except (EOFError, ValueError, TypeError, IndexError):
            return None
        return Listed(
            linked=frozenset(joined.split("\0") if joined else ()), others=others, against=self.scanned
        )

    def _frame(self, index: int) -> bytes | None:
        """Frame `index` (0: the job's, 1: the scan, 2: the listing), if the child sent it and it was not taken."""
        while self.fd is not None and self.frames <= index:
            self.frames += 1
            try:
                found = self._next()
            except (OSError, EOFError, ValueError, TypeError, IndexError):
                found = None
            if found is None:
                self.close()  # the child failed, or sent no listing: it has nothing more
            elif self.frames > index:
                return found
        return None

    def _next(self) -> bytes | None:
        """The next frame, once the child says it is written; None when the child is done."""
        if self.fd is None or self.memory is None or not os.read(self.fd, 1):
            return None
        (length,) = _HEADER.unpack(_read(self.memory, self.offset, _HEADER.size))
        body = _read(self.memory, self.offset + _HEADER.size, length)
        self.offset += _HEADER.size + length
        return body

    def close(self) -> None:
        """Let the child go (killed if it is still at work) and reap it."""
        for fd in (self.fd, self.memory):
            if fd is not None:
                os.close(fd)
        self.fd = self.memory = None
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            self.pid = None


@contextmanager
def prescanned(real: Path, spare: Path, job: Callable[[], bytes] | None = None) -> Iterator[Prescan]:
    """A Prescan of `real` and `spare` whose child is started now and reaped when the block ends; no child for an
    output under PRESCAN_FROM_BYTES of MANIFEST.json (none yet, or a small tree, scanned here in a few ms)."""
    prescan = Prescan(real, spare, job)
    try:
        big = os.lstat(real / MANIFEST).st_size >= PRESCAN_FROM_BYTES
    except OSError:
        big = False
    try:
        if big:
            prescan.start()
        yield prescan
    finally:
        prescan.close()


def _send(signal_fd: int, memory: int, body: bytes) -> None:
    write_all(memory, _HEADER.pack(len(body)) + body)
    os.write(signal_fd, b"\n")


def _encode(entries: Mapping[str, OnDisk]) -> bytes:
    return marshal.dumps(_columns(entries))


def _columns(entries: Mapping[str, OnDisk]) -> tuple[str, bytes, bytes, bytes, bytes]:
    kinds = bytes(_CODES[entry.kind] for entry in entries.values())
    numbers = array("q", chain.from_iterable((entry.size, entry.mtime_ns) for entry in entries.values()))
    inodes = array("Q", (entry.inode for entry in entries.values()))
    ctimes = array("q", (entry.ctime_ns for entry in entries.values()))
    return "\0".join(entries), kinds, numbers.tobytes(), inodes.tobytes(), ctimes.tobytes()


def _decoded(body: bytes | None) -> dict[str, OnDisk] | None:
    """The entries of a frame; None for no frame, or one that does not decode (the caller scans itself)."""
    try:
        return _decode(body) if body is not None else None
    except (EOFError, ValueError, TypeError, IndexError):
        return None


def _decode(body: bytes) -> dict[str, OnDisk]:
    return _from_columns(marshal.loads(body))


def _from_columns(columns: tuple[str, bytes, bytes, bytes, bytes]) -> dict[str, OnDisk]:
    joined, kinds, raw_numbers, raw_inodes, raw_ctimes = columns
    numbers, inodes, ctimes = array("q"), array("Q"), array("q")
    numbers.frombytes(raw_numbers)
    inodes.frombytes(raw_inodes)
    ctimes.frombytes(raw_ctimes)
    paths = joined.split("\0") if joined else []
    pairs = iter(numbers)
    rows = zip(map(_KINDS.__getitem__, kinds), pairs, pairs, inodes, ctimes, strict=True)
    # tuple.__new__ through map: the records are made in C (OnDisk's own __new__ is Python)
    return dict(zip(paths, map(tuple.__new__, repeat(OnDisk), rows), strict=True))


def _read(fd: int, offset: int, size: int) -> bytes:
    """Exactly `size` bytes of file `fd` from `offset`; EOFError if it ends before."""
    data = os.pread(fd, size, offset)
    if len(data) != size:  # a memory file returns all it holds at once
        raise EOFError("a prescan frame is cut short")
    return data
