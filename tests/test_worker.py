"""The forked worker of a big build (compiler.output.worker): the tree is the one a build without it writes, and a
worker that fails in any way has its part done again by the build, which then fails or not as one without it."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import settled

from benchmarks.synth import generate
from compiler import incremental, targets
from compiler.diagnostics import InternalError
from compiler.emit import Artifact
from compiler.output import cache
from compiler.output import worker as worker_module
from compiler.output.disk import read_tree, scan_tree
from compiler.output.staging import Staging, new_file
from compiler.pipeline import compile_dir


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    return generate(tmp_path / "spec", 10, datacenters=2, clusters=2, deps=2, seed=7)


@pytest.fixture
def workers(monkeypatch: pytest.MonkeyPatch) -> list[worker_module.Worker]:
    """Every build forks a worker (PARALLEL_FROM lowered for a small mesh); each one started is recorded."""
    return recorded_workers(monkeypatch, incremental, 2)


def recorded_workers(
    monkeypatch: pytest.MonkeyPatch, build: object, threshold: int
) -> list[worker_module.Worker]:
    """The workers started from now on, every build of `build` (a module with PARALLEL_FROM) forking one from
    `threshold` targets on."""
    monkeypatch.setattr(build, "PARALLEL_FROM", threshold)
    started: list[worker_module.Worker] = []
    original = worker_module.Worker.start

    def recorded(self: worker_module.Worker, stage: Staging) -> None:
        started.append(self)
        original(self, stage)

    monkeypatch.setattr(worker_module.Worker, "start", recorded)
    return started


def in_child_only(monkeypatch: pytest.MonkeyPatch, fail: str) -> None:
    """Make the worker fail in its child, `before` writing anything or `after` writing all its files."""
    parent = os.getpid()
    original = worker_module._write_here

    def failing(stage: Staging, artifacts: Iterable[Artifact]) -> list[worker_module.Entry]:
        if os.getpid() == parent:
            return original(stage, artifacts)
        if fail == "before":
            raise RuntimeError("the worker fails before it writes")
        entries = original(stage, artifacts)
        raise RuntimeError("the worker fails after it wrote everything")
        return entries

    monkeypatch.setattr(worker_module, "_write_here", failing)


def test_a_build_with_a_worker_writes_the_tree_a_build_without_one_writes(
    spec: Path, tmp_path: Path, workers: list[worker_module.Worker]
) -> None:
    out = tmp_path / "out"
    result = incremental.build_output(spec, out)
    assert len(workers) == 1 and workers[0].merged
    settled(out)  # no file in the cache's clock tick (conftest.settled)
    tree = read_tree(out)
    assert tree == compile_dir(spec).tree()
    assert set(result.written) == set(tree)  # the worker's files are reported written too
    # each file's stat as taken once written, by the worker or here, is what lstat finds after the swap: the cache
    # records it, and the next build trusts every file without reading one
    scanned = scan_tree(out)
    assert dict(result.stats) == {path: scanned[path] for path in tree}
    found = cache.read_cache(out.resolve(), scanned)
    assert found is not None and set(found.trusted) == set(tree) - {"MANIFEST.json"}
    assert incremental.build_output(spec, out).changed is False


@pytest.mark.parametrize("fail", ["before", "after"])
def test_a_failing_worker_has_its_part_done_by_the_build(
    spec: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    workers: list[worker_module.Worker],
    fail: str,
) -> None:
    in_child_only(monkeypatch, fail)
    out = tmp_path / "out"
    incremental.build_output(spec, out)
    assert len(workers) == 1 and workers[0].pid == -1
    assert read_tree(out) == compile_dir(spec).tree()


def test_a_killed_worker_has_its_part_done_by_the_build(
    spec: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: list[worker_module.Worker]
) -> None:
    killed = killed_once_forked(monkeypatch)
    out = tmp_path / "out"
    incremental.build_output(spec, out)
    assert killed
    assert read_tree(out) == compile_dir(spec).tree()


def killed_once_forked(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every worker started from now on is killed (SIGKILL) as soon as it is forked; their pids."""
    original = worker_module.Worker.start
    killed: list[int] = []

    def start_and_kill(self: worker_module.Worker, stage: Staging) -> None:
        original(self, stage)
        assert self.pid > 0  # forked
        killed.append(self.pid)
        os.kill(self.pid, signal.SIGKILL)

    monkeypatch.setattr(worker_module.Worker, "start", start_and_kill)
    return killed


def shares(spec: Path) -> tuple[frozenset[str], frozenset[str]]:
    """The services the worker renders and those the build renders (compiler.output.worker.worker_share)."""
    from compiler.backends.kubernetes.readers import external_readers

    mesh = compile_dir(spec).mesh
    owners = targets.target_owners(mesh, external_readers(mesh))
    theirs = {owners[target] for target in worker_module.worker_share(owners)}
    return frozenset(theirs), frozenset(owners.values()) - theirs


