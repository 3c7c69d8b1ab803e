"""The output's scan and the spare's listing made by a forked child (compiler.output.prescan): the very entries an
in-process scan finds, an in-process scan whenever the child fails, and no child left behind."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from benchmarks.synth import generate
from compiler import incremental
from compiler.output import prescan
from compiler.output import spare as spare_module
from compiler.output.disk import list_tree, scan_tree
from compiler.spec import load


@pytest.fixture(autouse=True)
def any_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """A child for any output with a MANIFEST.json, however small."""
    monkeypatch.setattr(prescan, "PRESCAN_FROM_BYTES", 1)


def odd_tree(root: Path) -> Path:
    """Regular files of several sizes, nested and empty directories, a symlink, a FIFO and odd names."""
    (root / "a" / "b").mkdir(parents=True)
    (root / "MANIFEST.json").write_text("{}")
    (root / "empty").mkdir()
    (root / "a" / "b" / "deep.yaml").write_bytes(b"x" * 5000)
    (root / "a" / "one.json").write_text("{}")
    (root / "blank").write_bytes(b"")
    (root / "with space\tand tab é").write_text("unicode")
    (root / "link").symlink_to("a/one.json")
    os.mkfifo(root / "fifo")
    return root


def spare_of(tmp_path: Path) -> Path:
    spare = odd_tree(tmp_path / "spare")
    os.link(spare / "a" / "one.json", spare / "hard")
    return spare


def test_the_child_finds_what_an_in_process_scan_finds(tmp_path: Path) -> None:
    real, spare = odd_tree(tmp_path / "out"), spare_of(tmp_path)
    (spare / "a" / "b" / "deep.yaml").unlink()
    os.link(real / "a" / "b" / "deep.yaml", spare / "a" / "b" / "deep.yaml")  # the output's very file
    with prescan.prescanned(real, spare) as scans:
        assert scans.pid is not None  # the scans come from a child
        scanned, listed = scans.scan(), scans.listing()
    assert listed is not None
    assert scanned == scan_tree(real) and listed == spare_module.listed(scanned, list_tree(spare))
    assert listed.linked == {"a/b/deep.yaml"}  # what the writer relinks nothing for, sent as paths alone
    assert listed.against is scanned  # the scan the links hold for: the writer uses them over that one only
    assert listed.others.keys() == list_tree(spare).keys() - {"a/b/deep.yaml"}
    assert {type(entry) for entry in [*scanned.values(), *listed.others.values()]} == {prescan.OnDisk}
    assert scanned["fifo"].kind == "named pipe (FIFO)" and scanned["link"].kind == "symlink"


def test_without_a_spare_there_is_no_listing(tmp_path: Path) -> None:
    real = odd_tree(tmp_path / "out")
    with prescan.prescanned(real, tmp_path / "no-spare") as scans:
        assert scans.scan() == scan_tree(real)
        assert scans.listing() is None
    with prescan.prescanned(tmp_path / "absent", tmp_path / "no-spare") as scans:
        assert scans.pid is None  # no output, no child
        assert scans.scan() == {}


def test_a_failing_child_means_an_in_process_scan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real, spare = odd_tree(tmp_path / "out"), spare_of(tmp_path)
    parent = os.getpid()

    def scan_in_parent_only(root: Path) -> dict[str, prescan.OnDisk]:
        if os.getpid() != parent:
            raise OSError("the child cannot read")
        return scan_tree(root)

    monkeypatch.setattr(prescan, "scan_tree", scan_in_parent_only)
    with prescan.prescanned(real, spare) as scans:
        assert scans.scan() == scan_tree(real)
        assert scans.listing() is None  # the child sent nothing: the writer lists the spare itself


def never_done() -> bytes:
    """A job the child is still at when the test kills it: the kill comes before any frame, whatever the load."""
    time.sleep(3600)
    return b""


def test_a_killed_child_means_an_in_process_scan_and_is_reaped(tmp_path: Path) -> None:
    real, spare = odd_tree(tmp_path / "out"), spare_of(tmp_path)
    with prescan.prescanned(real, spare, never_done) as scans:
        assert scans.pid is not None
        pid = scans.pid
        os.kill(pid, signal.SIGKILL)
        assert scans.job_result() is None
        assert scans.scan() == scan_tree(real)
        assert scans.listing() is None
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reaped: no zombie is left


def test_a_child_still_at_work_is_killed_and_reaped_when_the_build_ends(tmp_path: Path) -> None:
    real, spare = odd_tree(tmp_path / "out"), spare_of(tmp_path)
    with prescan.prescanned(real, spare) as scans:
        pid = scans.pid
    assert pid is not None and scans.pid is None and scans.fd is None and scans.memory is None
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def test_a_frame_cut_short_is_no_frame(tmp_path: Path) -> None:
    real, spare = odd_tree(tmp_path / "out"), spare_of(tmp_path)
    with prescan.prescanned(real, spare) as scans:
        scans.scan()
        assert scans.memory is not None and scans.pid is not None
        os.waitpid(scans.pid, 0)  # both frames written
        scans.pid = None
        os.ftruncate(
            scans.memory, scans.offset + 3
        )  # the listing's frame, as a child killed mid-write leaves it
        assert scans.listing() is None


def test_a_rebuild_takes_the_output_scan_from_the_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = generate(
        tmp_path / "spec", 30, datacenters=2, clusters=2, deps=2, seed=5
    )  # a one-service edit: partial
    out = tmp_path / "out"
    incremental.build_output(spec, out)
    parent = os.getpid()
    listed: list[spare_module.Listed | None] = []

    def not_in_the_parent(root: Path) -> dict[str, prescan.OnDisk]:
        assert os.getpid() != parent, "the build scanned the output itself"
        return scan_tree(root)

    monkeypatch.setattr(prescan, "scan_tree", not_in_the_parent)
    reader = load.spec_files

    def read_in_the_child_only(spec_dir: Path) -> dict[str, bytes | load.Unreadable]:
        assert os.getpid() != parent, "the build read its spec itself"
        return reader(spec_dir)

    monkeypatch.setattr(load, "spec_files", read_in_the_child_only)
    original = prescan.Prescan.listing

    def listing(self: prescan.Prescan) -> spare_module.Listed | None:
        listed.append(original(self))
        return listed[-1]

    monkeypatch.setattr(prescan.Prescan, "listing", listing)
    find_links = spare_module.linked

    def links_in_the_child_only(*args: Mapping[str, prescan.OnDisk]) -> frozenset[str]:
        assert os.getpid() != parent, "the build looked for the spare's links itself"
        return find_links(*args)

    monkeypatch.setattr(spare_module, "linked", links_in_the_child_only)
    path = spec / "services" / "svc-0001.yaml"
    text = path.read_text()
    for edited in (
        text.replace("port: 8080", "port: 8181", 1),
        text,
    ):  # the second stages in the first's spare
        path.write_text(edited)
        assert incremental.build_output(spec, out).changed
    assert incremental.build_output(spec, out).changed is False  # the no-op build takes the scan too
    # the spare's listing came from the child, taken once, when the writer started staging in the spare; most of
    # it is the output's very files, sent as paths alone: nothing to do for them
    assert len(listed) == 1 and listed[0] is not None
    files_apart = [path for path, entry in listed[0].others.items() if entry.kind == "regular file"]
    assert len(listed[0].linked) > 10 * len(files_apart)


def test_the_job_runs_first_in_the_child_and_a_failed_one_is_no_result(tmp_path: Path) -> None:
    real = odd_tree(tmp_path / "out")
    parent = os.getpid()
    with prescan.prescanned(real, tmp_path / "no-spare", lambda: f"pid {os.getpid()}".encode()) as scans:
        result = scans.job_result()
        assert result is not None and result != f"pid {parent}".encode()
        assert scans.scan() == scan_tree(real)

    def failing() -> bytes:
        raise OSError("the child cannot read the spec")

    with prescan.prescanned(real, tmp_path / "no-spare", failing) as scans:
        assert scans.job_result() is None  # the caller reads it itself, and reports what fails
        assert scans.scan() == scan_tree(real)


def test_spec_files_cross_the_child_as_they_were_read(tmp_path: Path) -> None:
    files = {
        "mesh.yaml": b"mesh: x\n",
        "services/a.yaml": "service: a  # caf\u00e9\n".encode(),
        "services/b.yaml": load.Unreadable(code="spec-unreadable", message="a named pipe (FIFO)"),
        "services/empty.yaml": b"",
    }
    again = load.files_of(load.files_bytes(files))
    assert again == files and list(again) == list(files)


def test_a_forked_child_exits_with_its_work_and_dies_with_its_parent(tmp_path: Path) -> None:
    import subprocess
    import sys
    import time

    from compiler.output.forked import fork_child

    for work, code in ((lambda: None, 0), (lambda: 1 / 0, 1)):
        pid = fork_child(work)
        assert pid is not None
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == code
    # A parent killed mid-build: its child (which shares the output's lock) must not outlive it.
    script = (
        "import os, sys, time\n"
        "from compiler.output.forked import fork_child\n"
        "print(fork_child(lambda: time.sleep(60)), flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{child}/stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            return  # gone and reaped
        if state in ("Z", "X"):
            return  # dead, waiting for whoever adopted it to reap it
        time.sleep(0.02)
    raise AssertionError(f"the child {child} outlived its parent")


def test_the_child_s_listing_serves_only_the_child_s_scan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The child finds the spare's links against its own scan: a build that scanned the output itself (the child's
    # scan lost) lists the spare itself too, so that the links are found against the scan it stages over.
    real, spare = odd_tree(tmp_path / "out"), spare_of(tmp_path)
    original = prescan.Prescan._frame
    monkeypatch.setattr(
        prescan.Prescan, "_frame", lambda self, index: None if index == 1 else original(self, index)
    )
    with prescan.prescanned(real, spare) as scans:
        assert scans.scan() == scan_tree(real)  # scanned here
        assert scans.listing() is None  # not the child's: the writer lists the spare
    monkeypatch.setattr(prescan.Prescan, "_frame", original)
    with prescan.prescanned(real, spare) as scans:
        assert scans.listing() is None  # asked before the scan: nothing says which scan it would serve
