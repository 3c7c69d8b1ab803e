"""The drift benchmarks: `meshc drift` against cluster dumps (stages), and against a PuppetDB (drift-puppet)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import BENCH_SCRIPT, ROOT, Stage, State, spec_for

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
    from datetime import UTC, datetime, timedelta

    from tests.puppetdb_server import report_payload

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
    report = report_payload(certname, start, now, "bench", "failed" if i % 97 == 0 else "unchanged")
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
            [sys.executable, str(BENCH_SCRIPT), "--drift-child", str(spec_dir), pdb.url],
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
        # --partial: the synthetic mesh has VM pools too, and this stage gives no PuppetDB
        code = meshc(["drift", str(state["dir"]), *pairs, "--partial", "--format", "json"])
    assert code == 0 and '"failing": false' in report.getvalue(), report.getvalue()[-2000:]


DRIFT_STAGES: tuple[Stage, ...] = (
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
