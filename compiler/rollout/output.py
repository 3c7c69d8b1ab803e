"""What `meshc build` writes: the rollout tree when a rollout is in force (every state checked), else the build."""

from __future__ import annotations

from pathlib import Path

from compiler.pipeline import compile_dir
from compiler.rollout.build import build_rollout
from compiler.rollout.revisions import RevisionCache, rollout_context
from compiler.rollout.states import check_rollout


def plain_tree(spec_dir: Path) -> dict[str, bytes]:
    """The output tree without a rollout: the one-revision build."""
    return compile_dir(spec_dir, values=False).tree()


def output_for(spec_dir: Path, cache: RevisionCache | None = None) -> dict[str, bytes]:
    """What `meshc build` writes for `spec_dir`: the rollout tree when a rollout is in force, else the plain build.

    Raises SpecError when a state of the rollout is unsafe (see compiler.rollout.states).
    """
    tree = rollout_tree(spec_dir, cache)
    return plain_tree(spec_dir) if tree is None else tree


def rollout_tree(spec_dir: Path, cache: RevisionCache | None = None) -> dict[str, bytes] | None:
    """The rollout tree of `spec_dir` (every state checked), or None when no rollout is in force."""
    context = rollout_context(spec_dir, cache)
    if context is None:
        return None
    try:
        result = build_rollout(context)
        check_rollout(context, result)
    finally:
        context.location.repo.close()  # stop GitPython's `git cat-file` helpers now, not at garbage collection
    return dict(result.tree)
