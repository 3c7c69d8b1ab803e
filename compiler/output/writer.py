"""The output tree writer: a new tree staged beside `output/` and swapped in whole with one rename.

Files are written as they come (a build streams them target by target), so the writer never holds a
tree: what it keeps is paths and digests. A file whose bytes the previous tree already holds is
hard-linked into the staging tree instead of written; a build whose tree equals what is there writes
nothing and stages nothing. The staging tree is compiler.output.staging's, or the spare tree's
(compiler.output.spare); durability (fsync, the swap) is compiler.output.durable's.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from compiler.diagnostics import EnvironmentFailure, InternalError
from compiler.output import durable
from compiler.output.disk import DIRECTORY, OnDisk, cause, remove_tree, scan_tree
from compiler.output.guard import check_replaceable, resolve_output
from compiler.output.manifest import read_manifest
from compiler.output.spare import (
    ABSENT,
    FOREIGN,
    OURS,
    Listing,
    Recycled,
    foreign_note,
    keep_as_spare,
    spare_state,
)
from compiler.output.staging import NewFile, Staging, new_files
from compiler.output.worker import Worker


@dataclass(frozen=True, kw_only=True, slots=True)
class WriteResult:
    """What a write changed: files written (new or different bytes) and files removed."""

    changed: bool
    written: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    # What the user should know though nothing failed, e.g. a path meshc left alone.
    notes: tuple[str, ...] = ()
    manifest: str | None = None  # the sha256 of the MANIFEST.json swapped in, if the tree had one
    # The files written, as fstat found them once written (compiler.output.cache.Swapped); may miss some.
    stats: Mapping[str, OnDisk] = field(default_factory=dict)
    # The files kept from the previous tree whose inode got a new ctime in this write: a link to it was made (into
    # the staging or the spare tree) or removed (with the previous tree, or an abandoned staging tree). None: any
    # kept file may have (compiler.output.cache.Swapped.relinked).
    relinked: tuple[str, ...] | None = ()


def previous_tree(out: Path) -> tuple[Path, dict[str, OnDisk]]:
    """The real directory behind `out` and its entries, if meshc may replace it; a killed build's leftovers go first.

    The caller holds `output_lock`.
    """
    real = prepared_output(out)
    return real, previous_entries(real, str(out), scan_tree)


def prepared_output(out: Path) -> Path:
    """The real directory behind `out`, a killed build's leftovers cleared (`previous_tree`'s first half)."""
    real = resolve_output(out)
    durable.recover(real)
    return real


def previous_entries(
    real: Path, label: str, scan: Callable[[Path], dict[str, OnDisk]], vouched: bool = False
) -> dict[str, OnDisk]:
    """The entries of output `real` as `scan` finds them, if meshc may replace it (`previous_tree`'s second half);
    `vouched`: a build cache vouches for the tree's manifest (see `check_replaceable`)."""
    try:
        old = scan(real)
    except OSError as error:
        raise EnvironmentFailure(label, f"cannot read the previous output: {cause(error)}") from error
    check_replaceable(real, label, old, vouched)
    return old


def write_tree(out: Path, files: Mapping[str, bytes]) -> WriteResult:
    """Make `out` hold exactly `files`, atomically (see `write_files`)."""
    return write_files(out, new_files(files))


def write_files(
    out: Path,
    files: Iterable[NewFile],
    previous: tuple[Path, Mapping[str, OnDisk]] | None = None,
    trusted: Mapping[str, str] | None = None,
    spare: Path | None = None,
    kept: Mapping[str, str] | None = None,
    listing: Listing | None = None,
    worker: Worker | None = None,
) -> WriteResult:
    """Make `out` hold exactly `files`, atomically: the old tree stays whole until one rename swaps it.

    The caller holds `output_lock`; `previous` is `previous_tree(out)` if the caller already has it.
    `trusted` maps paths of the previous tree to the sha256 they are known to hold (a build cache
    that checked their stat); any other previous file is hashed, in chunks, only when a new file
    of the same path and size needs the comparison. On any failure the staging tree is removed and
    `out` is left as it was.

    With `spare` (an incremental build's `.<output>.meshc-spare`), the previous tree is kept there
    after the swap instead of being removed, and the next write stages in it: its files that are
    links to the output's (same inode, so the same bytes) stay, and only the differences are
    unlinked, linked or written. A one-service rebuild then touches a few directories instead of
    re-creating every directory and link of the tree and deleting the old one.

    `kept`: path -> sha256 of files the new tree reuses from the previous one (an incremental build's
    unchanged targets), taken in one pass instead of one `NewFile` each; every one must be `trusted` with
    that digest, and no file of `files` may claim one of their paths. `listing`: gives the spare's entries told
    apart against `previous`'s scan (compiler.output.spare.Listed) if the caller has them (compiler.output.prescan),
    else the spare is listed here. `worker`: a
    compiler.output.worker.Worker writing part of the tree beside `files`, which must take its entries.
    """
    label = str(out)
    real, old = previous if previous is not None else previous_tree(out)
    state = spare_state(spare) if spare is not None else ABSENT
    notes: tuple[str, ...] = (foreign_note(spare),) if spare is not None and state == FOREIGN else ()
    if spare is not None and state == OURS and old:
        stage: Staging = Recycled(real, old, trusted or {}, spare, listing)
    else:
        stage = Staging(real, old, trusted or {})
    try:
        stage.keep(kept or {})
        if worker is not None:
            worker.start(stage)
        for file in files:
            stage.add(file)
        if worker is not None and not worker.merged:
            raise InternalError("the worker's files were never taken into the tree")
        removed = tuple(
            sorted(p for p, entry in old.items() if entry.kind != DIRECTORY and p not in stage.seen)
        )
        if not stage.started and not removed:
            return WriteResult(changed=False, notes=notes)
        if worker is not None and type(stage) is Staging and not stage.written and not removed:
            # Staged only because the worker needed the tree to exist: every file is the previous tree's own, and
            # removing the links to them made there gives each a new ctime.
            stage.abandon()
            remove_tree(stage.root)
            return WriteResult(changed=False, notes=notes, relinked=None)
        extras = _extras(real, removed)  # read before the swap: the previous MANIFEST.json is still in place
        stage.finish()
        durable.swap(stage.root, real)
    except BaseException as error:
        if worker is not None:
            worker.close()
        stage.abandon()
        remove_tree(stage.root, ignore_errors=True)  # a partial tree must not keep the disk full
        if isinstance(error, OSError):
            raise EnvironmentFailure(
                label, f"cannot write the new tree: {cause(error)}; the output is left as it was"
            ) from error
        raise
    try:
        durable.fsync_path(real.parent, os.O_RDONLY | os.O_DIRECTORY)  # the swap itself survives a crash
    except OSError as error:
        raise EnvironmentFailure(
            label, f"the new output is in place, but the swap cannot be flushed to disk: {cause(error)}"
        ) from error
    kept_previous = isinstance(stage, Recycled) or (
        spare is not None and state == ABSENT and keep_as_spare(stage.root, spare)
    )
    if not kept_previous:
        durable.remove_previous(stage.root)
    if extras:
        notes += (extras_note(label, extras, spare if kept_previous else None),)
    return WriteResult(
        changed=True,
        written=tuple(sorted(stage.written)),
        removed=removed,
        notes=notes,
        manifest=stage.manifest,
        stats=stage.stats,
        relinked=_relinked(stage),
    )


# How many removed files a note names; the rest are counted ("and N more"), as a diagnostic list is.
NAMED_EXTRAS = 10


def _extras(real: Path, removed: tuple[str, ...]) -> tuple[str, ...]:
    """The removed paths that the previous tree's MANIFEST.json does not list: files meshc did not write (all of
    them where it has none). Read only when a build removes something."""
    if not removed:
        return ()
    previous = read_manifest(real)
    listed = previous["files"] if previous is not None else {}
    return tuple(path for path in removed if path not in listed)


def extras_note(label: str, extras: tuple[str, ...], spare: Path | None) -> str:
    """What a build says of the files it removed that meshc had not written: each by name (NAMED_EXTRAS of them),
    and where they still are. The previous tree is the spare tree until the next build stages in it; where it was
    not kept (no spare, or a path there meshc leaves alone) it was deleted."""
    named = ", ".join(extras[:NAMED_EXTRAS])
    more = f" and {len(extras) - NAMED_EXTRAS} more" if len(extras) > NAMED_EXTRAS else ""
    where = (
        f"; until the next build they are still in {spare}/ (the previous tree)"
        if spare is not None
        else "; they are deleted"
    )
    return f"{label}: removed {len(extras)} file(s) meshc had not written: {named}{more}{where}"


def _relinked(stage: Staging) -> tuple[str, ...] | None:
    """The kept files whose ctime the write changed (`WriteResult.relinked`), once the previous tree is the spare
    or removed. In the spare tree, only the files linked there (most are the output's already: a one-service
    rebuild links ~10). In a staging tree every kept file was linked, some by a worker, and the previous tree's
    removal unlinks one name of each."""
    return tuple(stage.linked) if isinstance(stage, Recycled) else None