def registered_nowhere(monkeypatch: pytest.MonkeyPatch, services: Iterable[str]) -> None:
    """A rendering bug on purpose: the Nerve documents of `services` register where no watcher looks."""
    from compiler.ir.model import Workload
    from compiler.render import nerve

    broken, render_nerve = set(services), nerve.nerve

    def nowhere(workload: Workload) -> dict[str, object] | None:
        document = render_nerve(workload)
        if document is None or workload.service not in broken:
            return document
        entry = document["services"][workload.service]
        return {"services": {workload.service: {**entry, "zk_path": "/nowhere"}}}

    monkeypatch.setattr(nerve, "nerve", nowhere)


def built_then_mesh_edited(spec: Path, out: Path, timeout: str) -> dict[str, bytes]:
    """Build, then edit mesh.yaml (every target is rendered anew, most files to the same bytes); the first tree."""
    incremental.build_output(spec, out)
    mesh = spec / "mesh.yaml"
    before = read_tree(out)
    mesh.write_text(mesh.read_text().replace('connect_timeout: "1s"', f'connect_timeout: "{timeout}"', 1))
    return before


def test_a_worker_that_failed_after_linking_never_writes_through_a_link_into_the_previous_tree(
    spec: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: list[worker_module.Worker]
) -> None:
    out = tmp_path / "out"
    before = built_then_mesh_edited(
        spec, out, "2s"
    )  # same bytes: hard-linked from the previous tree, by the worker too
    inodes = {path: entry.inode for path, entry in scan_tree(out).items()}
    in_child_only(monkeypatch, "after")
    incremental.build_output(spec, out)
    assert read_tree(out) == compile_dir(spec).tree()
    previous = out.parent / f".{out.name}.meshc-spare"  # the previous tree, kept for the next build
    assert read_tree(previous) == before
    assert {p: e.inode for p, e in scan_tree(previous).items()} == inodes
    assert workers and workers[-1].merged


def test_a_part_that_fails_fails_the_build_as_without_a_worker(
    spec: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: list[worker_module.Worker]
) -> None:
    from compiler.backends import kubernetes

    out = tmp_path / "out"
    before = built_then_mesh_edited(spec, out, "3s")
    original = kubernetes.object_file

    def broken(*args: object, **kwargs: object) -> object:
        raise InternalError("a backend bug")

    monkeypatch.setattr(kubernetes, "object_file", broken)
    with pytest.raises(InternalError, match="a backend bug"):
        incremental.build_output(spec, out)
    monkeypatch.setattr(kubernetes, "object_file", original)
    assert read_tree(out) == before
    assert all(w.pid == -1 for w in workers)  # every worker reaped
    assert sorted(p.name for p in tmp_path.iterdir() if "meshc-new" in p.name) == []  # no staging tree left


@pytest.mark.parametrize("over", ["nothing", "a previous tree"])
def test_two_parts_claiming_one_path_is_a_compiler_bug_that_leaves_the_output_as_it_was(
    spec: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    workers: list[worker_module.Worker],
    over: str,
) -> None:
    out = tmp_path / "out"
    before = built_then_mesh_edited(spec, out, "4s") if over == "a previous tree" else {}
    original = worker_module.Worker.__init__

    def and_a_shared_file(
        self: worker_module.Worker,
        artifacts: Callable[[], Iterable[Artifact]],
        also: Callable[[], bool] | None = None,
    ) -> None:
        original(
            self, lambda: [*artifacts(), Artifact(path="puppet/hiera.yaml", data=b"claimed twice\n")], also
        )

    # The parent lays out puppet/hiera.yaml as well: over a previous tree it is a link to the output's own file,
    # which the worker's claim must never write through.
    monkeypatch.setattr(worker_module.Worker, "__init__", and_a_shared_file)
    with pytest.raises(InternalError, match="two artifacts claim puppet/hiera.yaml"):
        incremental.build_output(spec, out)
    assert read_tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir() if "meshc-new" in p.name) == []


def test_a_build_that_changes_nothing_says_so_though_a_worker_ran(
    spec: Path, tmp_path: Path, workers: list[worker_module.Worker]
) -> None:
    out = tmp_path / "out"
    incremental.build_output(spec, out)
    inodes = {path: entry.inode for path, entry in scan_tree(out).items()}
    cache.cache_path(out).unlink()  # no cache: the whole build runs again, to the same bytes
    result = incremental.build_output(spec, out)
    assert workers and not result.changed and not result.written
    assert {path: entry.inode for path, entry in scan_tree(out).items()} == inodes  # nothing swapped in
    assert sorted(p.name for p in tmp_path.iterdir() if "meshc-new" in p.name) == []


