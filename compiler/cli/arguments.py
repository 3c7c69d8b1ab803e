"""Each command's arguments: compiler.cli adds only those of the command named (`_parser_of`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from compiler.cli.evidence import evidence_arguments
from compiler.output.lock import LOCK_TIMEOUT
from compiler.spec.schema import SCHEMA_NAMES


class _SpecDirectory(argparse.Action):
    """The spec directory, given as the positional argument or as `--spec` (as explain, graph, diff and promote
    take it, so either form works everywhere): once, or twice the same."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        # the positional argument, not given: what --spec gave, or the default, stays
        if values is self.default:
            return
        given = getattr(namespace, "spec_given", None)
        if given is not None and given != values:
            parser.error(f"two spec directories: {given} and {values}")
        namespace.spec_given = values
        setattr(namespace, self.dest, values)


def spec_argument(sub: argparse.ArgumentParser) -> None:
    default = Path("mesh-spec")
    sub.add_argument(
        "spec",
        nargs="?",
        type=Path,
        default=default,
        action=_SpecDirectory,
        help="spec directory (default: mesh-spec)",
    )
    sub.add_argument(
        "--spec",
        dest="spec",
        type=Path,
        default=default,
        action=_SpecDirectory,
        help="the same, as an option",
    )


def spec_option(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--spec", type=Path, default=Path("mesh-spec"), help="spec directory (default: mesh-spec)"
    )


def output_option(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "-o", "--output", type=Path, default=Path("output"), help="output directory (default: output)"
    )


def output_arguments(sub: argparse.ArgumentParser) -> None:
    """build's and check's: the spec, the output and how long to wait for its lock."""
    spec_argument(sub)
    output_option(sub)
    sub.add_argument(
        "--lock-timeout",
        type=seconds,
        default=LOCK_TIMEOUT,
        metavar="SECONDS",
        help=f"how long to wait for another build or check of the same output (default: {LOCK_TIMEOUT:g})",
    )


def seconds(text: str) -> float:
    """A duration in seconds, 0 or more: a negative one or NaN is a usage error, never a wait that ends at once
    (and then blames another build) or never."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0:  # NaN too: it compares false with everything
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds, 0 or more")
    return value


def explain_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("service")
    spec_option(sub)
    sub.add_argument("--format", choices=("text", "json"), default="text")


def schema_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("name", nargs="?", choices=SCHEMA_NAMES, default="service")


def diff_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--base", required=True, help="base revision, e.g. origin/main")
    sub.add_argument(
        "--head", default=None, help="head revision (default: the working tree, uncommitted edits included)"
    )
    spec_option(sub)
    sub.add_argument("--format", choices=("text", "markdown", "json"), default="text")
    sub.add_argument("--exit-code", action="store_true", help="exit 1 when any target changes")


def drift_arguments(sub: argparse.ArgumentParser) -> None:
    """`meshc drift`'s: the spec, the evidence (as promote takes it), --partial and --format."""
    spec_argument(sub)
    evidence_arguments(sub)
    sub.add_argument(
        "--partial",
        action="store_true",
        help="check only the evidence given: scopes without evidence are listed but do not fail the run",
    )
    _page_format(sub, "drift")


def plan_arguments(sub: argparse.ArgumentParser) -> None:
    spec_argument(sub)
    _page_format(sub, "rollout")


def _page_format(sub: argparse.ArgumentParser, page: str) -> None:
    """--format of a command that also renders a status page (`page`: what it is the status of)."""
    sub.add_argument(
        "--format",
        choices=("text", "markdown", "json", "html"),
        default="text",
        help=f"html: the {page} status page, one self-contained file to publish from CI",
    )


def promote_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "wave", nargs="?", default=None, help="the wave to promote (default: the next one behind)"
    )
    spec_option(sub)
    output_option(sub)
    evidence_arguments(sub)
    sub.add_argument(
        "--force",
        action="store_true",
        help="promote although the wave before has not converged; recorded in the output and in rollout.yaml",
    )
