"""The whole compiler in one function: load -> check -> lower -> render -> backends."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from compiler.output.guard import resolve_output
from compiler.output.lock import LOCK_TIMEOUT, output_lock
from compiler.output.manifest import render_tree
from compiler.output.staging import NewFile
from compiler.output.worker import Worker
from compiler.output.writer import WriteResult, write_files
from compiler.spec.load import SpecFiles, load_documents, spec_files

# The stages import jinja2, the schema check and the whole IR: they load when a spec is compiled, so a
# command that finds nothing to compile (a no-op build) does not pay for them.
if TYPE_CHECKING:
    from compiler.emit import Artifact
    from compiler.ir.model import Mesh
    from compiler.render import SidecarConfig
    from compiler.spec.document import Document
    from compiler.spec.model import Spec


@dataclass(frozen=True, kw_only=True, slots=True)
class Build:
    """Everything one compilation produced."""

    spec: Spec
    mesh: Mesh
    sidecars: Mapping[str, SidecarConfig]
    artifacts: tuple[Artifact, ...]

    def tree(self) -> dict[str, bytes]:
        """The output tree this build writes, MANIFEST.json included."""
        return render_tree(self.artifacts)


def compile(files: SpecFiles, label: str, *, values: bool = True) -> Build:  # noqa: A001 - the main verb
    """Compile a spec file tree (relative path -> bytes); raise SpecError with every diagnostic.

    `values=False`: the artifacts carry their bytes only (see `run_backends`).
    """
    from compiler.backends import stream_backends

    spec, mesh, sidecars = render_files(files, label)
    artifacts = tuple(stream_backends(mesh, sidecars, values=values))
    return Build(spec=spec, mesh=mesh, sidecars=sidecars, artifacts=artifacts)


def render_files(
    files: SpecFiles, label: str, known: Mapping[str, Document] | None = None
) -> tuple[Spec, Mesh, dict[str, SidecarConfig]]:
    """Every stage before the backends: the checked spec, its IR and every workload's sidecar documents.

    `known`: documents parsed from the very bytes in `files` that passed the per-file checks with this
    code (a build's document cache, by name): they are neither parsed nor schema-checked again.
    """
    from compiler.render import render

    spec, mesh = lower_files(files, label, known)
    return spec, mesh, render(mesh)


def lower_files(
    files: SpecFiles, label: str, known: Mapping[str, Document] | None = None
) -> tuple[Spec, Mesh]:
    """`render_files` without the rendering: the checked spec and its IR (a big build renders in two processes)."""
    from compiler.ir.lower import lower
    from compiler.spec.checks import check

    spec = check(load_documents(files, label, known), frozenset(known or ()))
    return spec, lower(spec)


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause Python's cycle collector for one command: the CLI's choice, never the library's.

    A build allocates millions of small acyclic dicts and lists; each allocation burst triggers
    collections that walk everything alive (the spec, the IR, every document). Reference counting
    frees all of it. At 1,000 services a compile takes 3.1 s CPU paused and 6.2 s not (medians of 5,
    ranges 2.7-3.4 and 5.5-6.4; `python benchmarks/tricks.py`).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def validate_only(files: SpecFiles, label: str) -> Spec:
    """Load and check a spec without lowering or rendering it."""
    from compiler.spec.checks import check

    return check(load_documents(files, label))


def compile_dir(spec_dir: Path, *, values: bool = True) -> Build:
    """Compile the spec in a directory, naming files as the user wrote the directory."""
    return compile(spec_files(spec_dir), spec_dir.as_posix().rstrip("/"), values=values)


def lower_dir(spec_dir: Path) -> Mesh:
    """Check and lower the spec in a directory, without rendering: for callers that need only the model."""
    from compiler.ir.lower import lower

    return lower(validate_only(spec_files(spec_dir), spec_dir.as_posix().rstrip("/")))


def write_output(
    spec_dir: Path,
    out: Path,
    files: Callable[[], tuple[Iterable[NewFile], Worker | None]],
    lock_timeout: float = LOCK_TIMEOUT,
    on_wait: Callable[[Path], None] | None = None,
) -> WriteResult:
    """Write the tree `files()` streams atomically (with the worker that writes part of it beside the stream, if
    any), holding the output's lock from reading the spec to the swap.

    An output meshc may not replace (see `resolve_output`) is refused before the spec is read; an
    invalid spec raises before the swap, and the output is left as it was.
    """
    real = resolve_output(out, protect=(("the spec directory", spec_dir),))
    with output_lock(real, str(out), lock_timeout, on_wait):
        stream, worker = files()
        return write_files(out, stream, worker=worker)
