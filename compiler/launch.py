"""The `meshc` command's first frame: a Ctrl-C while the command line loads ends it with one line, not a traceback.

Loading compiler.cli (argparse and the modules every command uses) takes ~70 ms of each start. Python turns a
SIGINT into a KeyboardInterrupt wherever the interpreter is, and one raised inside an import ends in a traceback,
before compiler.cli.main can answer it. Until then a SIGINT ends the process at once with `meshc: interrupted` and
exit 130: nothing has been written, so there is nothing to clean up. From compiler.cli.main on, the command answers
a Ctrl-C itself (a build removes its staging tree first).
"""

from __future__ import annotations

import os
import signal  # compiler.cli loads it anyway: loading it here first costs the start nothing
from types import FrameType

# compiler.cli.exits.EXIT_INTERRUPTED, written again: importing compiler.cli is what this module guards.
INTERRUPTED = 130


def run() -> None:
    """The `meshc` console script and `python -m compiler`: compiler.cli.run, loaded with a Ctrl-C meaning exit 130.

    A SIGINT the process was started ignoring (a background job of a script) stays ignored."""
    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.default_int_handler:
        signal.signal(signal.SIGINT, _interrupted)
    from compiler.cli import run as run_command

    signal.signal(signal.SIGINT, previous)
    run_command()


def _interrupted(signum: int, frame: FrameType | None) -> None:
    os.write(2, b"meshc: interrupted\n")
    os._exit(INTERRUPTED)
