"""Read a spec tree at any git revision straight from git objects: no checkout, worktree or index change."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import git
from gitdb.exc import BadName, BadObject

from compiler.spec.load import MAX_FILE_BYTES, MESH_FILE, SERVICES_DIR, Unreadable, symlink_problem

_BLOB_MODES = (0o100644, 0o100755)  # regular files; symlinks and submodules are not spec files
_LINK_MODE = 0o120000


class RevisionError(Exception):
    """A revision git cannot resolve, or a spec directory that does not exist at that revision."""


class SpecDirMissing(RevisionError):
    """The revision exists, but the spec directory is not in its tree."""


@dataclass(frozen=True, kw_only=True, slots=True)
class SpecLocation:
    """A spec directory inside a git repository: the repository and the directory relative to its root."""

    repo: git.Repo
    relative: str  # posix path from the repository root; "" when the spec is the root itself


def locate(spec_dir: Path) -> SpecLocation:
    """Find the git repository holding `spec_dir` (which need not exist in the working tree)."""
    start = _existing_ancestor(spec_dir.absolute())
    try:
        repo = git.Repo(start, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise RevisionError(f"{spec_dir.as_posix()!r} is not inside a git repository") from None
    if repo.working_tree_dir is None:
        raise RevisionError(f"{repo.git_dir!r} is a bare repository; run meshc in a clone")
    root = os.path.realpath(repo.working_tree_dir)
    relative = os.path.relpath(os.path.realpath(spec_dir.absolute()), root)
    if relative == os.curdir:
        relative = ""
    if relative.startswith(os.pardir):
        raise RevisionError(f"{spec_dir.as_posix()!r} is outside the repository at {root!r}")
    return SpecLocation(repo=repo, relative=PurePosixPath(Path(relative)).as_posix() if relative else "")


def _existing_ancestor(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def read_revision(location: SpecLocation, revision: str) -> dict[str, bytes | Unreadable]:
    """The spec files at `revision` as relative path -> bytes or Unreadable, exactly as `read_tree` reads a directory."""
    tree = _spec_tree(location, revision)
    files: dict[str, bytes | Unreadable] = {}
    mesh = _child(tree, MESH_FILE)
    if mesh is not None:
        files[MESH_FILE] = _read_entry(mesh, MESH_FILE)
    services = _child(tree, SERVICES_DIR)
    if services is None:
        files[SERVICES_DIR] = Unreadable(code="file-missing", message=f"no {SERVICES_DIR}/ directory; a mesh needs at least one services/<name>.yaml")
    elif services.type != "tree":
        files[SERVICES_DIR] = _wrong_entry(services, SERVICES_DIR, "a directory")
    else:
        for entry in sorted(services, key=lambda e: e.name):
            relative = f"{SERVICES_DIR}/{entry.name}"
            # A directory not named like a spec file is not one, as in the directory reader.
            if not entry.name.startswith(".") and (entry.type == "blob" or entry.name.endswith(".yaml")):
                files[relative] = _read_entry(entry, relative)
    return files


def _read_entry(entry: git.Object, relative: str) -> bytes | Unreadable:
    if entry.type == "blob" and entry.mode in _BLOB_MODES:
        return _read_blob(entry)
    return _wrong_entry(entry, relative, "a regular file")


def _wrong_entry(entry: git.Object, relative: str, wanted: str) -> Unreadable:
    """Why a tree entry is not the spec entry it should be, in the directory reader's words."""
    if entry.type == "blob" and entry.mode == _LINK_MODE:
        return symlink_problem(relative, entry.data_stream.read(4096))
    kind = {"tree": "a directory", "submodule": "a git submodule", "blob": "a file"}.get(entry.type, "not a regular file")
    fix = "make it a directory of service files" if wanted == "a directory" else "remove it or make it a regular file"
    return Unreadable(code="file-type", message=f"this is {kind}, not {wanted}; {fix}")


def read_worktree(spec_dir: Path) -> dict[str, bytes | Unreadable]:
    """The spec files in the working tree, uncommitted edits included."""
    from compiler.pipeline import spec_files  # local: the pipeline is the one place a spec directory is opened

    return spec_files(spec_dir)


def _spec_tree(location: SpecLocation, revision: str) -> git.Tree:
    try:
        commit = location.repo.commit(revision)
    except (BadName, BadObject, ValueError, git.GitCommandError):
        raise RevisionError(f"unknown revision {revision!r} in {location.repo.working_tree_dir!r}; "
                            "fetch it first (CI checkouts are often shallow: use fetch-depth: 0)") from None
    if not location.relative:
        return commit.tree
    try:
        tree = commit.tree / location.relative
    except KeyError:
        tree = None
    if tree is None or tree.type != "tree":
        raise SpecDirMissing(f"{location.relative!r} is not a directory at revision {revision!r} ({commit.hexsha[:12]})")
    return tree


def _child(tree: git.Tree, name: str) -> git.Object | None:
    try:
        return tree / name
    except KeyError:
        return None


def _read_blob(blob: git.Blob) -> bytes:
    # Read whole (a partly read stream would desync git's cat-file pipe), then cap as read_tree does,
    # so an oversized file gets the same diagnostic either way.
    return blob.data_stream.read()[: MAX_FILE_BYTES + 1]
