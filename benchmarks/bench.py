"""`make bench`: wall time, CPU time and peak RSS of each compiler stage on synthetic meshes.

Each (mesh size, stage) runs in a fresh child process that first runs the stages before it (their
results feed the measured one) and reports each stage's wall and CPU time; the parent reads the
child's peak RSS from wait4(), so the RSS column is the peak of a process that ran everything up to
and including that stage — what a `meshc` run stopping there needs. The target line also gives
the child's whole life (interpreter start and imports included).

To measure a new stage, add a `Stage` to STAGES (benchmarks/stages.py; drift.py and rollout.py add
theirs) after the stage whose state it reads. The modules beside this one are named for what they
measure; harness.py holds what they share.

    python benchmarks/bench.py [--sizes 100,1000,3000] [--stages validate,lower,floor] [--repeat 1]
                               [--drift-hosts 10000]

The pseudo-stage `incremental` (every size) runs `meshc build` from scratch, then no-op rebuilds,
one-service rebuilds (one port toggled) and `meshc check`, each a process, at least three times, and
prints medians, the peak RSS (wait4) of each command, the peak PSS summed over its process tree (a full
build forks a worker and fsync helpers; harness.TreeMemory: every run at the sizes with a memory goal, else
the first run of each command, full build included, as sampling slows what it samples) and the issue's goals,
memory taken as the larger of the two. The issue's figures:

    python benchmarks/bench.py --sizes 1000,3000 --stages incremental --repeat 5
    python benchmarks/bench.py --sizes 10000 --stages incremental --repeat 3

The pseudo-stage `floor` (1,000-service mesh) measures, pair by pair, `meshc build` as a process
(interpreter start to exit, into a fresh directory) against the floor: a plain-Python write of the
very same tree (the same files in the same order, the same bytes — checked through the manifest)
into a fresh directory, with the same durability (fsync each file, each directory, the parent after
the rename), timed from the first mkdir to the last fsync. It prints the ratio (goal <= 1.3x).

The optional stage `drift-puppet` (1,000-service mesh only) needs the Debian puppetdb and
postgresql packages: it starts a scratch PuppetDB (tests/puppetdb_server.py), loads --drift-hosts
hosts through the command API, then measures a `meshc drift`-style process (compile the spec,
read PuppetDB, judge every host) in a fresh child, and then the issue's figure: one real
`meshc drift --puppetdb URL --kubernetes C=DUMP...` process with those hosts and a dump of every
cluster (the dumps of stage drift-setup). Without the packages it says so and is skipped.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# stages imports the compiler's stages before any stage runs, so stage times exclude import time.
from benchmarks.drift import DRIFT_HOSTS, bench_drift, drift_child  # noqa: E402 - after the path set-up above
from benchmarks.floor import bench_floor, floor_child  # noqa: E402
from benchmarks.harness import (  # noqa: E402
    CLUSTERS,
    DATACENTERS,
    DEPENDENCIES,
    SIZES,
    TARGET_RSS_MB,
    TARGET_SECONDS,
    TARGET_SIZE,
    Stage,
    empty_trash,
    spec_for,
)
from benchmarks.incremental import RSS_GOALS_MB, bench_incremental  # noqa: E402
from benchmarks.stages import STAGES, measure, run_child  # noqa: E402


def _sizes(text: str) -> list[int]:
    """`--sizes`: positive service counts, comma-separated; a usage error (not a traceback) otherwise."""
    try:
        sizes = [int(n) for n in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of service counts: {text!r}") from None
    if min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"service counts are positive: {text!r}")
    return sizes


# The stages that are a rollout's meshc commands (benchmarks/rollout.py), whose peak RSS has the memory goals too.
ROLLOUT_COMMANDS = ("rollout-build", "rollout-plan", "rollout-diff")
# Stages run by their own functions in main(), beside those of STAGES.
PROCESS_STAGES = ("floor", "incremental", "drift-puppet")


def _stages(text: str) -> list[str]:
    """`--stages`: known stage names, comma-separated; a usage error (not a run that measures nothing) otherwise."""
    known = [*(s.name for s in STAGES), *PROCESS_STAGES]
    unknown = [name for name in text.split(",") if name not in known]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"no stage {', '.join(map(repr, unknown))}; stages: {', '.join(known)}"
        )
    return text.split(",")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        type=_sizes,
        default=list(SIZES),
        help=f"comma-separated service counts (default: {','.join(map(str, SIZES))})",
    )
    parser.add_argument(
        "--stages",
        type=_stages,
        default=[*(s.name for s in STAGES), *PROCESS_STAGES],
        help="comma-separated stage names (floor and drift-puppet: 1,000 services; drift-puppet needs PuppetDB; "
        "incremental: full, no-op and one-service builds and check as processes, with peak RSS, at every size)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per measurement; the fastest is reported")
    parser.add_argument(
        "--drift-hosts", type=int, default=DRIFT_HOSTS, help="hosts in PuppetDB for drift-puppet"
    )
    parser.add_argument("--child", nargs=2, metavar=("STAGE", "SPEC"), help=argparse.SUPPRESS)
    parser.add_argument("--drift-child", nargs=2, metavar=("SPEC", "URL"), help=argparse.SUPPRESS)
    parser.add_argument("--floor-child", nargs=2, metavar=("SPEC", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(Path(args.child[1]), args.child[0])
        return
    if args.drift_child:
        drift_child(Path(args.drift_child[0]), args.drift_child[1])
        return
    if args.floor_child:
        floor_child(Path(args.floor_child[0]), Path(args.floor_child[1]))
        return
    stages = [s for s in STAGES if s.name in args.stages]
    try:
        _run(args, stages)
    finally:
        empty_trash()


def _run(args: argparse.Namespace, stages: list[Stage]) -> None:
    print(
        f"meshc benchmark: D={DATACENTERS} datacenters, C={CLUSTERS} clusters, "
        f"K={DEPENDENCIES} dependencies per service; "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"
    )
    print(f"{'services':>8}  {'stage':<10} {'wall s':>7} {'cpu s':>7} {'peak RSS MB':>11}  what")
    for size in args.sizes:
        spec_dir = spec_for(size)
        totals: dict[str, list[float]] = {}
        for stage in stages:
            if stage.sizes is not None and size not in stage.sizes:
                continue
            runs = [measure(spec_dir, stage.name) for _ in range(max(1, args.repeat))]
            times, rss = min(runs, key=lambda run: run[0][stage.name][0])
            wall, cpu = times[stage.name]
            totals[stage.name] = [wall, cpu, rss, times["process"][0]]
            print(f"{size:>8}  {stage.name:<10} {wall:>7.3f} {cpu:>7.3f} {rss:>11.1f}  {stage.description}")
        if {"meshc-build", "rollout-build"} <= set(totals):
            ratio = totals["rollout-build"][0] / totals["meshc-build"][0]
            print(f"{size:>8}  rollout-build / meshc-build: {ratio:.2f}x wall (goal <= 1.5x)")
        rollout = {name: totals[name][2] for name in ROLLOUT_COMMANDS if name in totals}
        if size in RSS_GOALS_MB and rollout:
            # "every command" includes the rollout's: a build, plan and diff where a rollout.yaml is in force
            peak = max(rollout.values())
            each = ", ".join(f"{name} {rss:.0f}" for name, rss in rollout.items())
            verdict = "ok" if peak <= RSS_GOALS_MB[size] else "MISSED"
            print(
                f"{size:>8}  peak RSS with a rollout, MB: {each} (goal <= {RSS_GOALS_MB[size]} MB): {verdict}"
            )
        if size == TARGET_SIZE and {"validate", "lower"} <= set(totals):
            wall = totals["validate"][0] + totals["lower"][0]
            rss = totals["lower"][2]
            verdict = "ok" if wall <= TARGET_SECONDS and rss <= TARGET_RSS_MB else "MISSED"
            print(
                f"{size:>8}  validate + lower: {wall:.3f} s, peak RSS {rss:.1f} MB "
                f"(target <= {TARGET_SECONDS:g} s, <= {TARGET_RSS_MB} MB): {verdict}; "
                f"whole process {totals['lower'][3]:.3f} s"
            )
        if size == TARGET_SIZE and "floor" in args.stages:
            bench_floor(size, max(3, args.repeat))
        if "incremental" in args.stages:
            bench_incremental(size, max(3, args.repeat))
        if size == TARGET_SIZE and "drift-puppet" in args.stages:
            bench_drift(size, args.drift_hosts)
        empty_trash()  # the trash holds one size's trees at most (the disk is not unbounded)


if __name__ == "__main__":
    main()
