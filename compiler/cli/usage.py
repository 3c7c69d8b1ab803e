"""The argument parser of the command line: a usage error is one line `meshc: error: …` and exit 2."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, NoReturn

from compiler.cli.exits import EXIT_INVALID
from compiler.diagnostics import escape


class Formatter(argparse.HelpFormatter):
    """argparse's formatter at the terminal's width, found as shutil.get_terminal_size finds it.

    argparse makes a formatter for every argument added and asks shutil for the width; importing shutil (zlib,
    bz2, lzma) took 2.9 ms of every command's start, where help is formatted only for --help or an error.
    """

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24) -> None:
        super().__init__(prog, indent_increment, max_help_position, width=_columns() - 2)


def _columns() -> int:
    """$COLUMNS, else the width of the terminal stdout is on, else 80."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns > 0:
        return columns
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns or 80  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):
        return 80


class Parser(argparse.ArgumentParser):
    """argparse, except that a usage error prints one line, not the usage block and then the error; help at the
    terminal's width without importing shutil (`Formatter`)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**{"formatter_class": Formatter, **kwargs})

    def error(self, message: str) -> NoReturn:
        """Print `meshc: error: <command>: <message>; see `meshc <command> --help`` and exit 2."""
        # The usage block argparse prints first hides the one line that says what is wrong; --help has it all.
        command = self.prog.removeprefix("meshc").strip()
        where = f"{command}: " if command else ""
        sys.stderr.write(f"meshc: error: {where}{escape(message)}; see `{self.prog} --help`\n")
        sys.exit(EXIT_INVALID)
