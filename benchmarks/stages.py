"""The stage benchmarks: each compiler stage (and each command built on them) measured in a child process of its own.

STAGES lists them in the order a child runs them: a child runs every stage before the measured one
(or those its `requires` names), so each reads what the earlier ones left in the state.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.drift import DRIFT_STAGES
from benchmarks.harness import (
    BENCH_SCRIPT,
    ROOT,
    Stage,
    State,
    committed_spec,
    discard,
    run_meshc,
    scratch_dir,
)
from benchmarks.rollout import ROLLOUT_STAGES

# Imported before any stage runs, so stage times exclude import time (the target line includes it).
from compiler.ir.lower import lower
from compiler.pipeline import collector_paused, validate_only
from compiler.render import render
from compiler.spec.load import spec_files


def _validate(state: State) -> None:
    state["spec"] = validate_only(spec_files(state["dir"]), state["dir"].as_posix())


def _lower(state: State) -> None:
    state["mesh"] = lower(state["spec"])


def _render(state: State) -> None:
    state["sidecars"] = render(state["mesh"])


STAGES: tuple[Stage, ...] = (
    Stage(name="validate", description="read files, parse YAML, JSON Schema, semantic checks", run=_validate),
    Stage(name="lower", description="Spec -> Mesh IR (workloads, routing, policies)", run=_lower),
    Stage(
        name="render",
        description="Mesh IR -> sidecar documents (Envoy, Synapse, Nerve) + invariants",
        run=_render,
    ),
)


def _meshc_build(state: State) -> None:
    """`meshc build` end to end, every backend, into a fresh directory.

    The earlier stages' results are dropped first, so the peak RSS is close to the build's own;
    that is why this stage must stay the last one.
    """
    from compiler.incremental import build_output as build  # what `meshc build` runs

    for key in [k for k in state if k != "dir"]:
        del state[key]
    out = scratch_dir() / "meshc-build-out"
    shutil.rmtree(out, ignore_errors=True)
    state["written"] = build(state["dir"], out)


STAGES += (
    Stage(
        name="meshc-build",
        description="meshc build: whole pipeline, all backends, fresh output tree",
        run=_meshc_build,
    ),
)


def _diff_setup(state: State) -> None:
    """Not part of the diff: a git repo holding the synthetic spec, committed, then one service's app port edited."""
    repo = committed_spec("diff-repo", state["dir"])
    service = min((repo / "services").glob("*.yaml"))
    text = service.read_text()
    assert "\nport: 8080\n" in text, f"{service.name}: no `port: 8080` to edit"
    service.write_text(text.replace("\nport: 8080\n", "\nport: 8081\n", 1))
    state["diff_spec"] = repo


def _diff_wide_setup(state: State) -> None:
    """Not part of the diff: the synthetic spec committed, then the mesh-wide default connect timeout edited, which
    changes the CDS document of every target (a ConfigMap in every Kubernetes file, every pool's hiera data)."""
    repo = committed_spec("diff-wide-repo", state["dir"])
    mesh = repo / "mesh.yaml"
    text = mesh.read_text()
    assert 'connect_timeout: "1s"\n' in text, "mesh.yaml: no `connect_timeout: 1s` to edit"
    mesh.write_text(text.replace('connect_timeout: "1s"\n', 'connect_timeout: "2s"\n', 1))
    state["diff_spec"] = repo


def _meshc_diff(state: State) -> None:
    """`meshc diff --base HEAD --format markdown` on the one-service edit (two compiles + the semantic diff)."""
    run_meshc(
        ["diff", "--base", "HEAD", "--spec", str(state["diff_spec"]), "--format", "markdown"], "| **total** |"
    )


STAGES += (
    # Each diff runs in a child of its own (its setup only), so its peak RSS is the diff's, not a build's.
    Stage(
        name="diff-setup",
        description="(setup, not timed as diff) synthetic spec in a git repo, one service edited",
        run=_diff_setup,
        requires=(),
    ),
    Stage(
        name="meshc-diff",
        description="meshc diff --base HEAD: one-service change (target <= 2.5x meshc-build)",
        run=_meshc_diff,
        requires=("diff-setup",),
    ),
    Stage(
        name="diff-wide-setup",
        description="(setup, not timed as diff) synthetic spec in a git repo, mesh-wide connect_timeout edited",
        run=_diff_wide_setup,
        requires=(),
    ),
    Stage(
        name="diff-wide",
        description="meshc diff --base HEAD: mesh-wide change (every target's CDS document)",
        run=_meshc_diff,
        requires=("diff-wide-setup",),
    ),
)

STAGES += DRIFT_STAGES + ROLLOUT_STAGES


def run_child(spec_dir: Path, last: str) -> None:
    """In the child: run the stages up to `last`, print {stage: [wall, cpu]} as JSON."""
    state: State = {"dir": spec_dir}
    times: dict[str, list[float]] = {}
    chain = next(s.requires for s in STAGES if s.name == last)
    try:
        for stage in STAGES:
            if chain is not None and stage.name not in (*chain, last):
                continue
            wall, cpu = time.perf_counter(), time.process_time()
            with collector_paused():  # as the meshc command line runs every command
                stage.run(state)
            times[stage.name] = [time.perf_counter() - wall, time.process_time() - cpu]
            if stage.name == last:
                break
    finally:
        discard(scratch_dir())  # deleted when the run ends (harness.TRASH)
    print(json.dumps(times))


def measure(spec_dir: Path, last: str) -> tuple[dict[str, list[float]], float]:
    """Run one child through `last`; its stage times (plus "process": its whole life) and its peak RSS in MB."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # Flush others' dirty pages first, so a build's fsyncs pay only for its own.
    os.sync()
    started = time.perf_counter()
    with subprocess.Popen(
        [sys.executable, str(BENCH_SCRIPT), "--child", last, str(spec_dir)], stdout=subprocess.PIPE, env=env
    ) as child:
        output = child.stdout.read() if child.stdout else b""
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - started
    if child.returncode != 0:
        raise SystemExit(f"stage {last} failed on {spec_dir} (exit {child.returncode})")
    times = json.loads(output)
    times["process"] = [elapsed, usage.ru_utime + usage.ru_stime]
    return times, usage.ru_maxrss / 1024  # ru_maxrss is in KiB on Linux
