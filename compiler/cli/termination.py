"""SIGTERM and SIGHUP end a command as a Ctrl-C does: cleaned up, one line, exit 128 + the signal.

CI timeouts, systemd, Kubernetes and `timeout(1)` stop a process with SIGTERM; a closed terminal sends SIGHUP. Left
to their default action they end meshc on the spot: a build's staging tree stays beside the output and its lock
file with it, with no word said. Python answers a SIGINT by raising KeyboardInterrupt where the interpreter is,
which unwinds through the code that cleans up (the writer removes its staging tree, kills its worker and fsync
helper, lets the lock go) and ends in `compiler.cli.main`'s one line. `Terminated` is a KeyboardInterrupt, so
these two signals take that very path; only the line and the exit status differ.

Installed by `compiler.cli.run` alone, the console script's entry point: a library caller (the test suite calls
`main` in-process) keeps its own handlers.
"""

from __future__ import annotations

import signal
from types import FrameType

# Each answered as a Ctrl-C; the exit status is 128 + the signal's number, as a shell reports a process it ended.
ENDING = (signal.SIGTERM, signal.SIGHUP)


class Terminated(KeyboardInterrupt):
    """A SIGTERM or SIGHUP, raised where the command was, to unwind as a Ctrl-C does (see the module docstring)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def line(self) -> str:
        return f"meshc: terminated ({signal.Signals(self.signum).name})"

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def answer_termination() -> None:
    """From now on each signal of ENDING raises Terminated, unless the process was started ignoring it (`nohup`
    ignores SIGHUP; a background job of a script may ignore both): that stays ignored.

    compiler.launch's handler, there while compiler.cli loads, is replaced here: it is no more needed."""
    for signum in ENDING:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _terminated)


def end_termination() -> None:
    """The command is over: each signal of ENDING ends the process at once again (nothing is left to clean up), so
    that a flush of stdout a stalled reader blocks can still be stopped."""
    for signum in ENDING:
        # a signal ignored from the start stays so
        if signal.getsignal(signum) is _terminated or signum in _answered:
            signal.signal(signum, signal.SIG_DFL)


_answered: set[int] = set()  # the signals `_terminated` ignores from its first call on


def _terminated(signum: int, frame: FrameType | None) -> None:
    # One SIGTERM is the request; a second (a supervisor that repeats it, `kill` run twice) must not cut short the
    # cleanup the first started: a half-removed staging tree would stay. SIGKILL is still there for a cleanup that
    # hangs. A forked child of the build (compiler.output.forked) inherits this handler: the exception ends it there,
    # inside fork_child, which leaves with os._exit and never reaches the parent's cleanup.
    for each in ENDING:
        if signal.getsignal(each) is _terminated:
            signal.signal(each, signal.SIG_IGN)
            _answered.add(each)
    raise Terminated(signum)
