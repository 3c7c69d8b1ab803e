"""The revisions of a rollout: the context one command reads, and each revision's spec compiled once per tree hash.

A revision pinned by several waves, or whose spec did not change between pins, is loaded, checked
and lowered once per command, and what the revisions share once for them all (compiler.rollout.compiled).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

from compiler.diagnostics import Diagnostic, InternalError, Span, SpecError, at_revision
from compiler.gitsource import (
    RevisionError,
    SpecDirMissing,
    SpecLocation,
    blob_id,
    git,
    known_blobs,
    locate,
    read_revision,
    read_side_revision,
    spec_tree,
)
from compiler.rollout.compiled import Revision, RevisionCache, compile_files
from compiler.rollout.hosts import INVENTORY_FILE, Host, load_inventory, parse_inventory
from compiler.rollout.pins import ROLLOUT_FILE, WORKING_TREE, RolloutFile, load_rollout, parse_rollout
from compiler.spec.load import (
    MESH_FILE,
    SERVICES_DIR,
    SpecFiles,
    Unreadable,
    side_bytes,
    spec_files,
    spec_label,
)
from compiler.spec.wave_policy import WavePolicy


@dataclass(frozen=True, kw_only=True, slots=True)
class Context:
    """What every rollout computation of one command reads: the spec directory, its repository, the head spec."""

    spec_dir: Path
    label: str
    location: SpecLocation
    head_files: Mapping[str, bytes]
    head_key: str  # spec_key of the working tree: hashing every file per lookup made `plan` quadratic
    policy: WavePolicy
    rollout: RolloutFile
    hosts: tuple[Host, ...]
    head: str
    cache: RevisionCache


def rollout_context(spec_dir: Path, cache: RevisionCache | None = None) -> Context | None:
    """The rollout in force for `spec_dir`, or None when there is none: no rollout.yaml, or a spec outside git
    (pins name git revisions; a copy of the spec has none), where a build is the plain build, exactly as without waves.

    Raises SpecError for a rollout.yaml that is malformed or without a wave policy.
    """
    label = spec_label(spec_dir)
    if not os.path.lexists(
        spec_dir / ROLLOUT_FILE
    ):  # a directory, FIFO or link there is an error (load_rollout), not "none"
        return None
    try:
        location = locate(spec_dir)
    except RevisionError:
        return None
    rollout = load_rollout(spec_dir / ROLLOUT_FILE, f"{label}/{ROLLOUT_FILE}")
    if rollout is None:
        return None
    hosts = partial(load_inventory, spec_dir / INVENTORY_FILE, f"{label}/{INVENTORY_FILE}")
    files = spec_files(spec_dir)
    cache = cache or RevisionCache()
    # the pinned revisions share most of them: ~0.13 s of reads at 1,000 services
    known_blobs(files, cache.blobs)
    return _context(spec_dir, location, files, rollout, hosts, _commit_of(location, None), cache)


def revision_context(
    spec_dir: Path, location: SpecLocation, revision: str, cache: RevisionCache
) -> Context | None:
    """The rollout in force at git `revision`, as a build of that commit sees it: its rollout.yaml, inventory and
    spec, its first wave running the commit itself; None when it has no rollout.yaml there.

    Raises SpecError as rollout_context does. `cache` may be another context's: what it holds is keyed by content
    (RevisionCache), never by a revision's name.
    """
    label = spec_label(spec_dir)
    raw = side_bytes(read_side_revision(location, revision, ROLLOUT_FILE), f"{label}/{ROLLOUT_FILE}")
    if raw is None:
        return None
    rollout = parse_rollout(raw, f"{label}/{ROLLOUT_FILE}")
    inventory = f"{label}/{INVENTORY_FILE}"
    hosts = partial(
        _inventory, side_bytes(read_side_revision(location, revision, INVENTORY_FILE), inventory), inventory
    )
    files = read_revision(location, revision, cache.blobs)
    return _context(spec_dir, location, files, rollout, hosts, _commit_of(location, revision), cache)


def plain_context(
    spec_dir: Path, location: SpecLocation, revision: str | None, cache: RevisionCache, policy: WavePolicy
) -> Context:
    """A build without rollout.yaml at git `revision` (None: the working tree) as a rollout context: every wave is
    to run its spec, no host is a canary (a plain build writes no node file), and its own wave policy names the
    waves, else `policy` (the other side's, in a diff). Raises SpecError for an invalid spec."""
    label = spec_label(spec_dir)
    files = spec_files(spec_dir) if revision is None else read_revision(location, revision, cache.blobs)
    if revision is None:
        known_blobs(files, cache.blobs)
    rollout = RolloutFile(
        file=f"{label}/{ROLLOUT_FILE}",
        hold=False,
        pins={},
        spans={},
        span=Span(file=f"{label}/{ROLLOUT_FILE}"),
    )
    return _context(
        spec_dir, location, files, rollout, lambda: (), _commit_of(location, revision), cache, policy
    )


def _commit_of(location: SpecLocation, revision: str | None) -> str:
    """The commit id of `revision` (None: the one the working tree is on; "" in a repository without one)."""
    if revision is None:
        return location.repo.head.commit.hexsha if location.repo.head.is_valid() else ""
    return location.repo.commit(revision).hexsha


def _inventory(raw: bytes | None, label: str) -> tuple[Host, ...]:
    return () if raw is None else parse_inventory(raw, label)


def _context(
    spec_dir: Path,
    location: SpecLocation,
    files: SpecFiles,
    rollout: RolloutFile,
    hosts: Callable[[], tuple[Host, ...]],
    head: str,
    cache: RevisionCache,
    policy: WavePolicy | None = None,
) -> Context:
    """The context of a rollout whose first wave runs `files` (commit `head`), its spec checked and lowered once;
    `policy`: the waves where the spec has no policy of its own (else that is an error)."""
    label = spec_label(spec_dir)
    # Lowered even where the head's spec is compiled already (the other side of a diff): from `cache`, that takes
    # ~0.02 s at 1,000 services.
    head_spec, head_mesh = compile_files(files, label, cache)
    policy = head_spec.mesh.rollout or policy
    if policy is None:
        raise SpecError(
            [
                _diagnostic(
                    rollout,
                    "rollout-no-policy",
                    f"{ROLLOUT_FILE} pins waves, but {head_spec.mesh.file} has no "
                    "`rollout.waves`; add the wave policy or remove rollout.yaml",
                )
            ]
        )
    head_files = _read_files(files)
    context = Context(
        spec_dir=spec_dir,
        label=label,
        location=location,
        head_files=head_files,
        head_key=_files_key(head_files),
        policy=policy,
        rollout=rollout,
        hosts=hosts(),  # after the spec: its errors come first
        head=head,
        cache=cache,
    )
    key = spec_key(context, WORKING_TREE)
    if key is not None:  # the head was just compiled: compile_revision does not load it again
        context.cache.compiled.setdefault(
            key, Revision(revision=WORKING_TREE, spec=head_spec, mesh=head_mesh)
        )
    return context


def no_rollout_reason(spec_dir: Path) -> str:
    """Why `spec_dir` has no rollout in force (rollout_context gave None); raise OSError if it is no spec directory."""
    spec_files(
        spec_dir
    )  # a missing spec directory, or a file, is said as such, not as a missing rollout.yaml
    label = spec_label(spec_dir)
    if (spec_dir / ROLLOUT_FILE).is_file():
        return (
            f"{label}/{ROLLOUT_FILE} pins git revisions, but {label} is not in a git repository "
            "(a copy of the spec has no history)"
        )
    return f"no {ROLLOUT_FILE} in {label}"


def plain_build_note(spec_dir: Path) -> str:
    """What build and validate say when a rollout.yaml is there but no rollout is in force (no_rollout_reason)."""
    return f"{no_rollout_reason(spec_dir)}: no wave is held back, every target gets the spec as it is (a plain build)"


def _diagnostic(rollout: RolloutFile, code: str, message: str) -> Diagnostic:
    return Diagnostic(span=rollout.span, code=code, message=message)


def compile_revision(context: Context, revision: str) -> Revision | None:
    """A revision's spec, checked and lowered once per tree hash; None when the spec directory does not exist there."""
    key, files = _tree_key(context, revision)
    if key is None:
        return None
    cached = context.cache.compiled.get(key)
    if cached is None:
        if files is None:
            files = read_revision(context.location, revision, context.cache.blobs)
        try:
            spec, mesh = compile_files(files, context.label, context.cache)
        except SpecError as exc:
            raise SpecError(at_revision(exc.diagnostics, revision[:12])) from None
        cached = context.cache.compiled[key] = Revision(revision=revision, spec=spec, mesh=mesh)
    return replace(cached, revision=revision) if cached.revision != revision else cached


def _read_files(files: SpecFiles) -> dict[str, bytes]:
    """The files of a spec that loaded, every one read: an unreadable file fails the load before."""
    unread = sorted(path for path, data in files.items() if isinstance(data, Unreadable))
    if unread:
        raise InternalError(f"{', '.join(unread)}: unreadable, yet the spec loaded")
    return {path: data for path, data in files.items() if isinstance(data, bytes)}


def _tree_key(context: Context, revision: str) -> tuple[str | None, SpecFiles | None]:
    """The cache key of a revision's spec and, for the working tree, its files (None, None: no spec directory there)."""
    if revision == WORKING_TREE:
        return spec_key(context, revision), context.head_files
    return spec_key(context, revision), None


def spec_key(context: Context, revision: str) -> str | None:
    """What a revision's spec is made of, as git hashes it: mesh.yaml's blob and the services/ tree.

    Read from git objects without reading any blob; for the working tree, hashed the way git hashes
    them. rollout.yaml, the inventory and output/ are not part of it, so a promotion commit has the
    spec of its parent. Equal keys mean equal spec files; a mismatch only costs a compile.
    """
    if revision == WORKING_TREE:
        return context.head_key
    cached = context.cache.keys.get(revision)
    if cached is None:
        try:  # through the links committed on the way, as read_revision reads the files
            root = spec_tree(context.location, revision)
        except SpecDirMissing:
            return None
        cached = context.cache.keys[revision] = (
            f"{_entry_sha(root, MESH_FILE)}:{_entry_sha(root, SERVICES_DIR)}"
        )
    return cached


def _files_key(files: Mapping[str, bytes]) -> str:
    """`spec_key` of a working tree's spec files: its files hashed the way git hashes them."""
    services = sorted(
        (path.split("/", 1)[1], data) for path, data in files.items() if path.startswith(f"{SERVICES_DIR}/")
    )
    tree = b"".join(
        b"100644 " + name.encode() + b"\0" + bytes.fromhex(blob_id(data)) for name, data in services
    )
    mesh = blob_id(files[MESH_FILE]) if MESH_FILE in files else "-"
    services_sha = hashlib.sha1(b"tree %d\0" % len(tree) + tree).hexdigest() if services else "-"
    return f"{mesh}:{services_sha}"


def _entry_sha(tree: git.Tree, name: str) -> str:
    try:
        return (tree / name).hexsha
    except KeyError:
        return "-"
