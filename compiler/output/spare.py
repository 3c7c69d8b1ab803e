"""The spare tree beside an output (`.<output>.meshc-spare`): the tree before the last build, which the next build
stages in, touching only what differs (see compiler.output.writer.write_files).
"""

from __future__ import annotations

import fcntl
import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from compiler.output import durable
from compiler.output.disk import DIRECTORY, REGULAR, OnDisk, list_tree, remove_tree, write_all
from compiler.output.manifest import MANIFEST
from compiler.output.staging import Staging, stat_of


@dataclass(frozen=True, kw_only=True, slots=True)
class Listed:
    """The spare's entries (`list_tree`) against the output's scan: `linked`, the paths where the spare holds the
    output's very file (`linked`); `others`, every other entry (directories, files that differ, anything else).

    A one-service rebuild at 1,000 services finds 10,600 of its 12,000 entries linked. They need no entry of
    their own: the scan's is theirs (same inode). So compiler.output.prescan's child, which lists the spare,
    finds them and sends their paths alone: the build decodes ~1,400 entries, not 12,000, and does not look for
    the links itself.
    """

    linked: frozenset[str]
    others: Mapping[str, OnDisk]
    # the very scan (the object) the links were found against: the writer uses them only over that scan
    against: Mapping[str, OnDisk]


def listed(old: Mapping[str, OnDisk], entries: Mapping[str, OnDisk]) -> Listed:
    """The spare's entries `entries` told apart against the output's `old` (see `Listed`)."""
    links = linked(old, entries)
    others = {path: entry for path, entry in entries.items() if path not in links}
    return Listed(linked=links, others=others, against=old)


# Where the spare's entries come from when the writer first needs them: a call, so that compiler.output.prescan's
# child can still be listing them while the build checks, lowers and renders (None: the writer lists the spare).
# A listing whose links were found against another scan than the one the writer stages over is not used.
Listing = Callable[[], Listed | None]


# What is at the spare path: nothing, a tree meshc left there, or something meshc did not write (left alone).
ABSENT, OURS, FOREIGN = "absent", "ours", "foreign"
# Where a build in the spare writes the new MANIFEST.json before it renames it over the old one.
SPARE_MANIFEST = f"{MANIFEST}.meshc-new"


def keep_as_spare(previous: Path, spare: Path) -> bool:
    """Make the previous tree, which the swap left under this process's staging name, the next build's spare."""
    if not os.path.isdir(previous):
        return False  # there was no previous tree
    try:
        os.rename(previous, spare)
    except OSError:
        return False  # it is removed instead: the next build then writes its tree whole
    return True


def spare_state(spare: Path) -> str:
    """Whether the spare path is free, holds a tree meshc left there (a directory with a MANIFEST.json, or
    an empty one), or holds something else, which meshc never rewrites: it only replaces what it wrote.

    The spare is only ever created by renaming a whole previous output into place, so a killed build
    never leaves a half-made one there (its staging tree has this process's name).
    """
    try:
        info = os.lstat(spare)
    except FileNotFoundError:
        return ABSENT
    if not stat.S_ISDIR(info.st_mode):
        return FOREIGN
    try:
        if stat.S_ISREG(os.lstat(spare / MANIFEST).st_mode):
            return OURS
    except FileNotFoundError:
        pass
    with os.scandir(spare) as entries:
        return OURS if next(entries, None) is None else FOREIGN


def foreign_note(spare: Path) -> str:
    return (
        f"{spare} is not a tree meshc left there, so meshc leaves it alone and rewrites the whole output "
        "instead of only what changed; move it away to make rebuilds fast again"
    )


