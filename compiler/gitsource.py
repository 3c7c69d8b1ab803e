"""Read a spec tree at any git revision straight from git objects: no checkout, worktree or index change."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from gitdb.exc import BadName, BadObject

from compiler.diagnostics import EnvironmentFailure
from compiler.spec.document import MAX_FILE_BYTES
from compiler.spec.load import MESH_FILE, SERVICES_DIR, Unreadable, symlink_problem

_NEEDS_GIT = (
    "meshc needs git to read the revisions rollout.yaml pins, and any other revision of the spec: install git"
)


def _no_git() -> EnvironmentFailure:
    """GitPython would not import: it runs `git version` on import, and raises ImportError when that fails."""
    named = os.environ.get("GIT_PYTHON_GIT_EXECUTABLE")  # GitPython runs this instead of `git` from PATH
    if named is None:
        return EnvironmentFailure("git", f"not found on PATH, or it does not run; {_NEEDS_GIT}")
    return EnvironmentFailure(named, f"does not run as git ($GIT_PYTHON_GIT_EXECUTABLE); {_NEEDS_GIT}")


try:
    # Re-exported: meshc's other modules import GitPython from here, so that a missing git is one line, exit 4.
    import git as git
except ModuleNotFoundError:
    raise  # GitPython itself is not installed: a broken installation, not the machine's git
except ImportError as error:
    raise _no_git() from error

_BLOB_MODES = (0o100644, 0o100755)  # regular files; symlinks and submodules are not spec files
_SYMLINK_MODE = 0o120000
_MAX_SYMLINK_HOPS = 40  # as the Linux kernel's ELOOP limit
_MAX_SYMLINK_BYTES = 4096  # PATH_MAX: a longer "symlink" blob is no path


OVERSIZED = bytes(MAX_FILE_BYTES + 1)  # a blob over the limit, unread (see _read_blob)


class RevisionError(Exception):
    """A revision git cannot resolve, or a spec directory that does not exist at that revision."""


class SpecDirMissing(RevisionError):
    """The revision exists, but the spec directory is not in its tree."""


@dataclass(frozen=True, kw_only=True, slots=True)
class SpecLocation:
    """A spec directory inside a git repository: the repository and the directory relative to its root."""

    repo: git.Repo
    relative: str  # posix path from the repository root; "" when the spec is the root itself
    # The same directory with the working tree's symlinks resolved (None: it resolves outside the
    # repository): read where a revision lacks `relative`, e.g. through a link nobody committed.
    resolved: str | None = None


def locate(spec_dir: Path) -> SpecLocation:
    """Find the git repository holding `spec_dir` (which need not exist in the working tree).

    The spec directory is named by its path inside the repository as the user wrote it, with
    symlinks inside the repository left unresolved: each revision resolves them in its own tree
    (`read_revision`), so a symlinked spec directory means the same path at the base and the head.
    """
    start = _existing_ancestor(spec_dir.absolute())
    try:
        repo = git.Repo(start, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise RevisionError(f"{spec_dir.as_posix()!r} is not inside a git repository") from None
    if repo.working_tree_dir is None:
        raise RevisionError(f"{repo.git_dir!r} is a bare repository; run meshc in a clone")
    root = os.path.realpath(repo.working_tree_dir)
    relative = _path_in_repo(Path(os.path.abspath(spec_dir)), root)
    if relative is None:
        raise RevisionError(f"{spec_dir.as_posix()!r} is outside the repository at {root!r}")
    return SpecLocation(
        repo=repo, relative=relative, resolved=_resolved_in_repo(Path(os.path.abspath(spec_dir)), root)
    )


def _path_in_repo(path: Path, root: str) -> str | None:
    """`path` relative to the repository root, or None when it lies outside.

    The deepest ancestor that is the root (through any symlinks above the repository) anchors the
    rest, kept as written. A path reached only through a link from outside is resolved whole.
    """
    for ancestor in (path, *path.parents):
        if os.path.realpath(ancestor) == root:
            relative = path.relative_to(ancestor).as_posix()
            return "" if relative == "." else relative
    return _resolved_in_repo(path, root)


def _resolved_in_repo(path: Path, root: str) -> str | None:
    """`path` with every symlink resolved, relative to the repository root; None when that is outside."""
    resolved = os.path.relpath(os.path.realpath(path), root)
    if resolved == os.pardir or resolved.startswith(os.pardir + os.sep):
        return None
    return "" if resolved == os.curdir else PurePosixPath(Path(resolved)).as_posix()


def _existing_ancestor(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def read_revision(
    location: SpecLocation, revision: str, blobs: dict[str, bytes] | None = None
) -> dict[str, bytes | Unreadable]:
    """The spec files at `revision` as relative path -> bytes or Unreadable, as `read_tree` reads a directory.

    `blobs`: blob id -> bytes of the files read so far (by this command); each blob is read from git once and
    added there. Revisions of a rollout share all but a few of their files, and each read costs two round trips
    to `git cat-file`: at 1,000 services ~0.2 s per revision.
    """
    tree = spec_tree(location, revision)
    files: dict[str, bytes | Unreadable] = {}
    mesh = _child(tree, MESH_FILE)
    if mesh is not None:
        files[MESH_FILE] = _read_entry(mesh, MESH_FILE, blobs)
    services = _child(tree, SERVICES_DIR)
    if services is None:
        files[SERVICES_DIR] = Unreadable(
            code="file-missing",
            message=f"no {SERVICES_DIR}/ directory; a mesh needs at least one services/<name>.yaml",
        )
    elif services.type != "tree":
        files[SERVICES_DIR] = _wrong_entry(services, SERVICES_DIR, "a directory")
    else:
        for entry in sorted(services, key=lambda e: e.name):
            relative = f"{SERVICES_DIR}/{entry.name}"
            # A directory not named like a spec file is not one, as in the directory reader.
            if not entry.name.startswith(".") and (entry.type == "blob" or entry.name.endswith(".yaml")):
                files[relative] = _read_entry(entry, relative, blobs)
    return files


def known_blobs(files: Mapping[str, bytes | Unreadable], blobs: dict[str, bytes]) -> None:
    """Add the files read from a working tree to `blobs` (see `read_revision`) under the ids git gives their bytes:
    a revision's files that are the same as the working tree's are then never read from git. The id is the bytes'
    own hash, as git computes it, so an uncommitted edit only adds a blob no revision names."""
    for data in files.values():
        if isinstance(data, bytes) and len(data) <= MAX_FILE_BYTES:
            blobs[blob_id(data)] = data


def blob_id(data: bytes) -> str:
    """The id git gives a blob of these bytes."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # noqa: S324 - git's own hash


