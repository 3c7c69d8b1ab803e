"""The writer: exact trees, nothing written for a no-op, atomic swaps that survive SIGKILL, compare_tree."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT

from compiler.diagnostics import EnvironmentFailure
from compiler.emit import Artifact
from compiler.output import disk, durable, manifest
from compiler.output.compare import compare_tree
from compiler.output.disk import read_tree
from compiler.output.manifest import MANIFEST, render_tree
from compiler.output.staging import new_file
from compiler.output.writer import write_tree


def tree(version: str, count: int = 5) -> dict[str, bytes]:
    artifacts = [
        Artifact(
            path=f"t{i % 3}/f{i}.json",
            data=f'{{"v": "{version}", "i": {i}}}\n'.encode(),
            target=f"target-{i % 3}",
        )
        for i in range(count)
    ]
    return render_tree(artifacts)


def snapshot(root: Path) -> dict[str, tuple[int, int, bytes]]:
    """path -> (inode, mtime_ns, bytes) of every file, and (inode, mtime_ns) of every directory, root included."""
    found: dict[str, tuple[int, int, bytes]] = {}
    for path in [root, *sorted(root.rglob("*"))]:
        stat = path.stat()
        found[path.relative_to(root).as_posix()] = (
            stat.st_ino,
            stat.st_mtime_ns,
            path.read_bytes() if path.is_file() else b"",
        )
    return found


# ------------------------------------------------------------------ writing


def test_writes_exactly_the_tree(tmp_path: Path) -> None:
    out = tmp_path / "out"
    files = tree("a")
    result = write_tree(out, files)
    assert result.changed and result.written == tuple(sorted(files)) and result.removed == ()
    assert read_tree(out) == files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging or parked tree left behind


def test_manifest(tmp_path: Path) -> None:
    files = tree("a")
    manifest = json.loads(files[MANIFEST])
    assert manifest["format"] == 1 and "meshc_version" in manifest
    assert manifest["files"] == {p: hashlib.sha256(d).hexdigest() for p, d in files.items() if p != MANIFEST}
    assert manifest["targets"] == {
        "target-0": ["t0/f0.json", "t0/f3.json"],
        "target-1": ["t1/f1.json", "t1/f4.json"],
        "target-2": ["t2/f2.json"],
    }


def test_no_op_write_touches_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_tree(out, tree("a"))
    before = snapshot(out)
    time.sleep(0.01)  # make any rewrite visible in mtimes
    result = write_tree(out, tree("a"))
    assert not result.changed and result.written == () and result.removed == ()
    assert snapshot(out) == before


def test_one_change_rewrites_one_file_and_links_the_rest(tmp_path: Path) -> None:
    out = tmp_path / "out"
    old = tree("a")
    write_tree(out, old)
    before = snapshot(out)
    new = dict(old)
    new["t1/f1.json"] = b'{"changed": true}\n'
    del new["t2/f2.json"]
    new["t3/new.json"] = b"{}\n"
    result = write_tree(out, new)
    assert result.written == ("t1/f1.json", "t3/new.json") and result.removed == ("t2/f2.json",)
    assert read_tree(out) == new
    after = snapshot(out)
    assert after["."][0] != before["."][0]  # the whole tree was swapped
    for path in ("t0/f0.json", "t0/f3.json", "t1/f4.json"):
        assert after[path] == before[path]  # same inode, same mtime: hard-linked, not rewritten
    assert after["t1/f1.json"][0] != before["t1/f1.json"][0]


def test_hand_edited_file_is_restored(tmp_path: Path) -> None:
    out = tmp_path / "out"
    files = tree("a")
    write_tree(out, files)
    (out / "t0" / "f0.json").write_bytes(b"edited\n")
    (out / "stray.txt").write_bytes(b"junk\n")
    result = write_tree(out, files)
    assert result.written == ("t0/f0.json",) and result.removed == ("stray.txt",)
    assert read_tree(out) == files


@pytest.mark.parametrize("path", ["../x", "/abs", "a//b", "a/./b", "a/../b", "", "MANIFEST.json"])
def test_unsafe_or_reserved_paths_are_refused(path: str) -> None:
    with pytest.raises(ValueError):
        render_tree([Artifact(path=path, data=b"x")])


def test_duplicate_paths_are_refused() -> None:
    with pytest.raises(ValueError, match="two artifacts claim a/b"):
        render_tree([Artifact(path="a/b", data=b"1"), Artifact(path="a/b", data=b"2")])


# ------------------------------------------------------------------ compare_tree


def test_compare_tree_tells_stale_from_hand_edited(tmp_path: Path) -> None:
    out = tmp_path / "out"
    old = tree("a")
    write_tree(out, old)
    assert compare_tree(out, old).clean
    new = tree("b")  # the spec changed: every file renders differently
    (out / "t0" / "f0.json").write_bytes(b"edited by hand\n")
    (out / "t1" / "f1.json").unlink()
    (out / "extra.json").write_bytes(b"{}\n")
    status = compare_tree(out, new)
    assert status.hand_edited == ("t0/f0.json",)
    assert status.missing == ("t1/f1.json",)
    assert status.extra == ("extra.json",)
    assert status.stale == ("t0/f3.json", "t1/f4.json", "t2/f2.json")  # still what the manifest recorded
    assert not status.clean


def test_compare_tree_on_missing_output(tmp_path: Path) -> None:
    status = compare_tree(tmp_path / "nowhere", tree("a"))
    assert status.missing == tuple(sorted(tree("a"))) and not status.clean


# ------------------------------------------------------------------ recovery and SIGKILL


def test_recovers_what_a_killed_fallback_swap_left(tmp_path: Path) -> None:
    """Killed between the two renames of the non-Linux swap: the parked tree is put back first."""
    out = tmp_path / "out"
    old = tree("a")
    write_tree(out, old)
    os.rename(out, tmp_path / ".out.meshc-old")
    (tmp_path / ".out.meshc-new-999999999").mkdir()  # a dead build's staging
    assert not write_tree(out, old).changed
    assert read_tree(out) == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_staging_tree_named_for_a_pid_another_process_took_since_is_removed(tmp_path: Path) -> None:
    """A killed build's staging tree whose pid is now another process's (pids are soon reused in a container) is a
    leftover: that process started after the tree last changed. A live build's tree, changed since its start,
    stays."""
    out = tmp_path / "out"
    write_tree(out, tree("a"))
    with subprocess.Popen(["sleep", "60"]) as other:
        try:
            reused = tmp_path / f".out.meshc-new-{other.pid}"
            reused.mkdir()
            (reused / "x.yaml").write_text("left by a build killed an hour ago\n")
            an_hour_ago = time.time() - 3600
            os.utime(reused, (an_hour_ago, an_hour_ago))
            assert not write_tree(out, tree("a")).changed
            assert not reused.exists()
            reused.mkdir()  # now changed after that process started: it may be writing it
            assert not write_tree(out, tree("a")).changed
            assert reused.is_dir()
        finally:
            other.kill()
    assert not write_tree(out, tree("a")).changed
    assert not reused.exists()  # its process is gone


def test_a_cache_temporary_of_a_process_that_is_gone_is_removed_and_nothing_else(tmp_path: Path) -> None:
    # A worker killed while it renamed a cache into place (compiler.output.sealed.replace_file) leaves its
    # temporary file: the next build removes it; a live process's, a directory or another name stays.
    out = tmp_path / "out"
    write_tree(out, tree("a"))
    dead, live = (
        tmp_path / ".out.meshc-documents.tmp-999999999",
        tmp_path / f".out.meshc-cache.tmp-{os.getpid()}",
    )
    kept = [live, tmp_path / ".out.meshc-cache.tmp-x", tmp_path / "out.meshc-cache.tmp-999999999"]
    for path in (dead, *kept):
        path.write_bytes(b"cut short")
    (tmp_path / ".out.meshc-cache.tmp-999999998").mkdir()
    write_tree(out, tree("b"))
    assert not dead.exists() and all(path.exists() for path in kept)
    assert (tmp_path / ".out.meshc-cache.tmp-999999998").is_dir()


def test_what_is_written_is_fsynced_before_the_swap_and_never_the_whole_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, real_fsync: None
) -> None:
    import compiler.output.durable as durable

    out = tmp_path / "out"
    write_tree(
        out,
        render_tree([Artifact(path="a/kept.txt", data=b"same\n"), Artifact(path="a/b/old.txt", data=b"1\n")]),
    )
    synced: list[tuple[int, int]] = []
    real_fsync, real_swap = os.fsync, durable.swap
    swapped: list[int] = []

    def fsync(fd: int) -> None:
        info = os.fstat(fd)
        synced.append((info.st_dev, info.st_ino))
        real_fsync(fd)

    def swap(staging: Path, target: Path) -> None:
        swapped.append(len(synced))  # how many fsyncs came before the swap
        real_swap(staging, target)

    def no_sync() -> None:
        raise AssertionError("os.sync() flushes every filesystem on the machine")

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "sync", no_sync)
    monkeypatch.setattr(durable, "swap", swap)
    tree = render_tree(
        [
            Artifact(path="a/kept.txt", data=b"same\n"),
            Artifact(path="a/b/new.txt", data=b"2\n"),
            Artifact(path="c/d/e.txt", data=b"3\n"),
        ]
    )
    result = write_tree(out, tree)
    assert result.written == ("MANIFEST.json", "a/b/new.txt", "c/d/e.txt")
    inode = lambda path: (os.stat(path).st_dev, os.stat(path).st_ino)  # noqa: E731
    before_swap = set(synced[: swapped[0]])
    for path in (*result.written, "a", "a/b", "c", "c/d"):
        assert inode(out / path) in before_swap, f"{path} was not fsynced before the swap"
    assert inode(out) in before_swap  # the staging root, now the output
    assert inode(tmp_path) in set(synced[swapped[0] :])  # the swap itself, after it


# A child that writes `new` over `out` and freezes at a chosen point, for the parent to SIGKILL.
CHILD = r"""
import json, os, shutil, sys, time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
import compiler.output.durable as durable
import compiler.output.writer as emit