def test_a_worker_with_real_fsync_helpers_writes_the_tree(
    spec: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    workers: list[worker_module.Worker],
    real_fsync: None,
) -> None:
    from compiler.output import flusher, staging

    monkeypatch.setattr(staging, "FLUSH_FROM", 1)  # a helper for the parent and one for the worker
    answers: list[bool] = []
    original = flusher.Flusher.finish

    def recorded(self: flusher.Flusher, directories: Sequence[str]) -> bool:
        answers.append(original(self, directories))
        return answers[-1]

    monkeypatch.setattr(flusher.Flusher, "finish", recorded)
    out = tmp_path / "out"
    incremental.build_output(spec, out)
    assert read_tree(out) == compile_dir(spec).tree()
    # the worker's helper answered in the worker (not seen here); the parent's answered here, once
    assert answers == [True]
    assert workers[0].merged


def test_a_path_a_failed_worker_linked_is_replaced_never_written_through(tmp_path: Path) -> None:
    real = tmp_path / "out"
    real.mkdir()
    (real / "a.txt").write_text("the output's bytes\n")
    stage = Staging(real, {}, {})
    stage.start()
    os.link(real / "a.txt", stage.root / "a.txt")  # what a worker that linked the file and died leaves there
    stage.replacing = True
    stage.add(new_file("a.txt", b"new bytes\n"))
    assert (real / "a.txt").read_text() == "the output's bytes\n"
    assert (stage.root / "a.txt").read_text() == "new bytes\n"


@pytest.mark.parametrize("where", ["worker", "build", "both"])
def test_a_rendering_bug_in_either_share_raises_what_a_build_in_one_process_raises(
    spec: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    workers: list[worker_module.Worker],
    where: str,
) -> None:
    # The worker renders its share of the services (compiler.incremental._new_tree): a broken Nerve registration
    # of a service in its share, in this process's, or in both, is flagged in each share's invariants; the error
    # the build raises names every violation, as a rendering of the whole mesh does.
    theirs, ours = shares(spec)
    broken_services = {"worker": [min(theirs)], "build": [min(ours)], "both": [min(theirs), min(ours)]}[where]
    registered_nowhere(monkeypatch, broken_services)
    found = raised_alike(lambda: compile_dir(spec), spec, tmp_path / "out")
    assert workers  # the build forked its worker before it rendered
    assert all(f"{name}" in found for name in broken_services)


def raised_alike(alone: Callable[[], object], spec: Path, out: Path) -> str:
    """What `alone()` (one process) raises, an InternalError, which the build of `spec` into `out` raises too,
    writing nothing; its text."""
    with pytest.raises(InternalError) as serial:
        alone()
    with pytest.raises(InternalError) as parallel:
        incremental.build_output(spec, out)
    assert str(parallel.value) == str(serial.value)
    assert not out.exists()
    return str(serial.value)


@pytest.mark.parametrize("fails", [False, True], ids=["worker", "worker-fails"])
def test_the_document_cache_is_recorded_by_the_worker_or_else_by_the_build(
    spec: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    workers: list[worker_module.Worker],
    fails: bool,
) -> None:
    from compiler.output.documents import documents_path

    parent, record = os.getpid(), incremental.write_documents

    def in_child_failing(*args: Any, **kwargs: Any) -> bool:
        if fails and os.getpid() != parent:
            raise OSError("the worker cannot write the document cache")
        return record(*args, **kwargs)

    monkeypatch.setattr(incremental, "write_documents", in_child_failing)
    out = tmp_path / "out"
    incremental.build_output(spec, out)
    assert workers[0].merged and workers[0].also_done is not fails
    recorded = documents_path(out.resolve()).read_bytes()
    monkeypatch.setattr(incremental, "PARALLEL_FROM", 10**9)  # no worker: the build records them itself
    alone = tmp_path / "alone"
    incremental.build_output(spec, alone)
    assert documents_path(alone.resolve()).read_bytes() == recorded


