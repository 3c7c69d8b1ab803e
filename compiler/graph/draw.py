"""`meshc graph`: the picture of a mesh, or of some services' neighbourhood, in one of four formats."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from compiler.diagnostics import EnvironmentFailure
from compiler.graph import FORMATS
from compiler.graph.dot import render_dot, render_svg
from compiler.graph.html import render_html
from compiler.graph.mermaid import render_mermaid
from compiler.graph.model import build_graph
from compiler.ir.model import Mesh
from compiler.output.guard import OutputRefused


def draw(mesh: Mesh, fmt: str, services: Sequence[str] = (), depth: int = 1) -> str:
    """The graph of `mesh` (or of `services` and their neighbourhood, `depth` hops) as text in format `fmt`."""
    graph = build_graph(mesh, services, depth)
    if fmt == "mermaid":
        return render_mermaid(graph)
    if fmt == "dot":
        return render_dot(graph)
    svg = render_svg(render_dot(graph))
    if fmt == "svg":
        return svg
    if fmt == "html":
        return render_html(mesh, graph, svg)
    raise ValueError(f"unknown graph format {fmt!r}; choose one of {', '.join(FORMATS)}")


def check_picture_path(path: Path, spec_dir: Path) -> None:
    """Refuse (OutputRefused) an `-o` path whose replacement would destroy something.

    That is anything but a regular file, and any file in the spec."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        mode = None
    except NotADirectoryError:
        raise OutputRefused(
            str(path), "is under a file, not in a directory; name a file in a directory"
        ) from None
    except OSError:
        return  # unreadable: the write itself reports the cause (exit 4)
    if mode is not None and not stat.S_ISREG(mode):
        # The rename would replace a directory's name, or a device or FIFO (as root, /dev/null itself) with a file.
        raise OutputRefused(str(path), "is not a regular file; name a file for the picture (e.g. mesh.html)")
    spec = spec_dir.resolve()
    if path.resolve() == spec or spec in path.resolve().parents:
        raise OutputRefused(
            str(path), f"is inside the spec directory {spec_dir}; write the picture elsewhere"
        )


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` in one rename, so no reader sees half a picture; EnvironmentFailure if not."""
    temp = path.with_name(f".{path.name}.meshc-{os.getpid()}")
    try:
        temp.write_text(text, encoding="utf-8")
        os.replace(temp, path)
    except BaseException as exc:  # a Ctrl-C or SIGTERM too: no half picture is left beside the file
        with contextlib.suppress(OSError):  # the cause is the write's: an unlink failing too must not hide it
            temp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise EnvironmentFailure(str(path), exc.strerror or str(exc)) from None
        raise
