"""The fsync helper process (compiler.output.flusher): a big write's files are fsynced by it as they are written, its
first failure fails the write before anything is published, and a lost helper means the build fsyncs itself."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from conftest import ROOT

from compiler.diagnostics import EnvironmentFailure
from compiler.emit import Artifact
from compiler.output import durable, flusher, staging
from compiler.output.disk import read_tree
from compiler.output.manifest import render_tree
from compiler.output.writer import write_files, write_tree


def files(root: Path, count: int) -> list[str]:
    (root / "d").mkdir(parents=True)
    for n in range(count):
        (root / "d" / f"{n}.txt").write_text(str(n))
    return [str(root / "d" / f"{n}.txt") for n in range(count)]


def started() -> flusher.Flusher:
    helper = flusher.start_flusher()
    assert helper is not None
    return helper


def test_the_helper_answers_once_everything_is_flushed(tmp_path: Path) -> None:
    helper = started()
    for path in files(tmp_path, 300):
        helper.file(path)
    pid = helper.pid
    assert helper.finish([str(tmp_path / "d"), str(tmp_path)]) is True
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # answered and reaped


def test_the_helper_reports_the_first_file_it_cannot_flush(tmp_path: Path) -> None:
    helper = started()
    for path in files(tmp_path, 10):
        helper.file(path)
    helper.file(str(tmp_path / "gone.txt"))
    with pytest.raises(OSError) as raised:
        helper.finish([str(tmp_path)])
    assert raised.value.errno == errno.ENOENT and raised.value.filename == str(tmp_path / "gone.txt")


def test_the_helper_reports_a_directory_it_cannot_flush(tmp_path: Path) -> None:
    helper = started()
    for path in files(tmp_path, 3):
        helper.file(path)
    with pytest.raises(OSError) as raised:
        helper.finish([str(tmp_path / "d"), str(tmp_path / "no-such-directory")])
    assert raised.value.errno == errno.ENOENT and raised.value.filename == str(tmp_path / "no-such-directory")


def test_a_lost_helper_says_so(tmp_path: Path) -> None:
    helper = started()
    os.kill(helper.pid, signal.SIGKILL)
    for path in files(tmp_path, 200):  # a write may find the pipe closed, or the answer never comes
        helper.file(path)
    assert helper.finish([str(tmp_path / "d")]) is False
    assert helper.pid == -1  # reaped


# A build that starts a helper, sends it a file and is killed (SIGKILL, or its forked worker killed by the build as
# it gives up on a Ctrl-C or SIGTERM). The file is a FIFO: opening it to fsync waits for a writer that never comes.
_BUILD_KILLED = """
import os, sys
from compiler.output import flusher

helper = flusher.start_flusher()
helper.file(sys.argv[1])
helper._send()
print(helper.pid, flush=True)
os._exit(0)
"""


def test_a_helper_whose_build_is_gone_leaves_at_once(tmp_path: Path) -> None:
    # An orphan flushing what nobody will publish: it left only once done, here never.
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    result = subprocess.run(
        [sys.executable, "-c", _BUILD_KILLED, str(fifo)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    pid = int(result.stdout)
    try:
        deadline = time.monotonic() + 10
        while _running(pid):
            assert time.monotonic() < deadline, "the helper outlives its build"
            time.sleep(0.02)
    finally:
        if _running(pid):
            os.kill(pid, signal.SIGKILL)


def _running(pid: int) -> bool:
    """Whether process `pid` is there and not a zombie (an orphan's is init's to reap)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_write_whose_helper_is_lost_flushes_everything_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, helpers: list[flusher.Flusher]
) -> None:
    flushed: list[tuple[str, int]] = []

    def record(paths: Sequence[str | Path], flags: int) -> None:
        flushed.extend((str(path), flags) for path in paths)

    monkeypatch.setattr(durable, "fsync_paths", record)
    original = flusher.Flusher.finish

    def killed_first(self: flusher.Flusher, directories: Sequence[str]) -> bool:
        os.kill(self.pid, signal.SIGKILL)
        return original(self, directories)

    monkeypatch.setattr(flusher.Flusher, "finish", killed_first)
    out = tmp_path / "out"
    tree = many(staging.FLUSH_FROM + 20)
    write_tree(out, tree)
    assert read_tree(out) == tree
    root = f"{tmp_path}/.out.meshc-new-{os.getpid()}/"
    assert sorted(p.removeprefix(root) for p, flags in flushed if flags == os.O_RDONLY) == sorted(tree)
    assert f"{tmp_path}/.out.meshc-new-{os.getpid()}/t0" in [
        p for p, flags in flushed if flags != os.O_RDONLY
    ]


def many(count: int, version: str = "1") -> dict[str, bytes]:
    return render_tree(
        [Artifact(path=f"t{n % 7}/f{n}.txt", data=f"{version} {n}\n".encode()) for n in range(count)]
    )


@pytest.fixture
def helpers(monkeypatch: pytest.MonkeyPatch, real_fsync: None) -> Iterator[list[flusher.Flusher]]:
    """The real helper, each one started recorded."""
    made: list[flusher.Flusher] = []

    def recorded() -> flusher.Flusher | None:
        helper = flusher.start_flusher()
        if helper is not None:
            made.append(helper)
        return helper

    monkeypatch.setattr(durable, "background_flusher", recorded)
    yield made


def test_a_big_write_is_flushed_by_the_helper(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, helpers: list[flusher.Flusher]
) -> None:
    answers: list[bool] = []
    original = flusher.Flusher.finish
    monkeypatch.setattr(
        flusher.Flusher,
        "finish",
        lambda self, directories: answers.append(original(self, directories)) or answers[-1],
    )
    out = tmp_path / "out"
    tree = many(staging.FLUSH_FROM + 50)
    write_tree(out, tree)
    assert read_tree(out) == tree
    assert answers == [True]  # the helper answered: nothing was fsynced here instead
    assert len(helpers) == 1 and helpers[0].pid == -1  # answered and reaped
    assert len(helpers[0].sent) == len(tree)  # every file, the ones before FLUSH_FROM too


def test_a_small_write_needs_no_helper(tmp_path: Path, helpers: list[flusher.Flusher]) -> None:
    write_tree(tmp_path / "out", many(staging.FLUSH_FROM - 10))
    assert helpers == []


def test_a_failure_the_helper_reports_fails_the_write_and_leaves_the_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, helpers: list[flusher.Flusher]
) -> None:
    out = tmp_path / "out"
    write_tree(out, many(20))
    before = read_tree(out)
    original = flusher.Flusher.file

    def and_a_lost_file(self: flusher.Flusher, path: str) -> None:
        original(self, path)
        if path.endswith("/f300.txt"):
            original(self, path + ".lost")  # a file the helper cannot open, as if the disk lost it

    monkeypatch.setattr(flusher.Flusher, "file", and_a_lost_file)
    with pytest.raises(EnvironmentFailure, match="no such file or directory"):
        write_tree(out, many(staging.FLUSH_FROM + 100, version="2"))
    assert read_tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging tree left


def test_a_write_given_up_leaves_no_helper_behind(tmp_path: Path, helpers: list[flusher.Flusher]) -> None:
    def failing() -> Iterator[staging.NewFile]:
        for path, data in many(staging.FLUSH_FROM + 10).items():
            yield staging.new_file(path, data)
        raise RuntimeError("a renderer failed")

    with pytest.raises(RuntimeError):
        write_files(tmp_path / "out", failing())
    assert len(helpers) == 1 and helpers[0].pid == -1
    assert not (tmp_path / "out").exists()
