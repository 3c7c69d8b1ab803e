"""What `meshc build` writes: the rollout tree when a rollout is in force (every state checked), else the build."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from compiler.output.staging import NewFile
from compiler.pipeline import compile_dir
from compiler.rollout.build import rollout_bytes, rollout_state_of, rollout_stream
from compiler.rollout.revisions import RevisionCache, rollout_context
from compiler.rollout.states import check_rollout


def plain_tree(spec_dir: Path) -> dict[str, bytes]:
    """The output tree without a rollout: the one-revision build."""
    return compile_dir(spec_dir, values=False).tree()


def output_for(spec_dir: Path, cache: RevisionCache | None = None) -> dict[str, bytes]:
    """What `meshc build` writes for `spec_dir`, path -> bytes: the rollout tree when a rollout is in force, else the
    plain build.

    Raises SpecError when a state of the rollout is unsafe (see compiler.rollout.states).
    """
    context = rollout_context(spec_dir, cache)
    if context is None:
        return plain_tree(spec_dir)
    try:
        state = rollout_state_of(context)
        check_rollout(context, state)
        return rollout_bytes(context, state)
    finally:
        context.location.repo.close()  # stop GitPython's `git cat-file` helpers now, not at garbage collection


def rollout_files(spec_dir: Path) -> Iterator[NewFile] | None:
    """The rollout tree of `spec_dir` as a build writes it, file by file (every state checked before the first), or
    None when no rollout is in force."""
    context = rollout_context(spec_dir)
    if context is None:
        return None
    try:
        state = rollout_state_of(context)
        check_rollout(context, state)
    except BaseException:
        context.location.repo.close()
        raise
    return _closing(context.location.repo.close, rollout_stream(context, state))


def _closing(close: Callable[[], None], files: Iterator[NewFile]) -> Iterator[NewFile]:
    """`files`, then `close()` once they are all out or the writer stops taking them."""
    try:
        yield from files
    finally:
        close()
