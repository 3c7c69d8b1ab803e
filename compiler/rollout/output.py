"""What `meshc build` writes: the rollout tree when a rollout is in force (every state checked), else the build.

The rollout build is incremental like the plain one (compiler.incremental): the build cache beside
`output/` records a digest of everything a rollout build reads — the working tree's spec files,
rollout.yaml, the host inventory, the commit HEAD is on and the commit each pin names (a commit's
tree never changes, so its id stands for its spec) — and a build whose digest is the recorded one,
over an untouched tree, is a no-op decided before any revision is compiled. Otherwise every live
revision is rendered and the tree streams to the writer, which hard-links every file the previous
tree already holds (the build cache vouches for their bytes by stat) and stages in the spare tree.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import git

from compiler.diagnostics import SpecError
from compiler.incremental import build_locked as plain_build_locked
from compiler.incremental import spec_digest, untouched
from compiler.output.cache import read_cache, write_cache
from compiler.output.disk import read_regular
from compiler.output.guard import resolve_output
from compiler.output.lock import LOCK_TIMEOUT, output_lock
from compiler.output.writer import NewFile, WriteResult, new_file, previous_tree, write_files
from compiler.pipeline import compile_dir, spec_files
from compiler.rollout.build import build_rollout
from compiler.rollout.hosts import INVENTORY_FILE
from compiler.rollout.pins import ROLLOUT_FILE, load_rollout
from compiler.rollout.revisions import RevisionCache, rollout_context
from compiler.rollout.states import check_rollout

MAX_SIDE_FILE_BYTES = (
    64 << 20
)  # rollout.yaml and the inventory: a bigger one is read by the full build, never trusted


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


def build(
    spec_dir: Path,
    out: Path,
    lock_timeout: float = LOCK_TIMEOUT,
    on_wait: Callable[[Path], None] | None = None,
) -> WriteResult:
    """`meshc build`: compile (every wave's revision when a rollout is in force) and write the tree atomically."""
    real = resolve_output(out, protect=(("the spec directory", spec_dir),))
    with output_lock(real, str(out), lock_timeout, on_wait):
        return build_locked(spec_dir, out)


def build_locked(spec_dir: Path, out: Path) -> WriteResult:
    """The incremental rollout build, under the output's lock (see the module docstring)."""
    real, old = previous_tree(out)
    cached = read_cache(real, old)
    before = rollout_digest(spec_dir)
    if cached is not None and before is not None and cached.spec == before and untouched(cached, old):
        return WriteResult(changed=False)
    tree = rollout_tree(spec_dir)
    if tree is None:
        return plain_build_locked(spec_dir, out)  # rollout.yaml outside git: the plain build, incremental too
    trusted = cached.trusted if cached is not None else None
    result = write_files(
        out, _stream(tree), (real, old), trusted, spare=real.parent / f".{real.name}.meshc-spare"
    )
    # Recorded only if nothing the build read moved while it ran: else the next build must not skip.
    after = rollout_digest(spec_dir)
    write_cache(real, before if before == after else None, {})
    return result


def _stream(tree: Mapping[str, bytes]) -> Iterator[NewFile]:
    for path, data in tree.items():
        yield new_file(path, data)


def rollout_digest(spec_dir: Path) -> str | None:
    """One hash of everything a rollout build of `spec_dir` reads, or None when it cannot be vouched for (the build
    then runs in full and reports whatever is wrong)."""
    from compiler.gitsource import RevisionError, locate

    label = spec_dir.as_posix().rstrip("/") or "."
    try:
        plain = spec_digest(spec_files(spec_dir), label)
        sides = [_side_file(spec_dir / name) for name in (ROLLOUT_FILE, INVENTORY_FILE)]
        rollout = load_rollout(spec_dir / ROLLOUT_FILE, f"{label}/{ROLLOUT_FILE}")
        location = locate(spec_dir)
    except (OSError, SpecError, RevisionError):
        return None
    if plain is None or None in sides or rollout is None:
        return None
    repo = location.repo
    try:
        head = repo.head.commit.hexsha if repo.head.is_valid() else ""
        pins = {wave: _commit_id(repo, pin) for wave, pin in sorted(rollout.pins.items())}
    finally:
        repo.close()
    digest = hashlib.sha256(b"rollout\0" + plain.encode() + b"\0")
    for side in sides:
        digest.update(hashlib.sha256(side or b"").digest())
    digest.update(repr((location.relative, location.resolved, head, sorted(pins.items()))).encode())
    return digest.hexdigest()


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


def _commit_id(repo: git.Repo, pin: str) -> str:
    """The full id of the commit a pin names (a branch moves: its name alone says nothing), or the pin marked
    unresolved."""
    try:
        return str(repo.commit(pin).hexsha)
    except (ValueError, git.BadName, git.BadObject):
        return f"?{pin}"