out, marker, point = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
files = {path: data.encode() for path, data in json.loads(sys.stdin.read()).items()}

def freeze():
    with open(marker, "w") as handle:
        handle.write("frozen")
    time.sleep(600)

if point.startswith("write:"):
    remaining = [int(point.split(":")[1])]
    real = os.write  # the writer writes each file's bytes with one os.write
    def write(fd, data):
        remaining[0] -= 1
        if remaining[0] == 0:
            freeze()
        return real(fd, data)
    os.write = write
elif point == "before-swap":
    real_swap = durable.swap
    durable.swap = lambda staging, target: (freeze(), real_swap(staging, target))
elif point == "after-exchange":
    real_rmtree = shutil.rmtree
    def rmtree(path, *a, **k):
        if ".meshc-new-" in str(path) and Path(path).exists() and os.path.exists(out):
            return freeze()
        return real_rmtree(path, *a, **k)
    shutil.rmtree = rmtree
elif point == "between-renames":
    durable.exchange = lambda a, b: False
    real_rename = os.rename
    def rename(src, dst):
        real_rename(src, dst)
        if str(dst).endswith(".meshc-old"):
            freeze()
    os.rename = rename
emit.write_tree(out, files)
"""


def run_and_kill(out: Path, files: dict[str, bytes], point: str, tmp_path: Path) -> None:
    marker = tmp_path / f"frozen-{point.replace(':', '-')}"
    payload = json.dumps({path: data.decode() for path, data in files.items()})
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(out), str(marker), point], stdin=subprocess.PIPE, env=env
    )
    assert child.stdin is not None
    child.stdin.write(payload.encode())
    child.stdin.close()
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert child.poll() is None, f"the writer finished (exit {child.returncode}) before reaching {point}"
        assert time.monotonic() < deadline, f"the writer never reached {point}"
        time.sleep(0.01)
    os.kill(child.pid, signal.SIGKILL)
    assert child.wait(timeout=30) == -signal.SIGKILL


@pytest.mark.parametrize("point", ["write:1", "write:4", "before-swap"])
def test_sigkill_before_the_swap_leaves_the_previous_tree(tmp_path: Path, point: str) -> None:
    out = tmp_path / "out"
    old, new = tree("a"), tree("b")
    write_tree(out, old)
    before = snapshot(out)
    run_and_kill(out, new, point, tmp_path)
    assert snapshot(out) == before  # byte-identical, and not even touched
    assert write_tree(out, new).changed and read_tree(out) == new  # the next build cleans up and succeeds
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("frozen")) == ["out"]


def test_sigkill_after_the_exchange_leaves_the_new_tree(tmp_path: Path) -> None:
    out = tmp_path / "out"
    old, new = tree("a"), tree("b")
    write_tree(out, old)
    run_and_kill(out, new, "after-exchange", tmp_path)
    assert read_tree(out) == new  # the swap is one syscall: once done, the new tree is whole
    assert not write_tree(out, new).changed
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("frozen")) == ["out"]


def test_sigkill_between_fallback_renames_is_recovered(tmp_path: Path) -> None:
    out = tmp_path / "out"
    old, new = tree("a"), tree("b")
    write_tree(out, old)
    run_and_kill(out, new, "between-renames", tmp_path)
    assert not out.exists() and read_tree(tmp_path / ".out.meshc-old") == old
    # the next write (of anything) first puts the previous tree back
    assert write_tree(out, old).changed is False and read_tree(out) == old


def test_sigkill_at_random_moments_never_leaves_a_partial_tree(tmp_path: Path) -> None:
    out = tmp_path / "out"
    # 1,000 files and kill moments spread over the child's start-up and write (it wrote 3,000 and slept twice
    # as long: the writes were most of this test's time).
    old, new = tree("a", count=1000), tree("b", count=1000)
    payload = json.dumps({path: data.decode() for path, data in new.items()}).encode()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    outcomes = set()
    for delay in (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8):
        write_tree(out, old)
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(out), str(tmp_path / "never"), "none"],
            stdin=subprocess.PIPE,
            env=env,
        )
        assert child.stdin is not None
        child.stdin.write(payload)
        child.stdin.close()
        time.sleep(delay)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        found = read_tree(out)
        assert found in (old, new), f"partial tree after SIGKILL at {delay}s"
        outcomes.add("old" if found == old else "new")
    assert "old" in outcomes  # at least one kill landed mid-write


def _tree_of_every_kind(root: Path) -> Path:
    (root / "d" / "e").mkdir(parents=True)
    (root / "d" / "file").write_bytes(b"x")
    os.link(root / "d" / "file", root / "d" / "e" / "link")
    (root / "symlink").symlink_to("d/file")
    os.mkfifo(root / "fifo")
    return root


def test_a_spare_listing_made_against_another_scan_is_not_used(tmp_path: Path) -> None:
    # The links a listing names (compiler.output.spare.Listed) hold for the scan they were found against: over any
    # other scan the writer lists the spare itself. Here the output's a.txt was replaced after the listing was
    # made: taken at its word, the listing would leave the old a.txt in the new tree.
    from compiler.output.disk import list_tree, scan_tree
    from compiler.output.spare import listed
    from compiler.output.writer import previous_tree, write_files

    out, spare = tmp_path / "out", tmp_path / ".out.meshc-spare"

    def tree(files: dict[str, bytes]) -> dict[str, bytes]:
        return render_tree([Artifact(path=path, data=data) for path, data in files.items()])

    write_tree(out, tree({"a.txt": b"v1\n"}))
    write_files(out, (new_file(p, d) for p, d in tree({"a.txt": b"v1\n"}).items()), spare=spare)
    write_files(
        out, (new_file(p, d) for p, d in tree({"a.txt": b"v1\n", "b.txt": b"x"}).items()), spare=spare
    )
    early = listed(scan_tree(out), list_tree(spare))
    assert "a.txt" in early.linked
    (out / "a.txt").unlink()
    (out / "a.txt").write_bytes(b"v2\n")
    real, old = previous_tree(out)
    wanted = tree({"a.txt": b"v2\n", "b.txt": b"y"})
    write_files(
        out, (new_file(p, d) for p, d in wanted.items()), (real, old), spare=spare, listing=lambda: early
    )
    assert read_tree(out) == wanted


def test_the_spare_listing_tells_kinds_and_inodes_as_lstat_does(tmp_path: Path) -> None:
    # The writer tells the spare's files from the output's by inode alone, read from the directory listing.
    root = _tree_of_every_kind(tmp_path / "tree")
    listed, scanned = disk.list_tree(root), disk.scan_tree(root)
    assert {p: (e.kind, e.inode) for p, e in listed.items()} == {
        p: (e.kind, e.inode) for p, e in scanned.items()
    }
    assert listed["d/e/link"].inode == listed["d/file"].inode and listed["fifo"].kind == "named pipe (FIFO)"


def test_a_listing_whose_inodes_are_not_lstat_s_falls_back_to_the_scan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # overlayfs without xino: a directory listing's d_ino need not be the st_ino lstat gives.
    root = _tree_of_every_kind(tmp_path / "tree")
    scandir = os.scandir

    class Lying:
        def __init__(self, entry: os.DirEntry[str]) -> None:
            self.entry = entry

        def __getattr__(self, name: str) -> Any:
            return getattr(self.entry, name)

        def inode(self) -> int:
            return self.entry.inode() + 1

    class Listing:
        def __init__(self, path: str) -> None:
            self.inner = scandir(path)

        def __enter__(self) -> Iterator[Lying]:
            return (Lying(entry) for entry in self.inner.__enter__())

        def __exit__(self, *exc: object) -> None:
            self.inner.__exit__(*exc)

    monkeypatch.setattr(disk.os, "scandir", Listing)
    assert disk.list_tree(root) == disk.scan_tree(root)


def test_the_manifest_is_parsed_once_per_version_and_read_anew_once_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A build reads the previous MANIFEST.json twice (is it meshc's tree? the build cache): one parse serves both,
    # as long as the file is the very one read, and never once a write may have changed it.
    write_tree(tmp_path / "out", render_tree([Artifact(path="a.txt", data=b"a\n")]))
    path = tmp_path / "out" / MANIFEST
    parses: list[bytes] = []
    loads = manifest.orjson.loads
    monkeypatch.setattr(manifest.orjson, "loads", lambda raw: (parses.append(raw), loads(raw))[1])
    monkeypatch.setattr(
        manifest, "RACY_NS", 10**18
    )  # every file is racy, however slow the write just now was
    first = manifest.manifest_file(tmp_path / "out")
    assert first is not None and len(parses) == 1
    assert manifest.manifest_file(tmp_path / "out") == first and len(parses) == 2  # racy: read anew
    monkeypatch.setattr(manifest, "RACY_NS", -(10**18))  # no file is racy any more
    manifest.manifest_file(tmp_path / "out")
    assert manifest.manifest_file(tmp_path / "out") == first and len(parses) == 3  # one parse for two reads
    # Rewritten with another size: the read must see it, however coarse the filesystem's timestamps.
    path.write_bytes(path.read_bytes().replace(b'"a.txt"', b'"bb.txt"'))
    again = manifest.manifest_file(tmp_path / "out")
    assert again is not None and b'"bb.txt"' in again[0] and len(parses) == 4


def test_an_fsync_failing_in_a_thread_fails_the_write_and_leaves_the_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, real_fsync: None
) -> None:
    # The fsyncs run in threads: a failure there must reach the build, before the swap publishes anything.
    out = tmp_path / "out"
    write_tree(out, render_tree([Artifact(path="a.txt", data=b"a\n")]))
    before = read_tree(out)
    real = durable.fsync_path

    def failing(path: str | Path, flags: int) -> None:
        if str(path).endswith("b.txt"):
            raise OSError(errno.EIO, "Input/output error", str(path))
        real(path, flags)

    monkeypatch.setattr(durable, "fsync_path", failing)
    with pytest.raises(EnvironmentFailure, match="input/output error"):
        write_tree(out, render_tree([Artifact(path=f"{n}.txt", data=b"x\n") for n in "abcdefgh"]))
    assert read_tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging tree left


def test_a_manifest_patched_from_the_previous_one_is_the_one_made_anew() -> None:
    import random

    import orjson

    rng = random.Random(4)
    digest = lambda: "".join(rng.choice("0123456789abcdef") for _ in range(64))  # noqa: E731
    files = {f"k/c{n % 3}/ns/svc-{n:03d}{'/é' if n % 5 == 0 else ''}.yaml": digest() for n in range(60)}
    files['odd/"quoted"\\name.json'] = digest()
    targets = {f"k8s/c{t}": sorted(p for p in files if p.startswith(f"k/c{t}/")) for t in range(3)}
    raw = manifest.manifest_json(files, targets)
    previous = (raw, orjson.loads(raw))
    for _ in range(20):
        changed = dict(files)
        fresh = rng.sample(sorted(files), rng.randint(1, 6))  # rendered anew: some keep their digest
        for path in fresh[1:]:
            changed[path] = digest()
        shuffled = {t: list(reversed(paths)) for t, paths in targets.items()}  # stream order, not sorted
        patched = manifest.patched_manifest(previous, changed, shuffled, fresh)
        assert patched == manifest.manifest_json(changed, targets)
    assert manifest.patched_manifest(previous, files, targets, []) == raw
    # a file more or fewer, another target or a target's paths changed: made anew, never patched
    assert manifest.patched_manifest(previous, {**files, "new.txt": digest()}, targets, ["new.txt"]) is None
    assert manifest.patched_manifest(previous, dict(list(files.items())[1:]), targets, []) is None
    assert manifest.patched_manifest(previous, files, {**targets, "vm/x": []}, []) is None
    moved = {**targets, "k8s/c0": targets["k8s/c0"][1:]}
    assert manifest.patched_manifest(previous, files, moved, []) is None
    assert manifest.patched_manifest((raw, {"not": "a manifest"}), files, targets, []) is None
    # a previous text that does not hold the pair (not the bytes the value was read from): made anew
    other = {**files, next(iter(files)): digest()}
    assert (
        manifest.patched_manifest((raw.replace(b"k/c0", b"k/cX"), previous[1]), other, targets, list(files))
        is None
    )
