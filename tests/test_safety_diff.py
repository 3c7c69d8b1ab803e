"""Issue 9, the review flow: symlinked spec directories, oversized blobs, and a diff that tells the whole cost."""

from __future__ import annotations

import json
import os
import re
import shutil
import tracemalloc
from pathlib import Path

import pytest

from compiler.cli import main
from compiler.diff import diff_revisions
from compiler.gitsource import RevisionError, locate, read_revision
from compiler.spec.load import MAX_FILE_BYTES, read_tree
from tests.conftest import EXAMPLE
from tests.test_gitsource import commit, git, make_repo

SPEC = "mesh-spec"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["diff", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{path.name} no longer holds {old!r}"
    path.write_text(text.replace(old, new, 1))


# ---------------------------------------------------------------- item 9: symlinked spec directory

def _linked_repo(root: Path) -> tuple[Path, str]:
    """A repo whose spec directory `mesh-spec` is a committed symlink to specs/v1, then re-pointed to
    a new specs/v2 that changes one timeout; returns the repo and the first commit."""
    repo = make_repo(root, spec_dir="specs/v1")
    (repo / SPEC).symlink_to("specs/v1")
    base = commit(repo, "spec dir is a link")
    shutil.copytree(repo / "specs/v1", repo / "specs/v2")
    _replace(repo / "specs/v2/services/upload.yaml", "timeout: 2s", "timeout: 3s")
    (repo / SPEC).unlink()
    (repo / SPEC).symlink_to("specs/v2")
    return repo, base


def test_a_symlinked_spec_dir_is_resolved_in_each_revisions_own_tree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo, base = _linked_repo(tmp_path / "repo")
    for head in (None, commit(repo, "re-point the link")):  # the working tree, then the same state committed
        code, out, err = run(capsys, "--base", base, *(["--head", head] if head else []), "--spec", str(repo / SPEC), "--format", "json")
        report = json.loads(out)
        assert code == 0, err
        assert report["notes"] == []
        assert {t["status"] for t in report["targets"]} == {"changed"}
        assert {t["target"].rsplit("/", 1)[-1] for t in report["targets"]} == {"upload"}
        assert [(s["file"], s["status"]) for s in report["spec"]] == [("services/upload.yaml", "changed")]


def test_a_spec_dir_symlink_leaving_the_repository_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outside = tmp_path / "elsewhere"
    shutil.copytree(EXAMPLE, outside)
    repo = make_repo(tmp_path / "repo", spec_dir="specs")
    (repo / SPEC).symlink_to(outside)
    head = commit(repo, "link out")
    code, out, err = run(capsys, "--base", head, "--spec", str(repo / SPEC))
    assert (code, out) == (2, "")
    assert err.count("\n") == 1
    assert f"meshc: error: 'mesh-spec' is a symlink to '{outside}' at revision '{head}'" in err
    assert "outside the repository" in err


def test_a_spec_dir_symlink_loop_is_a_clear_error(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", spec_dir="specs")
    (repo / "a").symlink_to("b")
    (repo / "b").symlink_to("a")
    commit(repo, "loop")
    with pytest.raises(RevisionError, match=r"'(a|b)' is part of a symlink loop at revision 'HEAD'"):
        read_revision(locate(repo / "a"), "HEAD")


def test_a_symlink_above_the_repository_does_not_change_the_spec_path(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    (tmp_path / "via").symlink_to(repo)
    assert locate(tmp_path / "via" / SPEC).relative == SPEC
    assert read_revision(locate(tmp_path / "via" / SPEC), "HEAD") == read_tree(EXAMPLE)


# ---------------------------------------------------------------- item 9: oversized blobs are never read

def test_an_oversized_blob_is_reported_at_its_file_without_being_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = make_repo(tmp_path / "repo")
    size = 48 * MAX_FILE_BYTES  # 48 MiB of one byte: git stores it compressed to a few KiB
    big = repo / SPEC / "services/big.yaml"
    with big.open("wb") as handle:
        for _ in range(48):
            handle.write(b"#" * MAX_FILE_BYTES)
    head = commit(repo, "a huge service file")
    big.unlink()  # the working tree no longer has it: only the blob at `head` exists
    tracemalloc.start()
    try:
        files = read_revision(locate(repo / SPEC), head)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(files["services/big.yaml"]) == MAX_FILE_BYTES + 1 < size
    assert peak < 4 * MAX_FILE_BYTES, f"reading the revision allocated {peak} bytes for a {size}-byte blob"
    code, out, err = run(capsys, "--base", "HEAD~1", "--head", head, "--spec", str(repo / SPEC))
    assert (code, out) == (2, "")
    assert re.fullmatch(rf"{head}:{re.escape(str(repo / SPEC))}/services/big.yaml:1:1: error: file is larger than 1024 KiB; "
                        r"split it or trim it  \[file-too-large\]\nFound 1 error in 1 file\n", err), err
