"""The output lock: one build or check of an output directory at a time (flock on a file beside it)."""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from compiler.diagnostics import EnvironmentFailure
from compiler.output.disk import cause, kind_of
from compiler.output.guard import OutputRefused

LOCK_TIMEOUT = 600.0
_LOCK_POLL = 0.05


class ForeignLock(Exception):
    """Something meshc did not make sits at the lock's path: it is neither locked through nor removed."""


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
    (calling `on_wait` once, as it starts to wait: never with a timeout of 0) up to `timeout` seconds, then
    fails. `required=False` (check) goes on unlocked where no lock file can be made, a place where no build can
    write either.

    The lock file's format is an empty regular file (no data block, so making and removing it frees nothing a disk
    mounted with `discard` waits for). Anything else at its path (a file holding bytes, a directory, a symlink, a
    FIFO) is someone else's: meshc never locks through it nor removes it, since removing the lock is what it does
    when done. A build refuses (OutputRefused, exit 2, naming the path); a check goes on unlocked, as where no lock
    file can be made (no build can hold the lock while the path is taken). An empty file of someone else's would be
    taken for a lock and removed: it holds nothing to lose.
    """
    lock = lock_path(real)
    try:
        if required:
            real.parent.mkdir(parents=True, exist_ok=True)
        fd = _acquire(lock, label, timeout, on_wait)
    except ForeignLock as error:
        if required:
            raise OutputRefused(
                str(lock),
                f"is {error}, not the lock file meshc makes beside the output; meshc never removes what it did "
                "not write: move it away, then build again",
            ) from None
        fd = None
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
            _release(fd, lock)


def _release(fd: int, lock: Path) -> None:
    """Remove the lock file while it is held, if it is still ours (the very file, still empty), and let it go.

    A waiter that then locks the unlinked file sees a different inode and retries."""
    try:
        if _same_file(fd, lock) and os.fstat(fd).st_size == 0:
            os.unlink(lock)
    except OSError:
        pass
    finally:
        os.close(fd)


def _acquire(lock: Path, label: str, timeout: float, on_wait: Callable[[Path], None] | None) -> int:
    deadline, told = time.monotonic() + timeout, False
    while True:
        fd = _open_lock(lock)
        try:
            while not _try_lock(fd):
                if time.monotonic() >= deadline:
                    raise EnvironmentFailure(
                        label,
                        f"another meshc build or check still holds its lock ({lock.name}) after "
                        f"{timeout:g}s; try again when it has finished",
                    )
                if not told and on_wait is not None:  # after the deadline's check: a timeout of 0 never waits
                    on_wait(lock)
                    told = True
                time.sleep(_LOCK_POLL)
            if _same_file(fd, lock):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def _open_lock(lock: Path) -> int:
    """The lock file, made if absent; ForeignLock if what is at its path is not an empty regular file.

    O_NONBLOCK: a FIFO there must not hold the open until a writer comes."""
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO):  # a symlink, a directory, a socket
            raise ForeignLock(f"a {kind_of(os.lstat(lock).st_mode)}") from None
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size != 0:
        os.close(fd)
        raise ForeignLock(
            f"a {kind_of(info.st_mode)}" + (" holding data" if stat.S_ISREG(info.st_mode) else "")
        )
    return fd


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
