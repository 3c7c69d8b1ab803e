"""`make bench`: wall time, CPU time and peak RSS of each compiler stage on synthetic meshes.

Each (mesh size, stage) runs in a fresh child process that first runs the stages before it (their
results feed the measured one) and reports each stage's wall and CPU time; the parent reads the
child's peak RSS from wait4(), so the RSS column is the peak of a process that ran everything up to
and including that stage — what a `meshc` run stopping there needs. The target line also gives
the child's whole life (interpreter start and imports included).

To measure a new stage, add a `Stage` to STAGES after the stage whose state it reads. Planned:
render (mesh -> sidecars), backends (sidecars -> artifacts), build (tree + write into a fresh
directory), rebuild (no-op write).

    python benchmarks/bench.py [--sizes 100,1000,3000] [--stages validate,lower,floor] [--repeat 1]
                               [--drift-hosts 10000]

The pseudo-stage `incremental` (every size) runs `meshc build` from scratch, then no-op rebuilds,
one-service rebuilds (one port toggled) and `meshc check`, each a process, at least three times, and
prints medians, the peak RSS (wait4) of each command and the issue's goals. The issue's figures:

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
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Imported before any stage runs, so stage times exclude import time (the target line includes it).
from benchmarks.synth import generate  # noqa: E402 - after the path set-up above
from compiler.ir.lower import lower  # noqa: E402
from compiler.pipeline import collector_paused, validate_only  # noqa: E402
from compiler.render import render  # noqa: E402
from compiler.spec.load import spec_files  # noqa: E402

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
    repo = _committed_spec("diff-repo", state["dir"])
    service = min((repo / "services").glob("*.yaml"))
    text = service.read_text()
    assert "\nport: 8080\n" in text, f"{service.name}: no `port: 8080` to edit"
    service.write_text(text.replace("\nport: 8080\n", "\nport: 8081\n", 1))
    state["diff_spec"] = repo


def _diff_wide_setup(state: State) -> None:
    """Not part of the diff: the synthetic spec committed, then the mesh-wide default connect timeout edited, which
    changes the CDS document of every target (a ConfigMap in every Kubernetes file, every pool's hiera data)."""
    repo = _committed_spec("diff-wide-repo", state["dir"])
    mesh = repo / "mesh.yaml"
    text = mesh.read_text()
    assert 'connect_timeout: "1s"\n' in text, "mesh.yaml: no `connect_timeout: 1s` to edit"
    mesh.write_text(text.replace('connect_timeout: "1s"\n', 'connect_timeout: "2s"\n', 1))
    state["diff_spec"] = repo


def _committed_spec(name: str, spec_dir: Path) -> Path:
    """A scratch git repo holding a copy of the spec, committed; returns its spec directory."""
    repo = scratch_dir() / name
    shutil.rmtree(repo, ignore_errors=True)
    shutil.copytree(spec_dir, repo / "mesh-spec")
    git = [
        "git",
        "-c",
        "user.name=bench",
        "-c",
        "user.email=bench@meshc.invalid",
        "-c",
        "commit.gpgsign=false",
    ]
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "synthetic spec"]):
        subprocess.run(git + command, cwd=repo, check=True)
    return repo / "mesh-spec"


def _meshc_diff(state: State) -> None:
    """`meshc diff --base HEAD --format markdown` on the one-service edit (two compiles + the semantic diff)."""
    import contextlib
    import io

    from compiler.cli import main as meshc

    with contextlib.redirect_stdout(io.StringIO()) as report:  # stdout carries this child's timings
        code = meshc(["diff", "--base", "HEAD", "--spec", str(state["diff_spec"]), "--format", "markdown"])
    assert code == 0 and "| **total** |" in report.getvalue(), report.getvalue()[-2000:]


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


DRIFT_HOSTS = 10_000
# The target for drift over the 1,000-service mesh with 10,000 hosts in PuppetDB.
DRIFT_TARGET_SECONDS, DRIFT_TARGET_RSS_MB = 10.0, 1024


