"""The benchmarks' common harness: where they work, the synthetic meshes, the stage record, small helpers.

Every module of benchmarks/ runs from benchmarks/bench.py (`make bench`), which puts the repository
root on sys.path before importing them; each child process a benchmark starts runs bench.py again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.synth import generate

ROOT = Path(__file__).resolve().parent.parent
# The script every benchmark child runs (with --child, --floor-child or --drift-child).
BENCH_SCRIPT = ROOT / "benchmarks" / "bench.py"
BENCH_DIR = ROOT / ".bench"
SIZES = (100, 1_000, 3_000)
DATACENTERS, CLUSTERS, DEPENDENCIES = 6, 24, 8
# The target for validate + lower of the 1,000-service mesh on a 2-core machine.
TARGET_SIZE, TARGET_SECONDS, TARGET_RSS_MB = 1_000, 3.0, 500

State = dict[str, Any]


@dataclass(frozen=True, kw_only=True, slots=True)
class Stage:
    """One measured step: reads what earlier stages left in the state and adds its own result."""

    name: str
    description: str
    run: Callable[[State], None]
    requires: tuple[str, ...] | None = None  # the stages its child runs first; None: every stage before it
    sizes: tuple[int, ...] | None = None  # the mesh sizes it runs at; None: every size


# git as the benchmarks' scratch repositories run it: a fixed author, no signing.
GIT = ["git", "-c", "user.name=bench", "-c", "user.email=bench@meshc.invalid", "-c", "commit.gpgsign=false"]


def committed_spec(name: str, spec_dir: Path) -> Path:
    """A scratch git repo holding a copy of the spec, committed; returns its spec directory."""
    repo = scratch_dir() / name
    shutil.rmtree(repo, ignore_errors=True)
    shutil.copytree(spec_dir, repo / "mesh-spec")
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "synthetic spec"]):
        subprocess.run(GIT + command, cwd=repo, check=True)
    return repo / "mesh-spec"


def span(values: list[float], unit: str = "") -> str:
    """`low-high` of a few measurements (one value when there is one)."""
    low, high = min(values), max(values)
    return f"{low:.2f}{unit}" if len(values) == 1 else f"{low:.2f}-{high:.2f}{unit}"


def scratch_dir() -> Path:
    """This child's own working directory under .bench/, removed when it ends: concurrent runs must not share one."""
    return BENCH_DIR / f"scratch-{os.getpid()}"


def spec_for(size: int) -> Path:
    """The synthetic spec of `size` services under .bench/, generated (deterministically) if absent."""
    out = BENCH_DIR / f"mesh-n{size}-d{DATACENTERS}-c{CLUSTERS}-k{DEPENDENCIES}"
    if not (out / "mesh.yaml").exists():
        generate(out, size, DATACENTERS, CLUSTERS, DEPENDENCIES)
    return out


class TreeMemory:
    """The peak memory of a process and its descendants, sampled: the sum of their PSS (proportional set size).

    wait4's ru_maxrss is the peak of the largest single process, which undercounts a build that forks: the
    worker (compiler.output.worker) and the helpers it starts each have their own RSS, and a forked child's
    RSS also counts the pages it shares with its parent. PSS splits every shared page between its sharers, so
    the sum over the tree counts each page once. Sampled every 20 ms from /proc/<pid>/smaps_rollup.
    """

    def __init__(self, pid: int) -> None:
        import threading

        self.pid, self.peak_kb = pid, 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def stop(self) -> float:
        """Stop sampling; the peak in MB."""
        self.done.set()
        self.thread.join()
        return self.peak_kb / 1024

    def _sample(self) -> None:
        while not self.done.wait(0.02):
            self.peak_kb = max(self.peak_kb, sum(map(_pss_kb, _tree(self.pid))))


def _tree(pid: int) -> list[int]:
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        pending.extend(map(int, children))
    return found


def _pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


# Trees the process-level stages are done with, moved aside and deleted when the whole run ends. On this VM's disk
# (ext4 mounted with `discard`, no journal) creating files is up to 3x slower for minutes after a large deletion,
# so deleting a stage's ~200 MB tree right away slowed whichever stage came next. The children's scratch trees go
# to the same trash as the run's own (the run's pid, which its children inherit in the environment): a child that
# deleted its scratch (a rollout repository, a 10,600-file output) as it ended made the first build of the next child
# 1.6-2x slower (rollout-build: 8.7 s, then 5.3 s and 4.3 s for two more builds in the same child).
RUN = os.environ.setdefault("MESHC_BENCH_RUN", str(os.getpid()))
TRASH = BENCH_DIR / f"trash-{RUN}"


def discard(tree: Path) -> None:
    """Move `tree` to the run's trash (one rename), to be deleted by `empty_trash` when the run ends."""
    if not os.path.lexists(tree):
        return
    TRASH.mkdir(parents=True, exist_ok=True)
    os.rename(tree, TRASH / f"{len(os.listdir(TRASH))}-{tree.name}")


def empty_trash() -> None:
    shutil.rmtree(TRASH, ignore_errors=True)


def run_meshc(arguments: list[str], expect: str) -> None:
    """One meshc command in this child process, which must exit 0 and print `expect` (its stdout is kept apart: the
    child's stdout carries the stage timings)."""
    import contextlib
    import io

    from compiler.cli import main as meshc

    with contextlib.redirect_stdout(io.StringIO()) as report:
        code = meshc(arguments)
    assert code == 0 and expect in report.getvalue(), report.getvalue()[-2000:]
