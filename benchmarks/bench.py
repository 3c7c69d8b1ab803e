"""`make bench`: wall time, CPU time and peak RSS of each compiler stage on synthetic meshes.

Each (mesh size, stage) runs in a fresh child process that first runs the stages before it (their
results feed the measured one) and reports each stage's wall and CPU time; the parent reads the
child's peak RSS from wait4(), so the RSS column is the peak of a process that ran everything up to
and including that stage — what a `meshc` run stopping there needs. The target line also gives
the child's whole life (interpreter start and imports included).

To measure a new stage, add a `Stage` to STAGES after the stage whose state it reads. Planned:
render (mesh -> sidecars), backends (sidecars -> artifacts), build (tree + write into a fresh
directory), rebuild (no-op write), diff (one service edited, compare against the previous tree).

    python benchmarks/bench.py [--sizes 100,1000,3000] [--stages validate,lower] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Imported before any stage runs, so stage times exclude import time (the target line includes it).
from benchmarks.synth import generate  # noqa: E402 - after the path set-up above
from compiler.ir.lower import lower  # noqa: E402
from compiler.pipeline import collector_paused, spec_files, validate_only  # noqa: E402
from compiler.render import render  # noqa: E402

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


def _validate(state: State) -> None:
    state["spec"] = validate_only(spec_files(state["dir"]), state["dir"].as_posix())


def _lower(state: State) -> None:
    state["mesh"] = lower(state["spec"])


def _render(state: State) -> None:
    state["sidecars"] = render(state["mesh"])


STAGES: tuple[Stage, ...] = (
    Stage(name="validate", description="read files, parse YAML, JSON Schema, semantic checks", run=_validate),
    Stage(name="lower", description="Spec -> Mesh IR (workloads, routing, policies)", run=_lower),
    Stage(name="render", description="Mesh IR -> sidecar documents (Envoy, Synapse, Nerve) + invariants", run=_render),
)


def _meshc_build(state: State) -> None:
    """`meshc build` end to end, every backend, into a fresh directory.

    The earlier stages' results are dropped first, so the peak RSS is close to the build's own;
    that is why this stage must stay the last one.
    """
    from compiler.pipeline import build

    for key in [k for k in state if k != "dir"]:
        del state[key]
    out = scratch_dir() / "meshc-build-out"
    shutil.rmtree(out, ignore_errors=True)
    state["written"] = build(state["dir"], out)


STAGES += (Stage(name="meshc-build", description="meshc build: whole pipeline, all backends, fresh output tree", run=_meshc_build),)


def _diff_setup(state: State) -> None:
    """Not part of the diff: a git repo holding the synthetic spec, committed, then one service's app port edited."""
    repo = scratch_dir() / "diff-repo"
    shutil.rmtree(repo, ignore_errors=True)
    shutil.copytree(state["dir"], repo / "mesh-spec")
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@meshc.invalid", "-c", "commit.gpgsign=false"]
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "synthetic spec"]):
        subprocess.run(git + command, cwd=repo, check=True)
    service = min((repo / "mesh-spec/services").glob("*.yaml"))
    text = service.read_text()
    assert "\nport: 8080\n" in text, f"{service.name}: no `port: 8080` to edit"
    service.write_text(text.replace("\nport: 8080\n", "\nport: 8081\n", 1))
    state["diff_spec"] = repo / "mesh-spec"


def _meshc_diff(state: State) -> None:
    """`meshc diff --base HEAD --format markdown` on the one-service edit (two compiles + the semantic diff)."""
    import contextlib
    import io

    from compiler.cli import main as meshc

    with contextlib.redirect_stdout(io.StringIO()) as report:  # stdout carries this child's timings
        code = meshc(["diff", "--base", "HEAD", "--spec", str(state["diff_spec"]), "--format", "markdown"])
    assert code == 0 and "| **total** |" in report.getvalue(), report.getvalue()[-2000:]


STAGES += (
    Stage(name="diff-setup", description="(setup, not timed as diff) synthetic spec in a git repo, one service edited", run=_diff_setup),
    Stage(name="meshc-diff", description="meshc diff --base HEAD: one-service change (target <= 2.5x meshc-build)", run=_meshc_diff),
)


# A rollout: the synthetic spec with a wave per datacenter group, committed three times (one app
# port edited each time); rollout.yaml pins three waves to those three distinct revisions, and the
# first wave runs a fourth (the working tree). Measured against meshc-build of the same spec.
ROLLOUT_POLICY = """
rollout:
  waves:
    - {name: w0, match: {datacenters: [dc-00]}}
    - {name: w1, match: {datacenters: [dc-01, dc-02]}}
    - {name: w2, match: {datacenters: [dc-03, dc-04]}}
    - {name: w3}
"""


def _rollout_setup(state: State) -> None:
    """Not part of the rollout build: a git history of three edits and a rollout.yaml pinning three waves to them."""
    repo = scratch_dir() / "rollout-repo"
    shutil.rmtree(repo, ignore_errors=True)
    shutil.copytree(state["dir"], repo / "mesh-spec")
    (repo / "mesh-spec/mesh.yaml").write_text((repo / "mesh-spec/mesh.yaml").read_text() + ROLLOUT_POLICY)
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@meshc.invalid", "-c", "commit.gpgsign=false"]
    subprocess.run(git + ["init", "-q"], cwd=repo, check=True)
    services = sorted((repo / "mesh-spec/services").glob("*.yaml"))
    revisions = []
    for step, service in enumerate(services[:4]):
        if step:
            text = service.read_text()
            assert "\nport: 8080\n" in text, f"{service.name}: no `port: 8080` to edit"
            service.write_text(text.replace("\nport: 8080\n", "\nport: 8081\n", 1))
        if step < 3:
            for command in (["add", "-A"], ["commit", "-q", "-m", f"revision {step}"]):
                subprocess.run(git + command, cwd=repo, check=True)
            revisions.append(subprocess.run(git + ["rev-parse", "HEAD"], cwd=repo, check=True, capture_output=True, text=True).stdout.strip())
    pins = {"w1": revisions[2], "w2": revisions[1], "w3": revisions[0]}
    (repo / "mesh-spec/rollout.yaml").write_text("hold: false\npins:\n" + "".join(f"  {w}: {r}\n" for w, r in pins.items()))
    state["rollout_spec"] = repo / "mesh-spec"
    os.sync()  # the build syncs before its swap: it must pay for its own writes, not for these commits


