"""`meshc graph`: its options and its command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from compiler.cli.arguments import spec_option
from compiler.cli.exits import EXIT_INVALID, EXIT_OK
from compiler.graph import FORMATS

GRAPH_HELP = "draw the mesh, or some services' neighbourhood, as Mermaid, DOT, SVG or HTML"


def graph_arguments(graph_cmd: argparse.ArgumentParser) -> None:
    """`meshc graph`'s options."""
    graph_cmd.add_argument(
        "services",
        nargs="*",
        metavar="SERVICE",
        help="draw only these services, their callers and dependencies",
    )
    graph_cmd.add_argument(
        "--depth", type=_depth, default=None, help="hops from SERVICE in each direction (default: 1)"
    )
    graph_cmd.add_argument("--format", choices=FORMATS, default="mermaid")
    spec_option(graph_cmd)
    graph_cmd.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        help="write to this file (replaced atomically) instead of stdout",
    )


def _depth(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(
            f"expected a whole number of hops (0 draws SERVICE alone), got {text!r}"
        )
    return int(text)


def run_graph(args: argparse.Namespace) -> int:
    from compiler.graph.draw import check_picture_path, draw, write_atomically
    from compiler.pipeline import lower_dir

    if args.depth is not None and not args.services:
        print(
            "meshc: error: --depth counts hops from a SERVICE; name one, or leave --depth out for the whole mesh",
            file=sys.stderr,
        )
        return EXIT_INVALID
    if args.output is not None:
        check_picture_path(args.output, args.spec)  # before the drawing: refusing costs nothing then
    # The picture needs the lowered model only: the sidecar documents and artifacts would be most of the time.
    mesh = lower_dir(args.spec)
    picture = draw(mesh, args.format, args.services, 1 if args.depth is None else args.depth)
    if args.output is None:
        sys.stdout.write(picture)
    else:
        write_atomically(args.output, picture)
    return EXIT_OK