def read_side_revision(location: SpecLocation, revision: str, relative: str) -> bytes | Unreadable | None:
    """A file beside the spec (rollout.yaml, the inventory) at `revision`, committed links followed as in a
    checkout: its bytes, None if absent there."""
    entry = _walk(spec_tree(location, revision), relative, f"at revision {revision!r}")
    return None if entry is None else _read_entry(entry, relative)


def _read_entry(
    entry: git.Object, relative: str, blobs: dict[str, bytes] | None = None
) -> bytes | Unreadable:
    if entry.type == "blob" and entry.mode in _BLOB_MODES:
        if blobs is None:
            return _read_blob(entry)
        known = blobs.get(entry.hexsha)  # the tree names each blob's id: no round trip to git to look it up
        if known is None:
            known = blobs[entry.hexsha] = _read_blob(entry)
        return known
    return _wrong_entry(entry, relative, "a regular file")


def _wrong_entry(entry: git.Object, relative: str, wanted: str) -> Unreadable:
    """Why a tree entry is not the spec entry it should be, in the directory reader's words."""
    if entry.type == "blob" and entry.mode == _SYMLINK_MODE:
        # A "link" longer than a path can be is no path: refused as leaving the spec, unread.
        return symlink_problem(
            relative, entry.data_stream.read() if entry.size <= _MAX_SYMLINK_BYTES else b"/"
        )
    kinds: dict[str | None, str] = {"tree": "a directory", "submodule": "a git submodule", "blob": "a file"}
    kind = kinds.get(entry.type, "not a regular file")
    fix = (
        "make it a directory of service files"
        if wanted == "a directory"
        else "remove it or make it a regular file"
    )
    return Unreadable(code="file-type", message=f"this is {kind}, not {wanted}; {fix}")