def _rollout_build(state: State) -> None:
    """`meshc build` of the rollout: four distinct revisions (three pinned + the working tree) into a fresh directory."""
    from compiler.rollout.build import build

    out = scratch_dir() / "rollout-out"
    shutil.rmtree(out, ignore_errors=True)
    result = build(state["rollout_spec"], out)
    assert result.changed and (out / "MANIFEST.json").exists()


STAGES += (
    Stage(name="rollout-setup", description="(setup, not timed as a build) git history of 3 edits, rollout.yaml pinning 3 waves to them",
          run=_rollout_setup),
    Stage(name="rollout-build", description="meshc build with a rollout: 3 pinned revisions + the working tree (goal <= 1.5x meshc-build)",
          run=_rollout_build),
)


def scratch_dir() -> Path:
    """This child's own working directory under .bench/, removed when it ends: concurrent runs must not share one."""
    return BENCH_DIR / f"scratch-{os.getpid()}"


def run_child(spec_dir: Path, last: str) -> None:
    """In the child: run the stages up to `last`, print {stage: [wall, cpu]} as JSON."""
    state: State = {"dir": spec_dir}
    times: dict[str, list[float]] = {}
    try:
        for stage in STAGES:
            wall, cpu = time.perf_counter(), time.process_time()
            with collector_paused():  # as compile() runs its stages
                stage.run(state)
            times[stage.name] = [time.perf_counter() - wall, time.process_time() - cpu]
            if stage.name == last:
                break
    finally:
        shutil.rmtree(scratch_dir(), ignore_errors=True)
    print(json.dumps(times))


def measure(spec_dir: Path, last: str) -> tuple[dict[str, list[float]], float]:
    """Run one child through `last`; its stage times (plus "process": its whole life) and its peak RSS in MB."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # The writer syncs before it swaps trees; flush others' dirty pages first, so a build pays only for its own.
    os.sync()
    started = time.perf_counter()
    with subprocess.Popen([sys.executable, __file__, "--child", last, str(spec_dir)], stdout=subprocess.PIPE, env=env) as child:
        output = child.stdout.read() if child.stdout else b""
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - started
    if child.returncode != 0:
        raise SystemExit(f"stage {last} failed on {spec_dir} (exit {child.returncode})")
    times = json.loads(output)
    times["process"] = [elapsed, usage.ru_utime + usage.ru_stime]
    return times, usage.ru_maxrss / 1024  # ru_maxrss is in KiB on Linux


def spec_for(size: int) -> Path:
    """The synthetic spec of `size` services under .bench/, generated (deterministically) if absent."""
    out = BENCH_DIR / f"mesh-n{size}-d{DATACENTERS}-c{CLUSTERS}-k{DEPENDENCIES}"
    if not (out / "mesh.yaml").exists():
        generate(out, size, DATACENTERS, CLUSTERS, DEPENDENCIES)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="comma-separated service counts")
    parser.add_argument("--stages", default=",".join(s.name for s in STAGES), help="comma-separated stage names")
    parser.add_argument("--repeat", type=int, default=1, help="runs per measurement; the fastest is reported")
    parser.add_argument("--child", nargs=2, metavar=("STAGE", "SPEC"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(Path(args.child[1]), args.child[0])
        return
    stages = [s for s in STAGES if s.name in args.stages.split(",")]
    print(f"meshc benchmark: D={DATACENTERS} datacenters, C={CLUSTERS} clusters, K={DEPENDENCIES} dependencies per service; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    print(f"{'services':>8}  {'stage':<10} {'wall s':>7} {'cpu s':>7} {'peak RSS MB':>11}  what")
    for size in (int(n) for n in args.sizes.split(",")):
        spec_dir = spec_for(size)
        totals: dict[str, list[float]] = {}
        for stage in stages:
            runs = [measure(spec_dir, stage.name) for _ in range(max(1, args.repeat))]
            times, rss = min(runs, key=lambda run: run[0][stage.name][0])
            wall, cpu = times[stage.name]
            totals[stage.name] = [wall, cpu, rss, times["process"][0]]
            print(f"{size:>8}  {stage.name:<10} {wall:>7.3f} {cpu:>7.3f} {rss:>11.1f}  {stage.description}")
        if {"meshc-build", "rollout-build"} <= set(totals):
            ratio = totals["rollout-build"][0] / totals["meshc-build"][0]
            print(f"{size:>8}  rollout-build / meshc-build: {ratio:.2f}x wall (goal <= 1.5x)")
        if size == TARGET_SIZE and {"validate", "lower"} <= set(totals):
            wall = totals["validate"][0] + totals["lower"][0]
            rss = totals["lower"][2]
            verdict = "ok" if wall <= TARGET_SECONDS and rss <= TARGET_RSS_MB else "MISSED"
            print(f"{size:>8}  validate + lower: {wall:.3f} s, peak RSS {rss:.1f} MB "
                  f"(target <= {TARGET_SECONDS:g} s, <= {TARGET_RSS_MB} MB): {verdict}; "
                  f"whole process {totals['lower'][3]:.3f} s")


if __name__ == "__main__":
    main()
