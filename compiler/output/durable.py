"""Durability of the output tree: fsync what was written, swap a staged tree in with one rename, recover a killed swap.

Split from the writer (compiler.output.writer), which stages the tree; everything here works on whole
paths and is what the crash-safety tests (tests/test_writer.py) stand a fault in, through this module.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from compiler.diagnostics import EnvironmentFailure
from compiler.output.disk import cause, remove_tree
from compiler.output.flusher import Flusher, start_flusher


def remove_previous(staging: Path) -> None:
    """Remove the previous tree, which the swap left at `staging` (nothing is there if there was none)."""
    try:
        if os.path.lexists(staging):
            remove_tree(staging)
    except OSError as error:
        raise EnvironmentFailure(
            str(staging),
            f"the new output is in place, but this copy of the previous one cannot be "
            f"removed: {cause(error)}",
        ) from error


def tree_directories(root: Path, files: Iterable[str]) -> list[Path]:
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


def fsync_paths(paths: Sequence[str | Path], flags: int) -> None:
    """fsync every path (opened with `flags`), FSYNC_THREADS at a time; the first failure is raised."""
    import threading  # only a build that writes pays for threads

    # Each thread takes the next path from one shared iterator (its next() is atomic under the GIL).
    # A Future per path up front would be 106,000 of them at 10,000 services. With this and the build
    # letting its documents go before it writes its caches, a full 10,000-service build peaks at 1,599 MB
    # RSS, not 1,747 MB. Plain threads, not concurrent.futures: importing that (and logging with it) was
    # 8 ms of a one-service rebuild that fsyncs 9 files.
    pending = iter(paths)
    failures: list[BaseException] = []

    def drain() -> None:
        try:
            for path in pending:
                fsync_path(path, flags)
        except BaseException as error:  # handed to the caller's thread, which raises it
            failures.append(error)

    threads = [threading.Thread(target=drain) for _ in range(min(FSYNC_THREADS, len(paths)))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]


def background_flusher() -> Flusher | None:
    """A helper process that fsyncs a big write's files while it goes on (compiler.output.flusher); None: fsync
    them with `fsync_paths` at the end. A seam the tests stand in for, as they do for `fsync_paths`."""
    return start_flusher()


def fsync_path(path: str | Path, flags: int) -> None:
    """fsync one path, opened with `flags` (a symlink is refused, never followed)."""
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def recover(out: Path) -> None:
    """Undo what a killed build left behind: a tree between the two renames of the fallback swap, a staging tree,
    a cache's temporary file (each named with the pid of a process that is gone)."""
    parked = out.parent / f".{out.name}.meshc-old"
    if parked.is_dir() and not os.path.lexists(out):
        os.rename(parked, out)
    if os.path.lexists(parked):
        remove_tree(parked, ignore_errors=True)
    for stale in out.parent.glob(f".{out.name}.meshc-new-*"):
        pid = _pid_of(stale)
        if pid is None or not _owned(stale, pid):
            remove_tree(stale, ignore_errors=True)
    # A cache's temporary file (compiler.output.sealed.replace_file) of a process killed before its rename.
    for stale in out.parent.glob(f".{out.name}.meshc-*.tmp-*"):
        pid = _pid_of(stale)
        if pid is not None and not _owned(stale, pid) and stale.is_file() and not stale.is_symlink():
            stale.unlink(missing_ok=True)


def _pid_of(leftover: Path) -> int | None:
    """The pid a staging tree's or a temporary file's name ends with (`…-<pid>`), if it ends with one."""
    pid = leftover.name.rsplit("-", 1)[-1]
    return int(pid) if pid.isdigit() else None


def _owned(leftover: Path, pid: int) -> bool:
    """Whether the process `pid` a leftover is named for may still be writing it: alive, and started before the
    leftover was last changed. A pid is soon another process's in a container: a killed build's staging tree
    (200 MB at 1,000 services) then outlived it for as long as that other process ran."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: judged by its start below
    started = _start_time(pid)
    try:
        changed = os.lstat(leftover).st_mtime
    except FileNotFoundError:
        return False
    return started is None or started <= changed + _START_SLACK


# Seconds of slack between a process's start (kernel clock ticks after boot) and a file's mtime (the wall clock).
_START_SLACK = 2.0


def _start_time(pid: int) -> float | None:
    """When process `pid` started, in seconds since the epoch (from /proc); None where that cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat_file:
            # the fields after the command's closing parenthesis (the command may hold spaces and parentheses)
            fields = stat_file.read().rpartition(b")")[2].split()
        with open("/proc/stat", "rb") as system:
            boot = next(int(line.split()[1]) for line in system if line.startswith(b"btime "))
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 of stat: starttime
    except (OSError, ValueError, IndexError, StopIteration):
        return None


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def swap(staging: Path, out: Path) -> None:
    """Put `staging` at `out`, leaving the previous tree at `staging`. Exchange is one atomic syscall on Linux."""
    if os.path.lexists(out) and exchange(staging, out):
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


def exchange(a: Path, b: Path) -> bool:
    """Swap `a` and `b` with renameat2(RENAME_EXCHANGE); False where libc or the filesystem does not offer it."""
    import ctypes  # only the swap needs libc

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    result: int = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return result == 0
