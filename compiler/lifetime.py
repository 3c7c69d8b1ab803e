"""What a command built, kept to the end of a process that ends with os._exit: the `meshc` command line's choice.

Freeing a build's spec, IR and caches object by object, for a process about to end, is pure cost: at 1,000
services a full build spends ~100 ms on it after its last file is written. `compiler.cli.run` ends the process
with os._exit, so it asks for what the build made to be parked here instead; a library caller (the test suite
calls `main` 700 times in one process) never asks, and everything is freed as usual.
"""

from __future__ import annotations

_parked: list[object] | None = None


def keep_until_exit() -> None:
    """From now on `park` keeps what it is given: the caller ends the process without tearing its heap down."""
    global _parked  # noqa: PLW0603 - one switch for the process, thrown by the command line's entry point
    if _parked is None:
        _parked = []


def park(*values: object) -> None:
    """Keep `values` alive to the end of the process if `keep_until_exit` was called, else nothing."""
    if _parked is not None:
        _parked.append(values)
