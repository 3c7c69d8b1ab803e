"""The rollout build's worker: a forked process lays out a share of the services at every live revision
(compiler.rollout.build.rollout_stream). Whatever it does, the build writes the tree one process lays out, or fails
as one process fails, and writes nothing then."""

from __future__ import annotations

import os
import random
from collections import Counter
from collections.abc import Collection
from pathlib import Path

import pytest

from compiler import incremental
from compiler.diagnostics import SpecError
from compiler.ir.model import Mesh
from compiler.output import worker as worker_module
from compiler.output.disk import read_tree
from compiler.render import SidecarConfig
from compiler.rollout import build as rollout_build
from compiler.rollout import renderings
from compiler.rollout.build import live_parts, rollout_state_of
from compiler.rollout.output import output_for
from compiler.rollout.revisions import rollout_context
from tests.test_gitsource import commit
from tests.test_rollout_build import add_timeout_change, replace_in, set_pins, start_rollout
from tests.test_rollout_incremental import Rollout
from tests.test_worker import (
    in_child_only,
    killed_once_forked,
    raised_alike,
    recorded_workers,
    registered_nowhere,
)


@pytest.fixture
def workers(monkeypatch: pytest.MonkeyPatch) -> list[worker_module.Worker]:
    """Every rollout build forks a worker (PARALLEL_FROM lowered for the example); each one started is recorded."""
    return recorded_workers(monkeypatch, rollout_build, 1)


@pytest.fixture
def merged(tmp_path: Path) -> Path:
    """A rollout with two live revisions: a change merged (the first wave) over the pinned base. Its spec directory."""
    repo, spec, _ = start_rollout(tmp_path / "repo")
    add_timeout_change(repo)
    return spec


def worker_services(spec: Path) -> tuple[set[str], set[str]]:
    """The services registered by Nerve (VM pools) that a client watches, which the worker lays out, and those the
    build lays out itself."""
    context = rollout_context(spec)
    assert context is not None
    state = rollout_state_of(context)
    parts = live_parts(state)
    owners = {target: service for part in parts for target, service in part.owners.items()}
    theirs = rollout_build.worker_targets(parts)
    workloads = [p.workload for p in state.placements.values() if p.workload is not None]
    watched = {
        edge.service for w in workloads for edge in w.egress
    }  # a client's Synapse watches its registration
    registered = {w.service for w in workloads if w.registration is not None} & watched
    return {owners[t] for t in theirs} & registered, {owners[t] for t in set(owners) - theirs} & registered


def test_a_rollout_build_with_a_worker_writes_what_one_process_lays_out(
    merged: Path, tmp_path: Path, workers: list[worker_module.Worker]
) -> None:
    expected = output_for(merged)  # one process, in memory
    out = tmp_path / "out"
    result = incremental.build_output(merged, out)
    assert len(workers) == 1 and workers[0].merged
    tree = read_tree(out)
    assert tree == expected
    assert set(result.written) == set(tree)  # the worker's files are reported written too
    theirs, ours = worker_services(merged)
    assert theirs and ours  # both processes laid out targets
    assert incremental.build_output(merged, out).changed is False


@pytest.mark.parametrize("into", ["fresh", "one"], ids=["fresh-directories", "one-output-and-its-spare"])
def test_rollout_builds_with_a_worker_equal_clean_builds_along_random_histories(
    tmp_path: Path, workers: list[worker_module.Worker], into: str
) -> None:
    """Spec edits, commits, pin moves (some out of order), holds and inventory edits; after each, a build writes what
    one process lays out, or both fail alike. Into a fresh directory each time, the worker writes its share into the
    staging tree; into one output, from the third build on the build stages in the spare tree and the worker spools
    its share (compiler.output.spool)."""
    rng = random.Random(5)
    rollout = Rollout(tmp_path, rng)
    moves = [
        rollout.edit_service,
        rollout.edit_mesh,
        rollout.edit_inventory,
        rollout.commit,
        rollout.random_pins,
    ]
    built = 0
    previous: dict[str, bytes] | None = None
    for step in range(8 if into == "fresh" else 10):
        rng.choice(moves)()
        try:
            expected: dict[str, bytes] | str = output_for(rollout.spec)
        except SpecError as error:
            expected = str(error)
        out = tmp_path / (f"out-{step}" if into == "fresh" else "out")
        try:
            incremental.build_output(rollout.spec, out)
        except SpecError as error:
            assert str(error) == expected, f"step {step}: the build failed otherwise than one process"
            assert (read_tree(out) if out.exists() else None) == previous
            continue
        previous = read_tree(out)
        assert previous == expected, f"step {step}: the tree differs from one process's"
        built += 1
    assert built
    if into == "fresh":
        assert len(workers) == built
    else:
        assert any(worker.spooled and worker.merged for worker in workers)


