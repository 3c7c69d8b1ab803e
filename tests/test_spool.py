"""The worker of a build that stages in the spare tree spools its files for the build to stage (compiler.output.spool):
the tree is the one a build in one process writes, the files the previous tree holds travel without their bytes, and
a worker that fails in any way (its spool short, over its limit, or never finished) has its part done by the build,
which stages nothing of its spool then."""

from __future__ import annotations

import marshal
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from benchmarks.synth import generate
from compiler import incremental
from compiler.emit import Artifact
from compiler.output import spool as spool_module
from compiler.output import worker as worker_module
from compiler.output.disk import read_tree, scan_tree
from compiler.output.spare import Recycled
from compiler.output.staging import Staging
from compiler.pipeline import compile_dir
from tests.test_worker import killed_once_forked, recorded_workers


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    return generate(tmp_path / "spec", 10, datacenters=2, clusters=2, deps=2, seed=7)


@pytest.fixture
def workers(monkeypatch: pytest.MonkeyPatch) -> list[worker_module.Worker]:
    return recorded_workers(monkeypatch, incremental, 2)


def edit_mesh(spec: Path, timeout: str) -> None:
    """Change a default every target reads: every target is rendered again, most files to the same bytes."""
    mesh = spec / "mesh.yaml"
    text = mesh.read_text()
    old = text.split('connect_timeout: "', 1)[1].split('"', 1)[0]
    mesh.write_text(text.replace(f'connect_timeout: "{old}"', f'connect_timeout: "{timeout}"', 1))


def beside_the_spare(spec: Path, out: Path) -> None:
    """Build twice with an edit between: the previous tree is then the spare tree, where the next build stages."""
    incremental.build_output(spec, out)
    edit_mesh(spec, "2s")
    incremental.build_output(spec, out)
    assert (out.parent / f".{out.name}.meshc-spare").is_dir()


def staged_records(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool]]:
    """Each file the build stages from a worker's spool, from now on: its path and whether its bytes came with it."""
    seen: list[tuple[str, bool]] = []
    original = spool_module.stage_spooled

    def recorded(stage: Staging, memory: int) -> list[tuple[str, str, str | None]]:
        with os.fdopen(os.dup(memory), "rb") as spool:
            spool.seek(0)
            seen.extend((path, data is not None) for path, _, _, data in spool_module._records(spool))
        return original(stage, memory)

    monkeypatch.setattr(worker_module, "stage_spooled", recorded)
    return seen


def test_a_build_in_the_spare_tree_spools_the_workers_files_and_writes_what_one_process_writes(
    spec: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: list[worker_module.Worker]
) -> None:
    out = tmp_path / "out"
    beside_the_spare(spec, out)
    records = staged_records(monkeypatch)
    stages: list[Staging] = []
    monkeypatch.setattr(
        worker_module.Worker, "start", _noting_stages(worker_module.Worker.start, stages), raising=True
    )
    before = {path: entry.inode for path, entry in scan_tree(out).items()}
    edit_mesh(spec, "3s")
    result = incremental.build_output(spec, out)
    assert isinstance(stages[-1], Recycled) and workers[-1].spooled and workers[-1].merged
    assert read_tree(out) == compile_dir(spec).tree()
    # The worker's share came through its spool: files the previous tree holds without their bytes (the build links
    # them), the others with theirs (the build writes them).
    written = set(result.written)
    assert records and {path for path, _ in records} <= set(read_tree(out))
    assert {path for path, with_bytes in records if with_bytes} == {path for path, _ in records} & written
    assert any(not with_bytes for _, with_bytes in records)
    now = scan_tree(out)
    assert all(now[path].inode == before[path] for path, with_bytes in records if not with_bytes)
    assert incremental.build_output(spec, out).changed is False


def _noting_stages(
    original: Callable[[worker_module.Worker, Staging], None], stages: list[Staging]
) -> Callable[[worker_module.Worker, Staging], None]:
    def start(self: worker_module.Worker, stage: Staging) -> None:
        stages.append(stage)
        original(self, stage)

    return start


def in_spooling_child(monkeypatch: pytest.MonkeyPatch, fail: str) -> None:
    """Make the spooling worker fail in its child: raise `before` spooling or `after` it, or leave its spool `short`
    (cut in the middle of a record) and exit as if all went well."""
    parent = os.getpid()
    original = spool_module.spool_files

    def failing(
        stage: Staging, artifacts: Iterable[Artifact], memory: int, also_done: Callable[[], bool]
    ) -> None:
        if os.getpid() == parent:
            raise AssertionError("the build never spools")
        if fail == "before":
            raise RuntimeError("the worker fails before it spools")
        original(stage, artifacts, memory, also_done)
        if fail == "after":
            raise RuntimeError("the worker fails after it spooled everything")
        os.ftruncate(memory, os.fstat(memory).st_size // 2)

    monkeypatch.setattr(worker_module, "spool_files", failing)


@pytest.mark.parametrize("fail", ["before", "after", "short", "killed", "over the limit"])
def test_a_failing_spooling_worker_has_its_part_done_by_the_build(
    spec: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    workers: list[worker_module.Worker],
    fail: str,
) -> None:
    out = tmp_path / "out"
    beside_the_spare(spec, out)
    records = staged_records(monkeypatch)
    if fail == "killed":
        killed_once_forked(monkeypatch)
    elif fail == "over the limit":
        monkeypatch.setattr(spool_module, "SPOOL_LIMIT", 100)  # a mesh edit changes more than 100 bytes
    else:
        in_spooling_child(monkeypatch, fail)
    edit_mesh(spec, "3s")
    incremental.build_output(spec, out)
    assert workers[-1].spooled and workers[-1].pid == -1 and workers[-1].memory == -1
    assert not records  # nothing of the spool was staged: the build laid the worker's share out itself
    assert read_tree(out) == compile_dir(spec).tree()
    assert incremental.build_output(spec, out).changed is False


def test_a_spool_that_holds_anything_but_records_is_not_read(tmp_path: Path) -> None:
    memory = os.memfd_create("spool-test")
    try:
        os.write(memory, marshal.dumps(("a/b.yaml", "0" * 64, None, b"x")) + marshal.dumps(("a", 1)))
        assert spool_module.spool_end(memory) is None  # a record of another shape
        os.ftruncate(memory, 0)
        os.lseek(memory, 0, os.SEEK_SET)
        os.write(memory, marshal.dumps(("a/b.yaml", "0" * 64, None, None)) + marshal.dumps(None))
        assert spool_module.spool_end(memory) is None  # no word on the worker's other work after the files
        os.write(memory, marshal.dumps(True))
        assert spool_module.spool_end(memory) is True
    finally:
        os.close(memory)