class Recycled(Staging):
    """Staging in the spare tree (the output before the last build): only what differs is touched.

    The spare is meshc's scratch: nothing in it is trusted but the identity of a file with the
    output's (same inode). Anything else there, whatever it holds, is replaced or removed.
    """

    def __init__(
        self,
        real: Path,
        old: Mapping[str, OnDisk],
        trusted: Mapping[str, str],
        spare: Path,
        listing: Listing | None = None,
    ) -> None:
        super().__init__(real, old, trusted, spare)
        self.listing = listing  # gives the spare's entries told apart, if the caller has them
        self.spare: dict[str, OnDisk] = {}
        self.touched: set[str] = set()  # directories whose entries changed: fsynced before the swap
        # The output's files linked into the spare here: a link changes the inode's ctime, which the build cache
        # records (compiler.output.cache.Swapped.relinked). A plain staging tree links every kept file.
        self.linked: list[str] = []

    def start(self) -> None:
        """Read what the spare holds (once) and link the equal files noted so far."""
        if self.started:
            return
        self.started = True
        found = self.listing() if self.listing is not None else None
        if found is None or found.against is not self.old:  # links found against another scan: not these
            # only inodes matter: 30 ms, not 60, at 1,000 services
            found = listed(self.old, list_tree(self.root))
        # a linked path holds the output's very file: its entry is the scan's
        self.spare = dict(zip(found.linked, map(self.old.__getitem__, found.linked), strict=True))
        self.spare.update(found.others)
        self.directories = {""} | {path for path, entry in found.others.items() if entry.kind == DIRECTORY}
        # Most noted files are the output's very files already: one set difference finds the others (a one-service
        # rebuild at 1,000 services notes 10,600).
        for path in sorted(set(self.pending).difference(found.linked)):
            self._link(path)
        self.pending = []

    def finish(self) -> None:
        """Remove what the new tree does not hold, then make what changed durable (see `Staging.finish`)."""
        self.start()
        for path in sorted(p for p, e in self.spare.items() if e.kind != DIRECTORY and p not in self.seen):
            self._clear(path)
        needed = {""}
        for parent in {path.rpartition("/")[0] for path in self.seen}:  # ~1,700 directories for 10,600 files
            while parent not in needed:
                needed.add(parent)
                parent = parent.rpartition("/")[0]
        for directory in sorted(self.directories - needed, reverse=True):  # children first
            os.rmdir(self.target + directory)
            self.directories.discard(directory)
            self.touched.add(directory.rpartition("/")[0])
        changed = (self.touched & self.directories) | {""}  # a directory removed since needs no flush
        # Files and directories in one round of fsyncs (the order between them does not matter: the swap waits
        # for all): a one-service rebuild waits for one round of disk flushes, not two.
        durable.fsync_paths([self.target + path for path in [*self.written, *sorted(changed)]], os.O_RDONLY)

    def _link(self, path: str) -> None:
        entry, wanted = self.spare.get(path), self.old[path]
        if entry is not None and entry.kind == REGULAR and entry.inode == wanted.inode:
            return  # the very file of the output: nothing to do
        self._clear(path)
        super()._link(path)
        self.linked.append(path)
        self.touched.add(path.rpartition("/")[0])

    def _write(self, path: str, data: bytes) -> None:
        entry = self.spare.get(path)
        rewritten = (
            _overwrite(self.target + path, data) if entry is not None and entry.kind == REGULAR else None
        )
        if rewritten is not None:
            self.stats[path] = rewritten
            return  # the same directory entry, new bytes: nothing for the directory's fsync
        if path == MANIFEST and entry is not None and entry.kind == REGULAR:
            self._replace_manifest(data)
            return
        self._clear(path)
        super()._write(path, data)
        self.touched.add(path.rpartition("/")[0])

    def _replace_manifest(self, data: bytes) -> None:
        """The new MANIFEST.json in the old one's place in one rename, never after an unlink: the spare is meshc's
        while it holds one (`spare_state`), and a build killed between an unlink and the write left a spare every
        later build took for someone else's and left alone, with a warning each time."""
        self._clear(SPARE_MANIFEST)  # a killed build's, if any
        super()._write(SPARE_MANIFEST, data)
        os.replace(self.target + SPARE_MANIFEST, self.target + MANIFEST)
        self.stats[MANIFEST] = self.stats.pop(SPARE_MANIFEST)
        self.spare.pop(MANIFEST, None)
        self.touched.add("")

    def _mkdir(self, directory: str) -> None:
        self._clear(directory)  # a file where a directory goes is removed
        super()._mkdir(directory)
        self.touched.add(directory.rpartition("/")[0])

    def _clear(self, path: str) -> None:
        """Remove what the spare holds at `path`, if anything."""
        entry = self.spare.pop(path, None)
        if entry is None:
            return
        if entry.kind == DIRECTORY:
            remove_tree(self.target + path)
            inside = f"{path}/"
            self.directories = {d for d in self.directories if d != path and not d.startswith(inside)}
            for other in [p for p in self.spare if p.startswith(inside)]:
                del self.spare[other]
        else:
            os.unlink(self.target + path)
        self.touched.add(path.rpartition("/")[0])


def linked(old: Mapping[str, OnDisk], spare: Mapping[str, OnDisk]) -> frozenset[str]:
    """The paths where the spare holds the output's (`old`'s) very file: a regular file of the same inode."""
    # By index (0: kind, 3: inode): 2.5-5 ms at 1,000 services, against 4.5-5 ms by name, and ~7 ms for set
    # arithmetic on (path, inode) pairs.
    get = old.get
    return frozenset(
        path
        for path, entry in spare.items()
        if entry[0] == REGULAR
        and (found := get(path)) is not None
        and found[3] == entry[3]
        and found[0] == REGULAR
    )


def _overwrite(path: str, data: bytes) -> OnDisk | None:
    """Write `data` over the file at `path` if it is a regular file no other name links to and no process has
    open, and give its entry as written; None if it is not (the caller then unlinks it and writes a new file).

    A file of the spare that is not the output's (its only link is its own) is meshc's to rewrite in place. On
    this kind of disk (ext4 mounted with `discard`) unlinking a file already on disk costs ~2 ms: its blocks are
    freed and discarded, 20 unlinks take 42 ms, and a new file then takes new blocks. Overwriting keeps both
    the blocks and the directory entry. A file linked to the output's (two links or more) is never written into,
    and neither is one a reader still has open from when it was the output's: Linux grants a write lease only
    on a file nobody else has open (or mapped), and holds back any open until the lease is let go.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            return None
        try:
            fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
        except OSError:  # open elsewhere, or no leases on this filesystem
            return None
        write_all(fd, data)
        os.ftruncate(fd, len(data))
        return stat_of(fd)
    finally:
        os.close(fd)  # lets the lease go
