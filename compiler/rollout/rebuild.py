"""The incremental rollout build: the plain build's cache, spare tree and writer for a tree of several revisions.

compiler.incremental calls it when a rollout.yaml is there. The build cache beside `output/` records
a digest of everything a rollout build reads: the working tree's spec files, rollout.yaml, the host
inventory, where the repository is, the commit HEAD is on, and what the repository holds under each
commit id rollout.yaml names (pins are full commit ids, and a commit's tree never changes, so the id
stands for its spec). A build whose digest is the recorded one, over an untouched tree, is a no-op
decided before any revision is compiled: until then this module imports no compiler stage, nor
GitPython. Otherwise every live revision is rendered (compiler.rollout.output) and the tree streams
to the writer, which hard-links every file the previous tree holds with the same bytes (vouched for
by the cache's stat records, else hashed) and stages in the spare tree.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import subprocess
from dataclasses import replace
from pathlib import Path

from compiler.output.cache import read_cache, spec_digest, untouched, write_cache
from compiler.output.disk import read_regular
from compiler.output.documents import foreign_cache_notes
from compiler.output.staging import new_files
from compiler.output.writer import WriteResult, previous_tree, write_files
from compiler.rollout import ROLLOUT_FILE
from compiler.spec.load import read_tree

INVENTORY_FILE = "inventory/hosts.yaml"  # compiler.rollout.hosts.INVENTORY_FILE, without importing the loader
MAX_SIDE_FILE_BYTES = 64 << 20  # rollout.yaml or an inventory bigger than this is never vouched for
_COMMIT_ID = re.compile(rb"\b[0-9a-f]{40}\b")  # pins are full commit ids; one in a comment costs nothing


def build_rollout_locked(spec_dir: Path, out: Path) -> WriteResult:
    """The incremental rollout build, under the output's lock (see the module docstring). With no rollout in force
    (a rollout.yaml outside git) the plain tree is written whole, without a cache, with a note that says so."""
    from compiler.rollout.output import plain_tree, rollout_files  # only past the no-op check

    real, old = previous_tree(out)
    cached = read_cache(real, old)
    before = rollout_digest(spec_dir)
    if cached is not None and before is not None and cached.spec == before and untouched(cached, old):
        return WriteResult(changed=False)
    # the targets whose input hashes the cache records over files it vouches for are kept, not rendered
    laid_out = rollout_files(spec_dir, cached=cached)
    if laid_out is None:
        # Outside git, pins name no revision: the plain tree, as documented, but never silently (it gives every
        # wave the spec as it is, and drops the canary hosts' node files).
        from compiler.rollout.revisions import plain_build_note

        result = write_files(out, new_files(plain_tree(spec_dir)), (real, old))
        return replace(result, notes=(*result.notes, plain_build_note(spec_dir)))
    trusted = cached.trusted if cached is not None else None
    spare = real.parent / f".{real.name}.meshc-spare"
    files, worker, reuse = laid_out
    result = write_files(out, files, (real, old), trusted, spare=spare, worker=worker, kept=reuse.kept)
    # Recorded only if nothing the build read moved while it ran, else the next build must not skip.
    after = rollout_digest(spec_dir)
    write_cache(real, before if before == after else None, reuse.inputs)
    return replace(result, notes=result.notes + foreign_cache_notes(real))


def rollout_digest(spec_dir: Path) -> str | None:
    """One hash of everything a rollout build of `spec_dir` reads, or None when it cannot be vouched for (the
    build then runs in full and reports whatever is wrong)."""
    label = spec_dir.as_posix().rstrip("/")
    if not spec_dir.is_dir():
        return None
    rollout, inventory = _side_file(spec_dir / ROLLOUT_FILE), _side_file(spec_dir / INVENTORY_FILE)
    plain = spec_digest(read_tree(spec_dir), label)
    if plain is None or rollout is None or inventory is None:
        return None
    repository = _git(spec_dir, ["rev-parse", "--show-toplevel", "--verify", "HEAD"], b"")
    commits = _git(spec_dir, ["cat-file", "--batch-check"], b"\n".join(_COMMIT_ID.findall(rollout)) + b"\n")
    if repository is None or commits is None:
        return None
    digest = hashlib.sha256(b"rollout\0" + plain.encode() + b"\0")
    digest.update(hashlib.sha256(rollout).digest() + hashlib.sha256(inventory).digest())
    where = f"{os.path.abspath(spec_dir)}\0{os.path.realpath(spec_dir)}\0".encode()
    digest.update(where + repository + b"\0" + commits)
    return digest.hexdigest()


def _git(spec_dir: Path, arguments: list[str], given: bytes) -> bytes | None:
    """What git prints for `arguments` run in `spec_dir`, or None when it fails (no repository, no commit yet).

    The git command line, not GitPython: a no-op build should not pay for importing it.
    """
    try:
        done = subprocess.run(
            ["git", "-C", str(spec_dir), *arguments], input=given, capture_output=True, check=False
        )
    except OSError:
        return None
    return done.stdout if done.returncode == 0 else None


def _side_file(path: Path) -> bytes | None:
    """A rollout input beside the spec, tagged: b"-" when absent, b"+" and its bytes when a regular file, None
    when it is anything else (a directory, a link, a FIFO, unreadable: the build reports it)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return b"-"
    except OSError:
        return None
    data = read_regular(path, MAX_SIDE_FILE_BYTES) if stat.S_ISREG(mode) else None
    return None if data is None else b"+" + data
