"""The argument parser of the command line: a usage error is one line `meshc: error: …` and exit 2."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from compiler.cli.exits import EXIT_INVALID
from compiler.diagnostics import escape


class Parser(argparse.ArgumentParser):
    """argparse, except that a usage error prints one line, not the usage block and then the error."""

    def error(self, message: str) -> NoReturn:
        """Print `meshc: error: <command>: <message>; see `meshc <command> --help`` and exit 2."""
        # The usage block argparse prints first hides the one line that says what is wrong; --help has it all.
        command = self.prog.removeprefix("meshc").strip()
        where = f"{command}: " if command else ""
        sys.stderr.write(f"meshc: error: {where}{escape(message)}; see `{self.prog} --help`\n")
        sys.exit(EXIT_INVALID)
