"""A worker's files handed to the build through a memory file, for the build to stage (compiler.output.worker).

A worker beside a plain staging tree writes its files into that tree itself. Beside the spare tree
(compiler.output.spare.Recycled) it cannot: staging there reads and changes what the spare holds (a file
rewritten in place, a stale entry removed, a directory made where a file was), and two processes doing
that at once would each act on what the other already changed. So that worker renders, hashes and
compares its share, and spools each file here: its path, sha256 and target, with its bytes only where
the previous tree does not hold them already (a rebuild's files are mostly the same). The build stages
the records itself once it is done with its own share.

A spool holds at most SPOOL_LIMIT bytes of files: past it the worker gives up and the build lays out its
share itself, as after any failure of the worker. The build reads a spool through once before it stages
anything from it, so a spool that does not decode to the end (a worker killed mid-record) stages nothing.
"""

from __future__ import annotations

import marshal
import os
from collections.abc import Callable, Iterable, Iterator
from typing import IO, TYPE_CHECKING

from compiler.output.staging import NewFile, Staging, new_file

if TYPE_CHECKING:
    from compiler.emit import Artifact

# The new bytes a spool may hold. At 1,000 services a worker's share is ~90 MiB when every file changes; the cap
# keeps a mesh-wide change of a much bigger mesh from holding a share of its tree in memory.
SPOOL_LIMIT = 256 << 20

# path, sha256, target, bytes (None: the previous tree holds the file)
Record = tuple[str, str, "str | None", "bytes | None"]


class SpoolFull(Exception):
    """The worker's share holds more new bytes than SPOOL_LIMIT: the build lays it out itself."""


def spool_files(
    stage: Staging, artifacts: Iterable[Artifact], memory: int, also_done: Callable[[], bool]
) -> None:
    """In the worker: each of `artifacts` as a record in memory file `memory`, then whether `also_done()`.

    A file's bytes are left out where the previous tree holds that very file, as the build cache vouched
    (`Staging.vouched`): the build then links it, as it would have."""
    size = 0
    with os.fdopen(os.dup(memory), "wb") as spool:
        for artifact in artifacts:
            file = new_file(artifact.path, artifact.data)
            held = stage.vouched(file.path) == file.digest
            if not held:
                size += len(artifact.data)
                if size > SPOOL_LIMIT:
                    raise SpoolFull(file.path)
            marshal.dump((file.path, file.digest, artifact.target, None if held else file.data), spool)
        marshal.dump(None, spool)  # the end of the files
        marshal.dump(also_done(), spool)


def spool_end(memory: int) -> bool | None:
    """Read the spool in memory file `memory` through: the worker's `also_done` if it decodes to its end, else None."""
    try:
        with os.fdopen(os.dup(memory), "rb") as spool:
            spool.seek(0)
            for _ in _records(spool):
                pass
            also_done = marshal.load(spool)
    except (OSError, EOFError, ValueError, TypeError):
        return None
    return also_done if type(also_done) is bool else None


def stage_spooled(stage: Staging, memory: int) -> list[tuple[str, str, str | None]]:
    """Stage each file of a spool that `spool_end` read through, in order; their (path, sha256, target)."""
    entries: list[tuple[str, str, str | None]] = []
    with os.fdopen(os.dup(memory), "rb") as spool:
        spool.seek(0)
        for path, digest, target, data in _records(spool):
            stage.add(NewFile(path=path, digest=digest, data=data))
            entries.append((path, digest, target))
    return entries


def _records(spool: IO[bytes]) -> Iterator[Record]:
    """The file records of a spool, up to its end record; ValueError for anything else."""
    while (record := marshal.load(spool)) is not None:
        if not (
            type(record) is tuple
            and len(record) == 4
            and type(record[0]) is str
            and type(record[1]) is str
            and (record[2] is None or type(record[2]) is str)
            and (record[3] is None or type(record[3]) is bytes)
        ):
            raise ValueError("not a spool record")
        yield record
