"""What `meshc build` writes: the rollout tree when a rollout is in force (every state checked), else the build."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from compiler.emit import LOCK_TIMEOUT, WriteResult
from compiler.pipeline import compile_dir, write_output
from compiler.rollout.build import build_rollout
from compiler.rollout.revisions import RevisionCache, rollout_context
from compiler.rollout.states import check_rollout


def plain_tree(spec_dir: Path) -> dict[str, bytes]:
    """The output tree without a rollout: the one-revision build."""
    return compile_dir(spec_dir).tree()


def output_for(spec_dir: Path, cache: RevisionCache | None = None) -> dict[str, bytes]:
    """What `meshc build` writes for `spec_dir`: the rollout tree when a rollout is in force, else the plain build.

    Raises SpecError when a state of the rollout is unsafe (see compiler.rollout.states).
    """
    context = rollout_context(spec_dir, cache)
    if context is None:
        return plain_tree(spec_dir)
    try:
        result = build_rollout(context)
        check_rollout(context, result)
    finally:
        context.location.repo.close()  # stop GitPython's `git cat-file` helpers now, not at garbage collection
    return dict(result.tree)


def build(
    spec_dir: Path,
    out: Path,
    lock_timeout: float = LOCK_TIMEOUT,
    on_wait: Callable[[Path], None] | None = None,
) -> WriteResult:
    """`meshc build`: compile (every wave's revision when a rollout is in force) and write the tree atomically."""
    return write_output(spec_dir, out, lambda: output_for(spec_dir), lock_timeout, on_wait)
