"""A forked child of the build that does one piece of work beside it, and dies with it.

compiler.output.prescan and compiler.output.worker fork one each. The child never returns into the
caller's code: it runs its work and leaves with os._exit (no atexit handler, no buffered output of the
parent flushed twice), 0 if the work returned and 1 if it raised anything, which the parent then does
itself. It is killed if the build dies first (PR_SET_PDEATHSIG): it holds the output's lock with the
build (flock is shared across fork), and the next build must not wait for a child nobody reads.

A signal that stops a build (a Ctrl-C's SIGINT; SIGTERM and SIGHUP, which the command line answers the same way,
compiler.cli.termination) raises where the interpreter is, in the child too, which inherits the handlers. The
child takes one only inside fork_child's `try`, so that it leaves with os._exit: unwound into the caller's code, it
would run the build's cleanup (remove the staging tree the parent is writing) and print the parent's message.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1
# Held back across the fork (see the module docstring).
_STOPPING = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP})


def fork_child(work: Callable[[], None]) -> int | None:
    """Fork a child that runs `work()` and exits; its pid, or None if the machine refuses a fork."""
    parent = os.getpid()
    held = signal.pthread_sigmask(signal.SIG_BLOCK, _STOPPING)
    try:
        pid = os.fork()
    except OSError:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
        return None
    if pid:
        _resume(held, pid)
        return pid
    code = 1
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)  # a signal that came since the fork is raised here
        _die_with(parent)
        work()
        code = 0
    except BaseException:  # noqa: BLE001, S110 - the parent does the work itself and reports what fails
        pass
    finally:
        os._exit(code)


def _resume(held: set[int | signal.Signals], pid: int) -> None:
    """In the parent: let the signals through again. One that came during the fork raises now, before the caller
    has the child's pid to end it with: the child is ended here."""
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
    except BaseException:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise


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