def read_worktree(spec_dir: Path) -> dict[str, bytes | Unreadable]:
    """The spec files in the working tree, uncommitted edits included."""
    # local: the pipeline is the one place a spec directory is opened
    from compiler.spec.load import spec_files

    return spec_files(spec_dir)


def spec_tree(location: SpecLocation, revision: str) -> git.Tree:
    """The spec directory's tree at `revision`, committed links followed; RevisionError for an unknown revision,
    SpecDirMissing where the revision has no such directory."""
    try:
        commit = location.repo.commit(revision)
    except (BadName, BadObject, ValueError, git.GitCommandError):
        raise RevisionError(
            f"unknown revision {revision!r} in {location.repo.working_tree_dir!r}; "
            "fetch it first (CI checkouts are often shallow: use fetch-depth: 0)"
        ) from None
    where = f"at revision {revision!r} ({commit.hexsha[:12]})"
    tree = _walk(commit.tree, location.relative, where)
    if (tree is None or tree.type != "tree") and location.resolved not in (None, location.relative):
        tree = _walk(commit.tree, location.resolved, where)  # reached through a link the revision lacks
    if tree is None or tree.type != "tree":
        raise SpecDirMissing(f"{location.relative!r} is not a directory {where}")
    return tree


def _walk(root: git.Tree, relative: str, where: str) -> git.Object | None:
    """The object at `relative` in `root`, following symlinks committed in the tree as the file
    system would in a checkout of it; None when a component does not exist.

    A link that leaves the repository (absolute, or `..` above the root) points at something git
    does not hold, and a link loop never ends: both are errors that name the link.
    """
    parts, trees, hops = list(PurePosixPath(relative).parts) if relative else [], [root], 0
    found: git.Object = root
    walked: list[str] = []
    while parts:
        name = parts.pop(0)
        if name in (".", ""):
            continue
        if name == "..":
            if len(trees) == 1:
                raise RevisionError(f"{relative!r} leads out of the repository {where}")
            trees.pop()
            walked.pop()
            found = trees[-1]
            continue
        entry = _child(trees[-1], name) if found.type == "tree" else None
        if entry is None:
            return None
        link = "/".join([*walked, name])
        if entry.mode == _SYMLINK_MODE:
            hops += 1
            target = _link_target(entry, link, where)
            if hops > _MAX_SYMLINK_HOPS:
                raise RevisionError(f"{link!r} is part of a symlink loop {where}")
            if target.startswith("/"):
                raise RevisionError(
                    f"{link!r} is a symlink to {target!r} {where}, outside the repository: git does not "
                    "hold what it points to; pass the directory it points to as --spec"
                )
            parts = [*PurePosixPath(target).parts, *parts]
            continue
        found = entry
        if entry.type == "tree":
            trees.append(entry)
            walked.append(name)
        elif parts:
            return None
    return found


def _link_target(blob: git.Blob, link: str, where: str) -> str:
    """The path a committed symlink holds (its blob's bytes)."""
    if blob.size > _MAX_SYMLINK_BYTES:
        raise RevisionError(f"{link!r} is a symlink {where} whose target is longer than a path can be")
    target: bytes = blob.data_stream.read()
    try:
        return target.decode()
    except UnicodeDecodeError:
        raise RevisionError(f"{link!r} is a symlink {where} whose target is not UTF-8") from None


def _child(tree: git.Tree, name: str) -> git.Object | None:
    try:
        return tree / name
    except KeyError:
        return None


def _read_blob(blob: git.Blob) -> bytes:
    # The size comes from the object header (`git cat-file --batch-check`): a blob over the limit
    # is never read, whatever its size. It stands as limit+1 bytes, the length read_tree caps an
    # oversized file at, so parse_document reports `file-too-large` at the file either way. A blob
    # within the limit is read whole: a partly read stream would desync git's cat-file pipe.
    if blob.size > MAX_FILE_BYTES:
        return OVERSIZED
    data: bytes = blob.data_stream.read()
    return data