@pytest.mark.parametrize("fail", ["before", "after", "killed"])
def test_a_failing_worker_has_its_share_laid_out_by_the_build(
    merged: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    workers: list[worker_module.Worker],
    fail: str,
) -> None:
    killed = killed_once_forked(monkeypatch) if fail == "killed" else [0]
    if fail != "killed":
        in_child_only(monkeypatch, fail)
    out = tmp_path / "out"
    incremental.build_output(merged, out)
    assert killed
    assert read_tree(out) == output_for(merged)


@pytest.mark.parametrize("where", ["worker", "build", "both", "all"])
def test_a_rendering_bug_in_either_share_raises_what_one_process_raises(
    merged: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    workers: list[worker_module.Worker],
    where: str,
) -> None:
    theirs, ours = worker_services(merged)
    everything = sorted(theirs | ours)  # the clients of both shares break at the first revision
    broken = {
        "worker": [min(theirs)],
        "build": [min(ours)],
        "both": [min(theirs), min(ours)],
        "all": everything,
    }[where]
    registered_nowhere(monkeypatch, broken)
    found = raised_alike(lambda: output_for(merged), merged, tmp_path / "out")
    assert workers  # the build forked its worker before it rendered
    # one process stops at the first live revision whose rendering breaks: the services broken there are named
    assert any(f"watches {service} " in found for service in broken)


def test_an_unsafe_rollout_fails_as_in_one_process_and_writes_nothing(
    tmp_path: Path, workers: list[worker_module.Worker]
) -> None:
    repo, spec, _ = start_rollout(tmp_path / "repo")
    replace_in(spec / "services/encryption.yaml", "protocol: grpc", "protocol: http")
    commit(repo, "encryption speaks http")
    with pytest.raises(SpecError) as alone:
        output_for(spec)
    out = tmp_path / "out"
    with pytest.raises(SpecError) as parallel:
        incremental.build_output(spec, out)
    assert str(parallel.value) == str(alone.value)
    assert {d.code for d in parallel.value.diagnostics} == {"rollout-unsafe"}
    # Every state is checked before the writer starts: no worker, no output, no staging tree beside it.
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["repo"]
    assert not workers


@pytest.mark.parametrize("threshold", [1, 10**9], ids=["worker", "one-process"])
def test_an_unsafe_rollout_leaves_the_output_and_its_spare_tree_as_they_were(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threshold: int
) -> None:
    monkeypatch.setattr(rollout_build, "PARALLEL_FROM", threshold)
    repo, spec, _ = start_rollout(tmp_path / "repo")
    out = tmp_path / "out"
    incremental.build_output(spec, out)
    replace_in(
        spec / "services/search.yaml", "port: 8080", "port: 8085"
    )  # the canary wave runs the working tree
    assert incremental.build_output(spec, out).written  # the previous tree is now the spare
    spare = tmp_path / ".out.meshc-spare"
    before = read_tree(out), {p.relative_to(spare): p.lstat().st_ino for p in spare.rglob("*")}
    replace_in(spec / "services/encryption.yaml", "protocol: grpc", "protocol: http")  # unsafe across waves
    with pytest.raises(SpecError) as unsafe:
        incremental.build_output(spec, out)
    assert {d.code for d in unsafe.value.diagnostics} == {"rollout-unsafe"}
    assert (read_tree(out), {p.relative_to(spare): p.lstat().st_ino for p in spare.rglob("*")}) == before


def test_the_worker_takes_targets_at_every_live_revision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: list[worker_module.Worker]
) -> None:
    """Three live revisions: the worker's share holds targets placed at each, so it renders each revision."""
    repo, spec, base = start_rollout(tmp_path / "repo")
    middle = add_timeout_change(repo)
    set_pins(spec, west=middle, rest=base)
    replace_in(spec / "mesh.yaml", "connect_timeout: 2s", "connect_timeout: 3s")
    commit(repo, "connect timeout 3s")
    log = tmp_path / "renders"
    original = rollout_build.render

    def recorded(mesh: Mesh, only: Collection[str] | None = None) -> dict[str, SidecarConfig]:
        with log.open("a") as renders:  # appends from both processes
            renders.write(f"{os.getpid()}\n")
        return original(mesh, only)

    monkeypatch.setattr(rollout_build, "render", recorded)  # the worker's
    monkeypatch.setattr(renderings, "render", recorded)  # this process's (compiler.rollout.renderings)
    expected = output_for(spec)
    log.unlink()
    out = tmp_path / "out"
    incremental.build_output(spec, out)
    assert read_tree(out) == expected
    context = rollout_context(spec)
    assert context is not None
    assert len(live_parts(rollout_state_of(context))) == 3
    by_process = Counter(log.read_text().split())
    assert by_process[str(os.getpid())] == 3  # the build renders its share at each live revision
    assert sorted(by_process.values()) == [3, 3]  # and so does the worker, in a process of its own
