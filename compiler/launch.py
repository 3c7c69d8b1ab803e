"""The `meshc` command's first frame: a Ctrl-C while the command line loads ends it with one line, not a traceback.

Loading compiler.cli (argparse and the modules every command uses) takes ~70 ms of each start. Python turns a
SIGINT into a KeyboardInterrupt wherever the interpreter is, and one raised inside an import ends in a traceback,
before compiler.cli.main can answer it. Until then a SIGINT ends the process at once with `meshc: interrupted` and
exit 130: nothing has been written, so there is nothing to clean up. A SIGTERM or SIGHUP ends it the same way, with
`meshc: terminated (SIGTERM)` and 128 + the signal. From compiler.cli.run on, the command answers each itself (a
build removes its staging tree first; compiler.cli.termination).
"""

from __future__ import annotations

import os
import signal  # compiler.cli loads it anyway: loading it here first costs the start nothing
from types import FrameType

# compiler.cli.exits.EXIT_INTERRUPTED, written again: importing compiler.cli is what this module guards.
INTERRUPTED = 130
# compiler.cli.termination.ENDING, written again for the same reason.
ENDING = (signal.SIGTERM, signal.SIGHUP)


def run() -> None:
    """The `meshc` console script and `python -m compiler`: compiler.cli.run, loaded with a Ctrl-C meaning exit 130.

    A SIGTERM or SIGHUP ends it likewise, with 128 + the signal. A signal the process was started ignoring (a
    background job of a script, `nohup`'s SIGHUP) stays ignored."""
    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.default_int_handler:
        signal.signal(signal.SIGINT, _interrupted)
    for signum in ENDING:
        if signal.getsignal(signum) is signal.SIG_DFL:
            signal.signal(signum, _terminated)
    from compiler.cli import run as run_command

    signal.signal(signal.SIGINT, previous)
    run_command()  # replaces _terminated first thing, with no gap where a SIGTERM would end meshc silently


def _interrupted(signum: int, frame: FrameType | None) -> None:
    os.write(2, b"meshc: interrupted\n")
    os._exit(INTERRUPTED)


def _terminated(signum: int, frame: FrameType | None) -> None:
    os.write(2, f"meshc: terminated ({signal.Signals(signum).name})\n".encode())
    os._exit(128 + signum)
