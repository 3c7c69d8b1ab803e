"""A forked child of the build that does one piece of work beside it, and dies with it.

compiler.output.prescan and compiler.output.worker fork one each. The child never returns into the
caller's code: it runs its work and leaves with os._exit (no atexit handler, no buffered output of the
parent flushed twice), 0 if the work returned and 1 if it raised anything, which the parent then does
itself. It is killed if the build dies first (PR_SET_PDEATHSIG): it holds the output's lock with the
build (flock is shared across fork), and the next build must not wait for a child nobody reads.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def fork_child(work: Callable[[], None]) -> int | None:
    """Fork a child that runs `work()` and exits; its pid, or None if the machine refuses a fork."""
    parent = os.getpid()
    try:
        pid = os.fork()
    except OSError:
        return None
    if pid:
        return pid
    code = 1
    try:
        _die_with(parent)
        work()
        code = 0
    except BaseException:  # noqa: BLE001, S110 - the parent does the work itself and reports what fails
        pass
    finally:
        os._exit(code)


def _die_with(parent: int) -> None:
    """Be killed when the parent ends (Linux); leave now if it ended already, before the request."""
    import ctypes  # in the child only

    try:
        refused = ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL) != 0
    except (OSError, AttributeError):
        refused = True
    if refused or os.getppid() != parent:
        # Not tied to the build (no prctl, a seccomp filter) or the build is gone: the child must not hold the
        # output's lock past the build, so it does nothing; the build does the work itself.
        os._exit(1)
