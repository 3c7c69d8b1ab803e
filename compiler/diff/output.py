"""`meshc check` in full: how an output tree on disk differs from what the spec renders, file by file."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from compiler.diff.files import diff_file
from compiler.diff.records import CHANGED, DocumentDiff
from compiler.output.compare import TreeStatus, compare_tree
from compiler.output.disk import REGULAR, kind_of, read_regular
from compiler.output.lock import LOCK_TIMEOUT, output_lock

MAX_COMPARED_BYTES = (
    16 << 20
)  # `check` shows what differs only for files up to this size (meshc's are far smaller)


def output_drift(
    spec_dir: Path,
    out: Path,
    lock_timeout: float = LOCK_TIMEOUT,
    on_wait: Callable[[Path], None] | None = None,
) -> tuple[TreeStatus, dict[str, DocumentDiff]]:
    """How `out` differs from what the spec renders, and, for every stale or hand-edited file, what a rebuild
    would change (on disk → rendered, as `diff` shows base → head).

    Holds the output's lock, so it never reads a tree a build is swapping.
    """
    from compiler.rollout.output import output_for  # with a rollout.yaml, every wave's revision is compiled

    real = Path(os.path.realpath(out))
    with output_lock(real, str(out), lock_timeout, on_wait, required=False):
        tree = output_for(spec_dir)
        status = compare_tree(real, tree)
        changed = (*status.stale, *status.hand_edited)
        return status, {path: rebuild_edit(real, path, tree[path]) for path in changed}


def rebuild_edit(root: Path, path: str, rendered: bytes) -> DocumentDiff:
    """One file from disk to its rendering; a non-regular or huge file is described, never opened or read whole."""
    on_disk = read_regular(root / path, MAX_COMPARED_BYTES)
    if on_disk is not None:
        return diff_file(path, on_disk, rendered)
    info = os.lstat(root / path)
    what = (
        f"{info.st_size:,} bytes on disk, more than the {MAX_COMPARED_BYTES >> 20} MiB meshc compares as data"
        if kind_of(info.st_mode) == REGULAR
        else f"a {kind_of(info.st_mode)} on disk, not a regular file"
    )
    return DocumentDiff(name=path, status=CHANGED, text=(f"(not compared: {what})",))
