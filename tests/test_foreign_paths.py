"""What meshc finds at the paths of its caches and its spare tree beside `output/` but did not write stays as it is.

The build still writes the tree a clean build writes (only slower), and says why on stderr.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from test_incremental import build, clean_tree, edit_spec, spare

from benchmarks.synth import generate
from compiler.cli import main
from compiler.output.cache import cache_path
from compiler.output.disk import read_tree
from compiler.output.documents import documents_path


@pytest.fixture
def built(tmp_path: Path) -> tuple[Path, Path]:
    spec = generate(tmp_path / "spec", 8, datacenters=2, clusters=2, deps=2, seed=3)
    out = tmp_path / "out"
    build(spec, out)
    return spec, out


def _other_port(spec: Path, service: str, port: str) -> None:
    path = spec / "services" / f"{service}.yaml"
    text = path.read_text()
    assert f"\nport: {port}\n" not in text
    path.write_text(re.sub(r"\nport: \d+\n", f"\nport: {port}\n", text, count=1))


def test_the_first_rebuild_keeps_the_previous_tree_as_the_spare(built: tuple[Path, Path]) -> None:
    spec, out = built
    before = read_tree(out)
    assert not os.path.lexists(spare(out))
    edit_spec(spec)
    build(spec, out)
    assert read_tree(spare(out)) == before  # the output as it was, renamed whole: never a half-made tree
    assert not list(out.parent.glob(f".{out.name}.meshc-new-*"))


def _content(path: Path) -> object:
    """What is at `path`, whatever its kind: a link's target, a directory's files, a file's bytes."""
    if path.is_symlink():
        return os.readlink(path)
    return read_tree(path) if path.is_dir() else path.read_bytes()


@pytest.mark.parametrize("kind", ["file", "directory", "symlink"])
def test_something_else_at_the_spare_path_is_left_alone(
    built: tuple[Path, Path], tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    spec, out = built
    theirs = spare(out)
    if kind == "file":
        theirs.write_text("my notes\n")
    elif kind == "directory":
        theirs.mkdir()
        (theirs / "notes.txt").write_text("my notes\n")
    else:
        theirs.symlink_to(tmp_path / "elsewhere")
    snapshot = _content(theirs)
    for run, port in enumerate(("8181", "8282")):  # twice: the second rebuild must not recycle it either
        _other_port(spec, "svc-0002", port)
        assert main(["build", str(spec), "-o", str(out)]) == 0
        assert read_tree(out) == clean_tree(spec, tmp_path), run
        now = (
            os.readlink(theirs)
            if kind == "symlink"
            else read_tree(theirs)
            if kind == "directory"
            else theirs.read_bytes()
        )
        assert now == snapshot
        err = capsys.readouterr().err
        assert f"meshc: warning: {theirs} is not a tree meshc left there" in err
        assert err.count("\n") == 1
    assert not list(out.parent.glob(f".{out.name}.meshc-new-*"))  # the previous tree went, as without a spare


@pytest.mark.parametrize("which", [cache_path, documents_path])
def test_a_file_meshc_did_not_write_at_a_cache_path_is_left_alone(
    built: tuple[Path, Path], tmp_path: Path, which, capsys: pytest.CaptureFixture[str]
) -> None:
    spec, out = built
    which(out).write_text("not meshc's\n")
    edit_spec(spec)
    assert main(["build", str(spec), "-o", str(out)]) == 0
    assert which(out).read_text() == "not meshc's\n"
    assert read_tree(out) == clean_tree(spec, tmp_path)
    err = capsys.readouterr().err
    assert f"meshc: warning: {which(out)} is not a file meshc wrote" in err


def test_no_warning_when_every_path_is_meshc_s(
    built: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    spec, out = built
    for port in ("8181", "8282"):
        _other_port(spec, "svc-0003", port)
        assert main(["build", str(spec), "-o", str(out)]) == 0
    assert capsys.readouterr().err == ""
