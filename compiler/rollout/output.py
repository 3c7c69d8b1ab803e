"""What `meshc build` writes: the rollout tree when a rollout is in force (every state checked), else the build."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from compiler.output.cache import Cached
from compiler.output.staging import NewFile
from compiler.output.worker import Worker
from compiler.pipeline import compile_dir
from compiler.rollout.build import Reuse, rollout_reuse, rollout_state_of, rollout_stream, rollout_truth
from compiler.rollout.placement import State
from compiler.rollout.revisions import Context, rollout_context
from compiler.rollout.states import check_rollout


def plain_tree(spec_dir: Path) -> dict[str, bytes]:
    """The output tree without a rollout: the one-revision build."""
    return compile_dir(spec_dir, values=False).tree()


def output_for(spec_dir: Path) -> dict[str, bytes]:
    """What `meshc build` writes for `spec_dir`, path -> bytes: the rollout tree when a rollout is in force, else the
    plain build.

    Raises SpecError when a state of the rollout is unsafe (see compiler.rollout.states).
    """
    return output_truth(spec_dir)[0]


def output_truth(spec_dir: Path) -> tuple[dict[str, bytes], dict[str, Any]]:
    """`output_for`, and path -> the data each file's bytes serialize where a backend gives it (drift's truth)."""
    context = rollout_context(spec_dir)
    if context is None:
        build = compile_dir(spec_dir, values=True)
        return build.tree(), {a.path: a.value for a in build.artifacts if a.value is not None}
    try:
        return rollout_truth(context, checked_state(context))
    finally:
        context.location.repo.close()  # stop GitPython's `git cat-file` helpers now, not at garbage collection


def rollout_files(
    spec_dir: Path, split: bool = True, cached: Cached | None = None
) -> tuple[Iterator[NewFile], Worker | None, Reuse] | None:
    """The rollout tree of `spec_dir` as a build writes it, file by file (every state checked before the first), the
    worker that writes part of it beside the stream, if there is one (see `rollout_stream`; none unless `split`),
    and what it reuses of the previous tree the build cache `cached` describes (`rollout_reuse`: its files are not
    in the stream); None when no rollout is in force."""
    context = rollout_context(spec_dir)
    if context is None:
        return None
    try:
        state = checked_state(context)  # before the writer: an unsafe rollout touches nothing on disk
        reuse = rollout_reuse(context, state, cached)
        files, worker = rollout_stream(context, state, split, reuse)
    except BaseException:
        context.location.repo.close()
        raise
    return _closing(context.location.repo.close, files), worker, reuse


def checked_state(context: Context) -> State:
    """The state the rollout leaves, each of its states and the next promotion's checked: SpecError where unsafe."""
    state = rollout_state_of(context)
    check_rollout(context, state)
    return state


def _closing(close: Callable[[], None], files: Iterator[NewFile]) -> Iterator[NewFile]:
    """`files`, then `close()` once they are all out or the writer stops taking them."""
    try:
        yield from files
    finally:
        close()
