"""What meshc finds at the paths of its caches and its spare tree beside `output/` but did not write stays as it is.

The build still writes the tree a clean build writes (only slower), and says why on stderr.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from test_incremental import build, clean_tree, edit_spec, spare

from benchmarks.synth import generate
from compiler.cli import main
from compiler.output.cache import cache_path, read_cache
from compiler.output.disk import read_tree, scan_tree
from compiler.output.documents import documents_path, read_documents
from compiler.spec.load import spec_files
from compiler.targets import file_hashes


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
        assert _content(theirs) == snapshot
        err = capsys.readouterr().err
        assert f"meshc: warning: {theirs} is not a tree meshc left there" in err
        assert err.count("\n") == 1
    assert not list(out.parent.glob(f".{out.name}.meshc-new-*"))  # the previous tree went, as without a spare


def _unused_cache(spec: Path, out: Path) -> bool:
    return read_cache(out, scan_tree(out)) is None


def _unused_documents(spec: Path, out: Path) -> bool:
    return read_documents(out, file_hashes(spec_files(spec), spec.as_posix().rstrip("/"))) == {}


@pytest.mark.parametrize(
    ("which", "magic", "unused"),
    [(cache_path, b"meshc-cache", _unused_cache), (documents_path, b"meshc-documents", _unused_documents)],
)
@pytest.mark.parametrize("kind", ["directory", "symlink", "fifo", "foreign file"])
def test_a_cache_path_meshc_did_not_write_is_neither_read_nor_replaced(
    tmp_path: Path,
    which: Callable[[Path], Path],
    magic: bytes,
    unused: Callable[[Path, Path], bool],
    kind: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    spec = generate(tmp_path / "spec", 6, datacenters=2, clusters=2, deps=2, seed=4)
    out = tmp_path / "out"
    path = which(out)
    if kind == "directory":
        path.mkdir()
    elif kind == "symlink":
        (tmp_path / "elsewhere").write_bytes(magic + b" x\n{}")  # looks like meshc's, but behind a link
        path.symlink_to(tmp_path / "elsewhere")
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.write_bytes(b"my notes\n")
    assert main(["build", str(spec), "-o", str(out)]) == 0
    edit_spec(spec)
    assert main(["build", str(spec), "-o", str(out)]) == 0  # a FIFO is never opened: this would block
    assert unused(spec, out)
    assert os.path.lexists(path)
    if kind == "foreign file":
        assert path.read_bytes() == b"my notes\n"
    if kind == "symlink":
        assert path.is_symlink() and (tmp_path / "elsewhere").read_bytes() == magic + b" x\n{}"
    assert read_tree(out) == clean_tree(spec, tmp_path)
    warning = f"meshc: warning: {path} is not a file meshc wrote"
    assert capsys.readouterr().err.count(warning) == 2  # once a build


def test_no_warning_when_every_path_is_meshc_s(
    built: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    spec, out = built
    for port in ("8181", "8282"):
        _other_port(spec, "svc-0003", port)
        assert main(["build", str(spec), "-o", str(out)]) == 0
    assert capsys.readouterr().err == ""


# ------------------------------------------------------------------ extras inside the output


def _extras(out: Path, count: int) -> dict[str, bytes]:
    """`count` files meshc did not write, put into output `out` by hand."""
    made = {
        f"notes-{n:02}.txt" if n % 2 else f"puppet/mine-{n:02}.yaml": f"mine {n}\n".encode()
        for n in range(count)
    }
    for path, data in made.items():
        (out / path).write_bytes(data)
    return made


def test_the_files_a_build_removes_that_meshc_did_not_write_are_named_with_where_they_still_are(
    built: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec, out = built
    edit_spec(spec)
    build(
        spec, out
    )  # a spare tree now: the next build stages in it, and the previous output becomes the spare
    made = _extras(out, 2)
    capsys.readouterr()
    assert main(["build", str(spec), "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"{out}: 0 file(s) written, 2 removed\n"
    assert captured.err == (
        f"meshc: warning: {out}: removed 2 file(s) meshc had not written: notes-01.txt, puppet/mine-00.yaml; "
        f"until the next build they are still in {spare(out)}/ (the previous tree)\n"
    )
    assert {path: (spare(out) / path).read_bytes() for path in made} == made  # where the note says
    assert read_tree(out) == clean_tree(spec, tmp_path)


def test_extras_removed_with_no_spare_kept_are_said_to_be_deleted_and_a_long_list_is_cut(
    built: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec, out = built
    spare(out).write_text("my notes\n")  # not meshc's: the previous tree is removed, not kept there
    made = _extras(out, 12)
    capsys.readouterr()
    assert main(["build", str(spec), "-o", str(out)]) == 0
    err = capsys.readouterr().err.splitlines()
    named = ", ".join(sorted(made)[:10])
    assert err[-1] == (
        f"meshc: warning: {out}: removed 12 file(s) meshc had not written: {named} and 2 more; they are deleted"
    )
    assert spare(out).read_text() == "my notes\n"


def test_the_files_meshc_wrote_and_no_longer_renders_are_not_named(tmp_path: Path) -> None:
    from compiler.output.manifest import MANIFEST, manifest_json
    from compiler.output.writer import write_tree

    out = tmp_path / "out"
    files = {"a.yaml": b"a\n", "b.yaml": b"b\n"}
    digests = {path: hashlib.sha256(data).hexdigest() for path, data in files.items()}
    write_tree(out, {**files, MANIFEST: manifest_json(digests, {})})
    (out / "mine.txt").write_bytes(b"mine\n")
    result = write_tree(out, {"a.yaml": b"a\n", MANIFEST: manifest_json({"a.yaml": digests["a.yaml"]}, {})})
    assert result.removed == ("b.yaml", "mine.txt")
    assert result.notes == (f"{out}: removed 1 file(s) meshc had not written: mine.txt; they are deleted",)
