"""Read a spec tree at any git revision straight from git objects: no checkout, worktree or index change."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import git
from gitdb.exc import BadName, BadObject

from compiler.spec.load import MAX_FILE_BYTES, MESH_FILE, SERVICES_DIR, read_tree

_BLOB_MODES = (0o100644, 0o100755)  # regular files; symlinks and submodules are not spec files


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


def read_revision(location: SpecLocation, revision: str) -> dict[str, bytes]:
    """The spec files at `revision` as relative path -> bytes, exactly as `read_tree` reads a directory."""
    tree = _spec_tree(location, revision)
    files: dict[str, bytes] = {}
    mesh = _child(tree, MESH_FILE)
    if mesh is not None and mesh.type == "blob" and mesh.mode in _BLOB_MODES:
        files[MESH_FILE] = _read_blob(mesh)
    services = _child(tree, SERVICES_DIR)
    if services is not None and services.type == "tree":
        for blob in sorted(services.blobs, key=lambda b: b.name):
            if blob.mode in _BLOB_MODES and not blob.name.startswith("."):
                files[f"{SERVICES_DIR}/{blob.name}"] = _read_blob(blob)
    return files


def read_worktree(spec_dir: Path) -> dict[str, bytes]:
    """The spec files in the working tree, uncommitted edits included."""
    if not spec_dir.is_dir():
        raise FileNotFoundError(f"spec directory {spec_dir.as_posix()!r} does not exist")
    return read_tree(spec_dir)


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
