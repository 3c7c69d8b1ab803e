"""`meshc check` in full: how an output tree on disk differs from what the spec renders, file by file."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from compiler.diff.files import diff_file
from compiler.diff.records import CHANGED, DocumentDiff
from compiler.output.compare import TreeStatus, compare_stream
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
    """`meshc check` where a rollout.yaml is there: how `out` differs from what a build renders, and, for every stale
    or hand-edited file, what a rebuild would change (on disk → rendered, as `diff` shows base → head).

    Holds the output's lock, so it never reads a tree a build is swapping. An output the rollout build recorded from
    these very inputs (compiler.rollout.rebuild.rollout_digest), untouched since, is clean without compiling any
    revision; otherwise the tree streams as a build writes it, and only digests are kept.
    """
    from compiler.output.cache import read_cache, untouched
    from compiler.output.disk import scan_tree
    from compiler.output.staging import new_files
    from compiler.rollout.output import plain_tree, rollout_files  # every wave's revision is compiled
    from compiler.rollout.rebuild import rollout_digest

    real = Path(os.path.realpath(out))
    with output_lock(real, str(out), lock_timeout, on_wait, required=False):
        old = scan_tree(real)
        cached = read_cache(real, old)
        digest = rollout_digest(spec_dir)
        if cached is not None and digest is not None and cached.spec == digest and untouched(cached, old):
            return TreeStatus(), {}
        laid_out = rollout_files(spec_dir, split=False)  # nothing is written: all of it streams here
        # no rollout in force (outside git): the plain build, as `meshc build` writes it
        files = new_files(plain_tree(spec_dir)) if laid_out is None else laid_out[0]
        status, rendered = compare_stream(real, old, files, cached.trusted if cached is not None else {})
        return status, {path: rebuild_edit(real, path, data) for path, data in rendered.items()}


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