@pytest.mark.parametrize("over", ["nothing", "a previous tree"])
@pytest.mark.parametrize("fail", ["", "after"], ids=["worker", "failed-worker"])
def test_every_directory_is_fsynced_after_its_last_entry_by_whoever_made_it(
    spec: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    workers: list[worker_module.Worker],
    real_fsync: None,
    fail: str,
    over: str,
) -> None:
    # The worker fsyncs the directories it made entries in, once its files are flushed; this process, those it
    # made entries in, at the end. A worker that fails fsyncs nothing this process counts on: every directory is
    # then fsynced here. Both processes (the worker is a fork of this one) append to one record: each entry made
    # (a file written, a file linked from the previous tree, a directory) with its directory and the time, and
    # each fsync of directories asked for, with the time it was asked (the fsync itself comes after).
    from compiler.output import durable, flusher, staging

    out = tmp_path / "out"
    if over == "a previous tree":
        built_then_mesh_edited(spec, out, "5s")  # most files are linked from it, on both sides
    monkeypatch.setattr(staging, "FLUSH_FROM", 1)  # helpers on both sides
    if fail:
        in_child_only(monkeypatch, fail)
    record = tmp_path / "record"
    parent = os.getpid()

    def note(kind: str, directories: Iterable[str]) -> None:
        side, now = "worker" if os.getpid() != parent else "build", time.monotonic_ns()
        with record.open("a") as handle:
            handle.writelines(f"{kind} {side} {now} {path}\n" for path in directories)

    root = f"{tmp_path}/.out.meshc-new-{parent}/"
    for name in ("_write", "_link"):
        made = getattr(staging.Staging, name)

        def noted(self: Staging, path: str, *args: Any, _made: Any = made) -> None:
            _made(self, path, *args)
            note("entry", [self.target + path.rpartition("/")[0]])

        monkeypatch.setattr(staging.Staging, name, noted)
    make_directory = os.mkdir

    def mkdir_noted(path: str, *args: Any, **kwargs: Any) -> None:
        # an entry only where this call made the directory: one the other side made first fails with EEXIST here
        make_directory(path, *args, **kwargs)
        if str(path).startswith(root):
            note("entry", [str(path).rpartition("/")[0]])

    monkeypatch.setattr(os, "mkdir", mkdir_noted)
    finish, fsync_paths = flusher.Flusher.finish, durable.fsync_paths

    def finish_noted(self: flusher.Flusher, directories: Sequence[str]) -> bool:
        note("sync", directories)
        return finish(self, directories)

    def fsync_noted(paths: Sequence[str | Path], flags: int) -> None:
        if flags & os.O_DIRECTORY:
            note("sync", map(str, paths))
        fsync_paths(paths, flags)

    monkeypatch.setattr(flusher.Flusher, "finish", finish_noted)
    monkeypatch.setattr(durable, "fsync_paths", fsync_noted)
    incremental.build_output(spec, out)
    assert read_tree(out) == compile_dir(spec).tree()
    last_entry: dict[str, int] = {}
    synced: dict[str, dict[str, int]] = {"worker": {}, "build": {}}
    for line in record.read_text().splitlines():
        kind, side, when, path = line.split(" ", 3)
        directory = path.removeprefix(root).rstrip("/") if path != root.rstrip("/") else ""
        if kind == "entry":
            last_entry[directory] = max(last_entry.get(directory, 0), int(when))
        elif not (fail and side == "worker"):  # a failed worker's fsyncs are not counted on
            synced[side][directory] = max(synced[side].get(directory, 0), int(when))
    last_sync = {d: max(synced["worker"].get(d, 0), synced["build"].get(d, 0)) for d in last_entry}
    late = sorted(d for d, when in last_entry.items() if last_sync[d] <= when)
    assert not late, f"directories fsynced before their last entry, or never: {late[:5]}"
    directories = {"", *(path for path, entry in scan_tree(out).items() if entry.kind == "directory")}
    assert set(last_entry) == directories
    if not fail:
        assert synced["worker"] and set(synced["build"]) < directories  # split between the two


@pytest.mark.parametrize("broken", ["worker", "build"])
def test_a_rendering_bug_beside_a_backend_problem_fails_as_a_build_in_one_process(
    spec: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    workers: list[worker_module.Worker],
    broken: str,
) -> None:
    # One process renders the whole mesh before any backend runs: a rendering bug (exit 3) is reported even where
    # every ConfigMap is also too big (a spec finding, exit 2), and the backends report every target's problems.
    # In two shares, this process's backends may fail before the worker's rendering does: the build then makes
    # the whole here and raises what one process raises.
    from compiler.backends import kubernetes
    from compiler.diagnostics import SpecError
    from compiler.render import nerve

    theirs, ours = shares(spec)
    render_nerve = nerve.nerve
    registered_nowhere(monkeypatch, [min(theirs) if broken == "worker" else min(ours)])
    monkeypatch.setattr(kubernetes, "MAX_APPLIED_BYTES", 10)
    with pytest.raises((SpecError, InternalError)) as serial:
        compile_dir(spec)
    assert serial.type is InternalError
    with pytest.raises((SpecError, InternalError)) as parallel:
        incremental.build_output(spec, tmp_path / "out")
    assert workers and (parallel.type, str(parallel.value)) == (serial.type, str(serial.value))
    monkeypatch.setattr(nerve, "nerve", render_nerve)  # the backends' findings alone: every share's, as one
    with pytest.raises(SpecError) as serial_spec:
        compile_dir(spec)
    with pytest.raises(SpecError) as parallel_spec:
        incremental.build_output(spec, tmp_path / "out")
    assert parallel_spec.value.diagnostics == serial_spec.value.diagnostics