def drift_child(spec_dir: Path, url: str) -> None:
    """In the child: what `meshc drift --puppetdb URL` does for VMs; print {phase: [wall, cpu]} and the findings."""
    from datetime import UTC, datetime

    from compiler.drift.detect import assemble_report
    from compiler.drift.puppet import Policy, check_vms
    from compiler.drift.puppet_records import host_records
    from compiler.drift.puppetdb import read_puppetdb
    from compiler.drift.report import format_json
    from compiler.pipeline import compile_dir

    times: dict[str, Any] = {}
    wall, cpu = time.perf_counter(), time.process_time()
    tree = compile_dir(spec_dir).tree()
    times["compile"] = [time.perf_counter() - wall, time.process_time() - cpu]
    wall, cpu = time.perf_counter(), time.process_time()
    observations = read_puppetdb(url)
    times["read"] = [time.perf_counter() - wall, time.process_time() - cpu]
    wall, cpu = time.perf_counter(), time.process_time()
    result = check_vms(tree, observations, Policy(now=datetime.now(UTC)))
    report = format_json(assemble_report([host_records(result.hosts)], [])) if result.hosts else ""
    times["judge"] = [time.perf_counter() - wall, time.process_time() - cpu]
    hosts = result.hosts.hosts if result.hosts else ()
    times["hosts"] = len(hosts)
    times["states"] = {
        state: sum(1 for h in hosts if h.state == state) for state in sorted({h.state for h in hosts})
    }
    times["report_bytes"] = len(report)
    print(json.dumps(times))


def load_hosts(pdb: Any, spec_dir: Path, count: int) -> int:
    """`count` hosts spread over the mesh's VM pools, through the command API: facts and a report each.

    Most report their pool's hashes; every 50th an older CDS hash (pending), every 97th a failed
    run, every 89th a hand edit. Returns the number of VM pools.
    """
    from concurrent.futures import ThreadPoolExecutor

    from compiler.drift.puppet import expected_rendering
    from compiler.pipeline import compile_dir

    pools = sorted(expected_rendering(compile_dir(spec_dir).tree()).pools.values(), key=lambda e: e.workload)

    def submit(i: int) -> None:
        certname, facts, report = _bench_host(i, pools[i % len(pools)])
        pdb.submit_async("replace_facts", 5, certname, facts)
        pdb.submit_async("store_report", 8, certname, report)

    with ThreadPoolExecutor(max_workers=8) as executor:
        list(executor.map(submit, range(count)))
    pdb.wait_for("reports[count()] {}", count, timeout=3600)
    pdb.wait_for('facts[count()] { name = "mesh_applied" }', count, timeout=3600)
    return len(pools)


