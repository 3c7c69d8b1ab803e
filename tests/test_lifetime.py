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
    found = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert found.stdout == "True\n"


def test_the_command_line_leaves_the_collector_off_after_the_command() -> None:
    # compiler.cli.run ends with os._exit: turning the collector back on would make the next allocation walk every
    # object the command made (~145 ms after a full build at 1,000 services).
    script = (
        "import gc, sys\n"
        "from compiler import cli\n"
        "def main():\n"
        "    print(gc.isenabled(), flush=True)\n"
        "    return 0\n"
        "cli.main = main\n"
        "cli.run()\n"
    )
    found = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert found.stdout == "False\n"
