"""Reading the spec at a git revision straight from git objects."""

from __future__ import annotations

import atexit
import functools
import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from compiler.gitsource import RevisionError, SpecDirMissing, locate, read_revision, read_worktree
from compiler.spec.document import MAX_FILE_BYTES
from compiler.spec.load import read_tree
from tests.conftest import EXAMPLE


def git(repo: Path, *args: str) -> str:
    """Run git in `repo` as a fixed, local identity; return stdout."""
    command = [
        "git",
        "-c",
        "user.name=meshc test",
        "-c",
        "user.email=test@meshc.invalid",
        "-c",
        "commit.gpgsign=false",
        *args,
    ]
    return subprocess.run(command, cwd=repo, check=True, capture_output=True, text=True).stdout


def make_repo(root: Path, spec_dir: str = "mesh-spec") -> Path:
    """A fresh git repo holding a copy of the example spec in `spec_dir`, committed once.

    A copy of one such repository per test process: copying it costs a tenth of `git init`, `add` and
    `commit` (~0.13 s wall), and ~50 tests start from it. Every copy is a whole repository of its own.
    """
    shutil.copytree(_example_repo(spec_dir), root, symlinks=True, dirs_exist_ok=True)
    return root


@functools.cache
def _example_repo(spec_dir: str) -> Path:
    """The repository make_repo copies, made on first use and removed when the test process exits."""
    root = Path(tempfile.mkdtemp(prefix="meshc-example-repo-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    git(root, "init", "-q", "-b", "main")
    # rollout.yaml pins commits of this project's history, which a fresh repository does not have
    shutil.copytree(
        EXAMPLE,
        root / spec_dir if spec_dir else root,
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns("rollout.yaml"),
    )
    commit(root, "example spec")
    return root


def commit(repo: Path, message: str) -> str:
    """Commit everything in the repo; return the new HEAD."""
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "HEAD").strip()


def repo_state(repo: Path) -> dict[str, str]:
    """Hashes of HEAD, the refs, the index and every working-tree file (read without running git)."""
    state = {}
    for path in sorted(repo.rglob("*")):
        relative = path.relative_to(repo).as_posix()
        if path.is_file() and (
            not relative.startswith(".git/")
            or relative in (".git/HEAD", ".git/index")
            or relative.startswith(".git/refs/")
        ):
            state[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
    return state


def test_revision_reads_exactly_what_the_directory_holds(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    assert read_revision(locate(repo / "mesh-spec"), "HEAD") == read_tree(EXAMPLE)


def test_older_revisions_and_uncommitted_edits(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    first = git(repo, "rev-parse", "HEAD").strip()
    (repo / "mesh-spec/services/zz-new.yaml").write_text("service: zz-new\n")
    (repo / "mesh-spec/services/auth.yaml").unlink()
    commit(repo, "change")
    (repo / "mesh-spec/mesh.yaml").write_bytes(b"# uncommitted\n")
    location = locate(repo / "mesh-spec")
    at_first, at_head, worktree = (
        read_revision(location, first),
        read_revision(location, "HEAD"),
        read_worktree(repo / "mesh-spec"),
    )
    assert "services/auth.yaml" in at_first and "services/zz-new.yaml" not in at_first
    assert "services/auth.yaml" not in at_head and at_head["services/zz-new.yaml"] == b"service: zz-new\n"
    assert at_head["mesh.yaml"] == at_first["mesh.yaml"] != worktree["mesh.yaml"] == b"# uncommitted\n"
    assert read_revision(location, "main~1") == at_first


def test_blobs_known_from_the_working_tree_are_not_read_from_git_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rollout build seeds its blob cache with the working tree's files (gitsource.known_blobs): a revision reads
    from git only the files whose bytes the working tree does not hold, and an uncommitted edit never stands in for
    the committed file."""
    import compiler.gitsource as gitsource

    repo = make_repo(tmp_path / "repo")
    (repo / "mesh-spec/services/auth.yaml").write_bytes(b"service: auth\n# uncommitted\n")
    (repo / "mesh-spec/services/zz-new.yaml").write_text("service: zz-new\n")  # not in HEAD at all
    blobs: dict[str, bytes] = {}
    gitsource.known_blobs(read_worktree(repo / "mesh-spec"), blobs)
    read: list[str] = []
    original = gitsource._read_blob

    def counted(blob: object) -> bytes:
        read.append(blob.path)  # type: ignore[attr-defined]
        return original(blob)  # type: ignore[arg-type]

    monkeypatch.setattr(gitsource, "_read_blob", counted)
    location = locate(repo / "mesh-spec")
    seeded = read_revision(location, "HEAD", blobs)
    assert read == ["mesh-spec/services/auth.yaml"]  # the one file the working tree changed
    read.clear()
    assert seeded == read_revision(location, "HEAD") == read_tree(EXAMPLE)  # the committed bytes, read whole
    assert len(read) == len(seeded)


def test_reading_changes_nothing_in_the_repository(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    (repo / "mesh-spec/services/auth.yaml").write_text("edited but not staged\n")
    before = repo_state(repo)
    read_revision(locate(repo / "mesh-spec"), "HEAD")
    assert repo_state(repo) == before


def test_spec_at_the_repository_root_and_from_a_subdirectory_path(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", spec_dir="")
    location = locate(repo)
    assert location.relative == ""
    assert read_revision(location, "HEAD") == read_tree(EXAMPLE)
    assert locate(repo / "services").relative == "services"


def test_dotfiles_and_subdirectories_are_not_spec_files(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    services = repo / "mesh-spec/services"
    (services / ".hidden.yaml").write_text("x: 1\n")
    (services / "nested").mkdir()
    (services / "nested/a.yaml").write_text("x: 1\n")
    commit(repo, "noise")
    assert read_revision(locate(repo / "mesh-spec"), "HEAD") == read_tree(EXAMPLE)


def test_oversized_files_are_capped_like_the_directory_reader(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    (repo / "mesh-spec/services/big.yaml").write_bytes(b"#" * (MAX_FILE_BYTES + 100))
    commit(repo, "big")
    (repo / "mesh-spec/services/edge-size.yaml").write_bytes(b"#" * MAX_FILE_BYTES)  # exactly the limit: read
    commit(repo, "edge")
    files = read_revision(locate(repo / "mesh-spec"), "HEAD")
    # Both readers hand parse_document limit+1 bytes for an oversized file (the blob is not even read).
    assert (
        len(files["services/big.yaml"])
        == len(read_tree(repo / "mesh-spec")["services/big.yaml"])
        == MAX_FILE_BYTES + 1
    )
    assert files["services/edge-size.yaml"] == read_tree(repo / "mesh-spec")["services/edge-size.yaml"]


def test_unknown_revision_and_missing_spec_dir_are_clear_errors(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    with pytest.raises(RevisionError, match=r"unknown revision 'no-such-branch'"):
        read_revision(locate(repo / "mesh-spec"), "no-such-branch")
    with pytest.raises(SpecDirMissing, match=r"'specs' is not a directory at revision 'HEAD'"):
        read_revision(locate(repo / "specs"), "HEAD")
    with pytest.raises(SpecDirMissing):
        read_revision(locate(repo / "mesh-spec/mesh.yaml"), "HEAD")  # a file, not a directory


def test_outside_any_repository(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    with pytest.raises(RevisionError, match="not inside a git repository"):
        locate(tmp_path / "plain")