def _bench_host(i: int, pool: Any) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Host number `i` of `pool`: its certname, replace_facts (v5) and store_report (v8) payloads."""
    import uuid
    from datetime import UTC, datetime, timedelta

    end = datetime.now(UTC)
    now, start = (
        t.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        for t in (end, end - timedelta(seconds=30))
    )
    _, service, datacenter = pool.workload.split("/")
    documents = dict(pool.hashes)
    if i % 50 == 0:
        documents["envoy/cds.json"] = "0" * 64
    if i % 89 == 0:
        documents["envoy/lds.json"] = "edited:sha256:" + "1" * 64
    certname = f"{service}-{i}.{datacenter}.bench"
    applied = {
        "workload": pool.workload,
        "service": service,
        "datacenter": datacenter,
        "documents": documents,
    }
    facts = {
        "certname": certname,
        "environment": "production",
        "producer_timestamp": now,
        "producer": "bench",
        "values": {"mesh_service": service, "mesh_datacenter": datacenter, "mesh_applied": applied},
    }
    report = {
        "certname": certname,
        "environment": "production",
        "puppet_version": "7.23.0",
        "report_format": 12,
        "configuration_version": "1",
        "start_time": start,
        "end_time": now,
        "producer_timestamp": now,
        "producer": "bench",
        "corrective_change": False,
        "noop": False,
        "noop_pending": False,
        "transaction_uuid": str(uuid.uuid4()),
        "catalog_uuid": str(uuid.uuid4()),
        "code_id": None,
        "cached_catalog_status": "not_used",
        "status": "failed" if i % 97 == 0 else "unchanged",
        "resources": [],
        "logs": [],
        "metrics": [],
    }
    return certname, facts, report


def bench_drift(size: int, hosts: int) -> None:
    """The optional drift-puppet stage: a scratch PuppetDB with `hosts` hosts, one measured drift process."""
    from tests.puppetdb_server import PuppetDB, missing_tools

    missing = missing_tools()
    if missing:
        print(
            f"{size:>8}  drift-puppet skipped: needs {', '.join(missing)} (apt-get install puppetdb postgresql)"
        )
        return
    spec_dir = spec_for(size)
    dumps = cluster_dumps(spec_dir)  # made once; not timed
    pdb = PuppetDB(command_threads=2)
    both = None
    try:
        pdb.start()
        started = time.perf_counter()
        pools = load_hosts(pdb, spec_dir, hosts)
        print(
            f"{size:>8}  (setup: {hosts} hosts over {pools} VM pools loaded into PuppetDB in "
            f"{time.perf_counter() - started:.0f} s)"
        )
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        started = time.perf_counter()
        with subprocess.Popen(
            [sys.executable, __file__, "--drift-child", str(spec_dir), pdb.url],
            stdout=subprocess.PIPE,
            env=env,
        ) as child:
            output = child.stdout.read() if child.stdout else b""
            _, status, usage = os.wait4(child.pid, 0)
        elapsed, rss = time.perf_counter() - started, usage.ru_maxrss / 1024
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit("drift-puppet failed")
        # The figure: both platforms in one `meshc drift` process.
        both = whole_drift(spec_dir, pdb.url, dumps)
    finally:
        pdb.stop()
    times = json.loads(output)
    for phase, what in (
        ("compile", "compile the spec (the built tree drift compares with)"),
        ("read", f"read /pdb/query/v4/nodes + facts ({times['hosts']} mesh hosts)"),
        ("judge", "judge every host, summaries, JSON report"),
    ):
        wall, cpu = times[phase]
        print(f"{size:>8}  {'drift-' + phase:<10} {wall:>7.3f} {cpu:>7.3f} {'':>11}  {what}")
    verdict = "ok" if elapsed <= DRIFT_TARGET_SECONDS and rss <= DRIFT_TARGET_RSS_MB else "MISSED"
    print(
        f"{size:>8}  drift-puppet: whole process {elapsed:.3f} s, peak RSS {rss:.1f} MB "
        f"(target <= {DRIFT_TARGET_SECONDS:g} s, <= {DRIFT_TARGET_RSS_MB} MB): {verdict}; states {times['states']}"
    )
    if both is not None:
        wall, cpu, rss, code = both
        verdict = "ok" if wall <= DRIFT_TARGET_SECONDS and rss <= DRIFT_TARGET_RSS_MB else "MISSED"
        print(
            f"{size:>8}  meshc drift --puppetdb + {len(dumps)} dumps: "
            f"{wall:.3f} s wall, {cpu:.3f} s CPU, peak RSS {rss:.1f} MB, "
            f"exit {code} (target <= {DRIFT_TARGET_SECONDS:g} s, <= {DRIFT_TARGET_RSS_MB} MB): {verdict}"
        )


def whole_drift(spec_dir: Path, url: str, dumps: list[Path]) -> tuple[float, float, float, int]:
    """One real `meshc drift --puppetdb URL --kubernetes C=DUMP... --format json` process.

    Returns (wall s, CPU s, peak RSS MB, exit code)."""
    pairs = [arg for path in dumps for arg in ("--kubernetes", f"{path.stem}={path}")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "compiler",
            "drift",
            str(spec_dir),
            "--puppetdb",
            url,
            *pairs,
            "--format",
            "json",
        ],
        stdout=subprocess.DEVNULL,
        env=env,
        cwd=ROOT,
    ) as child:
        _, status, usage = os.wait4(child.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1):  # 1: the bench's hosts include pending, failed and hand-edited ones on purpose
        raise SystemExit(f"meshc drift failed (exit {code})")
    return time.perf_counter() - started, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, code


def _drift_setup(state: State) -> None:
    """Not part of drift: a live dump of every cluster (tests/live_k8s.py's rules), made once under .bench/."""
    state["dumps"] = cluster_dumps(state["dir"])


def cluster_dumps(spec_dir: Path) -> list[Path]:
    """The dump of every cluster of a synthetic mesh, made once beside it (YAML and JSON alternately)."""
    dumps = spec_dir.parent / f"{spec_dir.name}-dumps"
    if not (dumps / "complete").exists():
        from compiler.pipeline import compile_dir
        from tests.live_k8s import dump_json, dump_yaml, live_objects

        tree = compile_dir(spec_dir).tree()
        clusters = sorted({path.split("/")[1] for path in tree if path.startswith("kubernetes/")})
        dumps.mkdir(parents=True, exist_ok=True)
        for index, cluster in enumerate(clusters):  # kubectl's two formats, alternately
            objects = live_objects(tree, cluster)
            suffix, text = ("json", dump_json(objects)) if index % 2 else ("yaml", dump_yaml(objects))
            (dumps / f"{cluster}.{suffix}").write_text(text)
        (dumps / "complete").write_text("")
    return sorted(p for p in dumps.iterdir() if p.suffix in (".yaml", ".json"))


def _meshc_drift(state: State) -> None:
    """`meshc drift --format json` with every cluster's dump: compile, parse the dumps, compare (no drift)."""
    import contextlib
    import io

    from compiler.cli import main as meshc

    pairs = [arg for path in state["dumps"] for arg in ("--kubernetes", f"{path.stem}={path}")]
    with contextlib.redirect_stdout(io.StringIO()) as report:
        code = meshc(["drift", str(state["dir"]), *pairs, "--format", "json"])
    assert code == 0 and '"failing": false' in report.getvalue(), report.getvalue()[-2000:]


STAGES += (
    # Not at 3,000 services: the dumps alone would be ~700 MB on disk; the figure is at 1,000.
    Stage(
        name="drift-setup",
        description="(setup, not timed as drift) a live dump of every cluster, made once",
        run=_drift_setup,
        requires=(),
        sizes=(100, 1_000),
    ),
    Stage(
        name="meshc-drift",
        description="meshc drift: compile + read and compare a dump of every cluster (24)",
        run=_meshc_drift,
        requires=("drift-setup",),
        sizes=(100, 1_000),
    ),
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
    git = [
        "git",
        "-c",
        "user.name=bench",
        "-c",
        "user.email=bench@meshc.invalid",
        "-c",
        "commit.gpgsign=false",
    ]
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
            revisions.append(
                subprocess.run(
                    git + ["rev-parse", "HEAD"], cwd=repo, check=True, capture_output=True, text=True
                ).stdout.strip()
            )
    pins = {"w1": revisions[2], "w2": revisions[1], "w3": revisions[0]}
    (repo / "mesh-spec/rollout.yaml").write_text(
        "hold: false\npins:\n" + "".join(f"  {w}: {r}\n" for w, r in pins.items())
    )
    state["rollout_spec"] = repo / "mesh-spec"
    os.sync()  # the build syncs before its swap: it must pay for its own writes, not for these commits


def _rollout_build(state: State) -> None:
    """`meshc build` of the rollout: four distinct revisions (three pinned, the working tree) into a fresh directory."""
    from compiler.incremental import build_output as build  # meshc build: incremental, from a fresh directory

    out = scratch_dir() / "rollout-out"
    shutil.rmtree(out, ignore_errors=True)
    result = build(state["rollout_spec"], out)
    assert result.changed and (out / "MANIFEST.json").exists()


STAGES += (
    Stage(
        name="rollout-setup",
        description="(setup, not timed as a build) git history of 3 edits, rollout.yaml pinning 3 waves to them",
        run=_rollout_setup,
        requires=(),
    ),
    Stage(
        name="rollout-build",
        description="meshc build with a rollout: 3 pinned revisions + the working tree (goal <= 1.5x meshc-build)",
        run=_rollout_build,
        requires=("rollout-setup",),
    ),
)


# The goal for a full build against the floor (a plain write of the same tree) at 1,000 services.
FLOOR_TARGET_RATIO = 1.3


def floor_child(spec_dir: Path, out: Path) -> None:
    """In the child: write the tree meshc renders with plain Python, durably as meshc does; print [wall, cpu]."""
    from compiler.output.writer import fsync_paths, tree_directories
    from compiler.pipeline import compile_dir

    tree = compile_dir(spec_dir).tree()  # not timed: the floor is the writing alone
    wall, cpu = time.perf_counter(), time.process_time()
    staging = out.parent / f".{out.name}.floor"
    directories = tree_directories(staging, tree)
    for directory in directories:
        directory.mkdir()
    for path, data in tree.items():
        (staging / path).write_bytes(data)
    fsync_paths([staging / path for path in tree], os.O_RDONLY)
    fsync_paths(directories, os.O_RDONLY | os.O_DIRECTORY)
    os.rename(staging, out)
    fsync_paths([out.parent], os.O_RDONLY | os.O_DIRECTORY)
    print(
        json.dumps(
            [time.perf_counter() - wall, time.process_time() - cpu, len(tree), sum(map(len, tree.values()))]
        )
    )


def _timed_process(command: list[str]) -> tuple[bytes, float, float]:
    """Run `command` (others' dirty pages flushed first); its stdout, wall seconds and CPU seconds (user + system)."""
    os.sync()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    with subprocess.Popen(command, stdout=subprocess.PIPE, env=env) as child:
        output = child.stdout.read() if child.stdout else b""
        _, status, usage = os.wait4(child.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed (exit {os.waitstatus_to_exitcode(status)})")
    return output, time.perf_counter() - started, usage.ru_utime + usage.ru_stime


def bench_floor(size: int, repeat: int) -> None:
    """`meshc build` into a fresh directory against the floor, alternately, `repeat` pairs; print both and the ratio."""
    spec_dir = spec_for(size)
    work = BENCH_DIR / f"floor-{os.getpid()}"
    pairs: list[tuple[float, float, float, float]] = []
    try:
        for run in range(max(1, repeat)):
            built, floor = work / f"meshc-{run}", work / f"floor-{run}"
            work.mkdir(parents=True, exist_ok=True)
            _, build_wall, build_cpu = _timed_process(
                [sys.executable, "-m", "compiler", "build", str(spec_dir), "-o", str(built)]
            )
            output, _, _ = _timed_process(
                [sys.executable, __file__, "--floor-child", str(spec_dir), str(floor)]
            )
            floor_wall, floor_cpu, files, size_bytes = json.loads(output)
            if (built / "MANIFEST.json").read_bytes() != (floor / "MANIFEST.json").read_bytes():
                # the manifest holds every file's sha256: equal manifests, equal trees
                raise SystemExit("the floor did not write the tree meshc built")
            pairs.append((build_wall, build_cpu, floor_wall, floor_cpu))
            shutil.rmtree(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"{size:>8}  {'floor':<10} {_span([p[2] for p in pairs]):>15} {_span([p[3] for p in pairs]):>15}  "
        f"plain Python, same {files} files ({size_bytes / 2**20:.0f} MiB), fresh directory, fsync files + directories"
    )
    print(
        f"{size:>8}  {'build':<10} {_span([p[0] for p in pairs]):>15} {_span([p[1] for p in pairs]):>15}  "
        f"`meshc build` process into a fresh directory (interpreter start to exit)"
    )
    ratios = sorted(p[0] / p[2] for p in pairs)
    median = ratios[len(ratios) // 2]
    verdict = "ok" if median <= FLOOR_TARGET_RATIO else "MISSED"
    print(
        f"{size:>8}  build / floor, wall: "
        f"median {median:.2f}x over {len(pairs)} pair(s), range {ratios[0]:.2f}-{ratios[-1]:.2f}x; "
        f"cpu {_span([p[1] / p[3] for p in pairs], 'x')} (goal <= {FLOOR_TARGET_RATIO:g}x): {verdict}"
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class Run:
    """One measured `meshc` process: wall and CPU seconds, peak RSS (MiB), what it printed."""

    wall: float
    cpu: float
    rss: float
    stdout: str


def meshc_run(*args: str) -> Run:
    """Run `python -m compiler ARGS` (others' dirty pages flushed first); its wall, CPU, peak RSS (wait4) and stdout."""
    os.sync()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    with subprocess.Popen(
        [sys.executable, "-m", "compiler", *args], stdout=subprocess.PIPE, env=env
    ) as child:
        output = child.stdout.read() if child.stdout else b""
        _, status, usage = os.wait4(child.pid, 0)
    if os.waitstatus_to_exitcode(status) not in (0, 1):
        raise SystemExit(f"meshc {' '.join(args)} failed (exit {os.waitstatus_to_exitcode(status)})")
    return Run(
        wall=time.perf_counter() - started,
        cpu=usage.ru_utime + usage.ru_stime,
        rss=usage.ru_maxrss / 1024,
        stdout=output.decode(),
    )


# The goals for incremental builds (1,000 services) and memory (3,000 and 10,000 services).
ONE_SERVICE_SECONDS, ONE_SERVICE_SHARE, NOOP_SECONDS, CHECK_SECONDS = 0.3, 0.10, 0.3, 0.5
RSS_GOALS_MB = {3_000: 1024, 10_000: 2048}
FULL_SECONDS_10K = 60.0


def bench_incremental(size: int, repeat: int) -> None:
    """`meshc build` from scratch, then no-op rebuilds, one-service rebuilds (one port toggled) and `meshc check`.

    Each a separate process, `repeat` times (medians printed with the range); the spec is a copy, so the
    edits stay there. At the end the incremental tree's manifest must equal a clean build's.
    """
    work = BENCH_DIR / f"incremental-{os.getpid()}"
    spec, out = work / "spec", work / "out"
    try:
        shutil.copytree(spec_for(size), spec)
        full = meshc_run("build", str(spec), "-o", str(out))
        noop = [meshc_run("build", str(spec), "-o", str(out)) for _ in range(repeat)]
        victim = spec / "services" / f"svc-{size // 2:04d}.yaml"
        one = []
        for run in range(repeat):
            text = victim.read_text()
            victim.write_text(
                text.replace("\nport: 8080\n", "\nport: 8081\n")
                if run % 2 == 0
                else text.replace("\nport: 8081\n", "\nport: 8080\n")
            )
            one.append(meshc_run("build", str(spec), "-o", str(out)))
        check = [meshc_run("check", str(spec), "-o", str(out)) for _ in range(repeat)]
        if any("up to date" not in r.stdout for r in (*noop, *check)):
            raise SystemExit("a no-op build or a check found something to do")
        clean = work / "clean"
        if size <= 3_000:
            meshc_run("build", str(spec), "-o", str(clean))
            if (clean / "MANIFEST.json").read_bytes() != (out / "MANIFEST.json").read_bytes():
                raise SystemExit("the incremental tree is not the clean build's")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    written = one[-1].stdout.strip()
    rows = (
        ("full", [full], "`meshc build` into a fresh directory, whole process"),
        ("no-op", noop, "`meshc build` again: nothing changed"),
        ("one-svc", one, f"`meshc build` after one service's port changed ({written.split(': ', 1)[1]})"),
        ("check", check, "`meshc check` of an up-to-date output"),
    )
    for name, runs, what in rows:
        print(
            f"{size:>8}  {name:<10} {_median(r.wall for r in runs):>7.3f} {_median(r.cpu for r in runs):>7.3f} "
            f"{max(r.rss for r in runs):>11.1f}  {what}; wall {_span([r.wall for r in runs])} s over {len(runs)}"
        )
    share = _median(r.wall for r in one) / full.wall
    print(f"{size:>8}  one-service rebuild / full build, wall: {share:.1%}")
    if size == TARGET_SIZE:
        goals = (
            ("one-service rebuild", _median(r.wall for r in one), ONE_SERVICE_SECONDS),
            ("no-op rebuild", _median(r.wall for r in noop), NOOP_SECONDS),
            ("check", _median(r.wall for r in check), CHECK_SECONDS),
        )
        for what, seconds, goal in goals:
            print(
                f"{size:>8}  {what}: {seconds:.3f} s wall (goal <= {goal:g} s): {_verdict(seconds <= goal)}"
            )
        print(
            f"{size:>8}  one-service share: {share:.1%} (goal <= {ONE_SERVICE_SHARE:.0%}): "
            f"{_verdict(share <= ONE_SERVICE_SHARE)}"
        )
    if size in RSS_GOALS_MB:
        peak = max(r.rss for r in (full, *noop, *one, *check))
        print(
            f"{size:>8}  peak RSS of every command: {peak:.0f} MB (goal <= {RSS_GOALS_MB[size]} MB): "
            f"{_verdict(peak <= RSS_GOALS_MB[size])}"
        )
    if size == 10_000:
        print(
            f"{size:>8}  full build: {full.wall:.1f} s (goal <= {FULL_SECONDS_10K:g} s): "
            f"{_verdict(full.wall <= FULL_SECONDS_10K)}"
        )


def _median(values: Iterable[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def _span(values: list[float], unit: str = "") -> str:
    """`low-high` of a few measurements (one value when there is one)."""
    low, high = min(values), max(values)
    return f"{low:.2f}{unit}" if len(values) == 1 else f"{low:.2f}-{high:.2f}{unit}"


def scratch_dir() -> Path:
    """This child's own working directory under .bench/, removed when it ends: concurrent runs must not share one."""
    return BENCH_DIR / f"scratch-{os.getpid()}"


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
        shutil.rmtree(scratch_dir(), ignore_errors=True)
    print(json.dumps(times))


def measure(spec_dir: Path, last: str) -> tuple[dict[str, list[float]], float]:
    """Run one child through `last`; its stage times (plus "process": its whole life) and its peak RSS in MB."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # Flush others' dirty pages first, so a build's fsyncs pay only for its own.
    os.sync()
    started = time.perf_counter()
    with subprocess.Popen(
        [sys.executable, __file__, "--child", last, str(spec_dir)], stdout=subprocess.PIPE, env=env
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


def spec_for(size: int) -> Path:
    """The synthetic spec of `size` services under .bench/, generated (deterministically) if absent."""
    out = BENCH_DIR / f"mesh-n{size}-d{DATACENTERS}-c{CLUSTERS}-k{DEPENDENCIES}"
    if not (out / "mesh.yaml").exists():
        generate(out, size, DATACENTERS, CLUSTERS, DEPENDENCIES)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="comma-separated service counts")
    parser.add_argument(
        "--stages",
        default=",".join([*(s.name for s in STAGES), "floor", "incremental", "drift-puppet"]),
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
    stages = [s for s in STAGES if s.name in args.stages.split(",")]
    print(
        f"meshc benchmark: D={DATACENTERS} datacenters, C={CLUSTERS} clusters, "
        f"K={DEPENDENCIES} dependencies per service; "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"
    )
    print(f"{'services':>8}  {'stage':<10} {'wall s':>7} {'cpu s':>7} {'peak RSS MB':>11}  what")
    for size in (int(n) for n in args.sizes.split(",")):
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
        if size == TARGET_SIZE and {"validate", "lower"} <= set(totals):
            wall = totals["validate"][0] + totals["lower"][0]
            rss = totals["lower"][2]
            verdict = "ok" if wall <= TARGET_SECONDS and rss <= TARGET_RSS_MB else "MISSED"
            print(
                f"{size:>8}  validate + lower: {wall:.3f} s, peak RSS {rss:.1f} MB "
                f"(target <= {TARGET_SECONDS:g} s, <= {TARGET_RSS_MB} MB): {verdict}; "
                f"whole process {totals['lower'][3]:.3f} s"
            )
        if size == TARGET_SIZE and "floor" in args.stages.split(","):
            bench_floor(size, max(3, args.repeat))
        if "incremental" in args.stages.split(","):
            bench_incremental(size, max(3, args.repeat))
        if size == TARGET_SIZE and "drift-puppet" in args.stages.split(","):
            bench_drift(size, args.drift_hosts)


def _verdict(met: bool) -> str:
    return "ok" if met else "MISSED"


if __name__ == "__main__":
    main()
