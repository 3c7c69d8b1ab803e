"""compiler.lifetime: what a build made is parked only in a process that ends with os._exit (the command line)."""

from __future__ import annotations

import subprocess
import sys
import weakref

from compiler import lifetime


class Built:
    """Stands for a build's spec or IR: something a weak reference can watch."""


def test_a_library_caller_gets_everything_freed() -> None:
    built = Built()
    watch = weakref.ref(built)
    lifetime.park(built, {"cache": built})
    del built
    assert watch() is None  # the test suite calls main() 700 times in one process: nothing may pile up


def test_the_command_line_keeps_what_the_build_made_to_the_end() -> None:
    script = (
        "import weakref\n"
        "from compiler import lifetime\n"
        "from tests.test_lifetime import Built\n"
        "lifetime.keep_until_exit()\n"
        "def build():\n"
        "    built = Built()\n"
        "    lifetime.park(locals())  # as a build parks its frame's locals before it returns\n"
        "    return weakref.ref(built)\n"
        "print(build()() is not None)\n"
    )
    assert printed(script) == "True\n"


def test_the_command_line_leaves_the_collector_off_after_the_command() -> None:
    # compiler.cli.run ends with os._exit: turning the collector back on when the command returns (as
    # pipeline.collector_paused does for a library caller) would make the next allocation walk every object the
    # command made (~145 ms after a full build at 1,000 services). The script looks as run() ends the process.
    script = (
        "import gc, os, sys\n"
        "from compiler import cli\n"
        "end = os._exit\n"
        "os._exit = lambda code: (print(gc.isenabled(), code, flush=True), end(code))\n"
        "sys.argv = ['meshc', 'schema', 'mesh']\n"
        "cli.run()\n"
    )
    assert printed(script).splitlines()[-1] == "False 0"


def printed(script: str) -> str:
    """What a fresh interpreter running `script` prints."""
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
