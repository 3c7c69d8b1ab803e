"""Determinism and safety of `meshc build` as a process: same bytes under any hash seed, old output kept on failure."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import EXAMPLE, ROOT, meshc_in_process, run_under_seeds

from compiler.output.disk import read_tree

sys.path.insert(0, str(ROOT))
from benchmarks.synth import generate  # noqa: E402 - the benchmark's generator is a handy varied spec

SEEDS = ("0", "1", "4242")


def meshc(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """`meshc ARGS` in this process (run_under_seeds runs the hash-seed children)."""
    return meshc_in_process(*args, cwd=cwd)


def snapshot(root: Path) -> dict[str, tuple[int, int, bytes]]:
    found = {}
    for path in [root, *sorted(root.rglob("*"))]:
        stat = path.stat()
        found[path.relative_to(root).as_posix()] = (
            stat.st_ino,
            stat.st_mtime_ns,
            path.read_bytes() if path.is_file() else b"",
        )
    return found


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A varied spec: VM, Kubernetes and mixed services, all localities, policy overrides."""
    return generate(tmp_path_factory.mktemp("synth") / "spec", services=60, datacenters=4, clusters=6, deps=5)


# What each hash seed's child runs: both builds and `explain`, each through the command line's main, one after
# the other. One interpreter start per seed, not one per command and seed: the seed is what the tests vary.
SEEDED_COMMANDS = r"""
import contextlib, sys
from compiler.cli import main

example, synthetic, out = sys.argv[1:4]
assert main(["build", example, "-o", out + "/example"]) == 0
assert main(["build", synthetic, "-o", out + "/synthetic"]) == 0
with open(out + "/explain.json", "w") as handle, contextlib.redirect_stdout(handle):
    assert main(["explain", "upload", "--format", "json"]) == 0
"""


@pytest.fixture(scope="module")
def seeded(synthetic: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """seed -> the directory where that seed's child wrote both builds (own lock and cache each) and explain.json."""
    root = tmp_path_factory.mktemp("seeded")
    # The children run side by side, each into its own directory.
    results = run_under_seeds(
        {seed: [sys.executable, "-c", SEEDED_COMMANDS, EXAMPLE, synthetic, root / seed] for seed in SEEDS}
    )
    for seed, result in results.items():
        assert result.returncode == 0, f"seed {seed}: {result.stderr}"
    return {seed: root / seed for seed in SEEDS}


@pytest.mark.parametrize("spec", ["example", "synthetic"])
def test_builds_under_different_hash_seeds_are_byte_identical(spec: str, seeded: dict[str, Path]) -> None:
    trees = [read_tree(seeded[seed] / spec) for seed in SEEDS]
    assert len(trees[0]) > 1
    assert trees[1] == trees[0] and trees[2] == trees[0]


def test_explain_under_different_hash_seeds_is_identical(seeded: dict[str, Path]) -> None:
    outputs = {(seeded[seed] / "explain.json").read_text() for seed in SEEDS}
    assert len(outputs) == 1 and outputs != {""}


def test_build_does_not_depend_on_where_the_spec_lives(tmp_path: Path) -> None:
    # Both copies are outside git (EXAMPLE itself is built with its rollout: its pins name this repository's history).
    first = tmp_path / "here" / "spec"
    shutil.copytree(EXAMPLE, first)
    copy = tmp_path / "elsewhere" / "spec"
    shutil.copytree(EXAMPLE, copy)
    for path in sorted(copy.rglob("*.yaml"), reverse=True):  # other mtimes and inode order
        path.touch()
    assert meshc("build", str(first), "-o", str(tmp_path / "a")).returncode == 0
    assert meshc("build", str(copy), "-o", str(tmp_path / "b")).returncode == 0
    assert read_tree(tmp_path / "a") == read_tree(tmp_path / "b")


def test_failed_validation_leaves_the_previous_output(tmp_path: Path) -> None:
    out = tmp_path / "output"
    assert meshc("build", str(EXAMPLE), "-o", str(out)).returncode == 0
    before = snapshot(out)
    broken = tmp_path / "broken"
    shutil.copytree(EXAMPLE, broken)
    upload = broken / "services" / "upload.yaml"
    upload.write_text(upload.read_text().replace("local_port: 7104", "local_port: 70000"))
    result = meshc("build", str(broken), "-o", str(out))
    assert result.returncode == 2 and "[port-range]" in result.stderr
    assert snapshot(out) == before
    # no staging leftovers; the build cache beside output/ is the first (successful) build's
    assert sorted(p.name for p in tmp_path.iterdir()) == [".output.meshc-cache", "broken", "output"]


# `meshc build` in a child that freezes after writing a few staged files, for the parent to SIGKILL.
FREEZING_BUILD = r"""
import os, sys, time
from compiler.cli import main

marker = sys.argv[1]
remaining = [3]
real = os.write  # the writer writes each staged file's bytes with one os.write
def write(fd, data):
    remaining[0] -= 1
    if remaining[0] == 0:
        with open(marker, "w") as handle:
            handle.write("frozen")
        time.sleep(600)
    return real(fd, data)
os.write = write
sys.exit(main(sys.argv[2:]))
"""


def test_build_killed_mid_write_leaves_the_previous_output(tmp_path: Path) -> None:
    out = tmp_path / "output"
    assert meshc("build", str(EXAMPLE), "-o", str(out)).returncode == 0
    before = snapshot(out)
    changed = tmp_path / "changed"
    shutil.copytree(EXAMPLE, changed)
    mesh = changed / "mesh.yaml"
    mesh.write_text(mesh.read_text().replace("timeout: 15s", "timeout: 20s"))  # every edge changes
    marker = tmp_path / "frozen"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", FREEZING_BUILD, str(marker), "build", str(changed), "-o", str(out)], env=env
    )
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert child.poll() is None, "the build finished before it was killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(child.pid, signal.SIGKILL)
    assert child.wait(timeout=30) == -signal.SIGKILL
    assert snapshot(out) == before
    # the next build removes the dead build's staging tree and writes the new output
    result = meshc("build", str(changed), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert read_tree(out) != {path: data for path, (_, _, data) in before.items() if path != "."}
    # no staging tree left; the build cache is the first (rollout) build's
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".output.meshc-cache",
        "changed",
        "frozen",
        "output",
    ]


def test_synthetic_generator_is_deterministic_valid_and_varied(tmp_path: Path) -> None:
    from compiler.pipeline import spec_files, validate_only

    first = generate(tmp_path / "a", services=300, datacenters=6, clusters=24, deps=8)
    second = generate(tmp_path / "b", services=300, datacenters=6, clusters=24, deps=8)
    assert read_tree(first) == read_tree(second)
    spec = validate_only(spec_files(first), "a")
    services = spec.services.values()
    assert len(spec.services) == 300 and len(spec.mesh.datacenters) == 6 and len(spec.mesh.clusters) == 24
    assert all(len(s.dependencies) == 8 for s in services)
    placements = {(bool(s.vm_datacenters), bool(s.kubernetes)) for s in services}
    assert placements == {(True, False), (False, True), (True, True)}
    assert {s.locality for s in services} == {"failover", "local", "global"}
    assert any(d.overrides for s in services for d in s.dependencies)
    assert any(s.restart_sensitive for s in services)
