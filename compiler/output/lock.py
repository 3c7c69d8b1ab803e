"""The output lock: one build or check of an output directory at a time (flock on a file beside it)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from compiler.diagnostics import EnvironmentFailure
from compiler.output.disk import cause

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
