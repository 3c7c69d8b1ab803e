"""`meshc drift` with both platforms wired: the real command line against a real PuppetDB (over HTTPS with a
client certificate), against export files taken from it, and with cluster dumps beside it.

One module fixture empties the session's PuppetDB (deactivating what earlier modules left), then submits
through the command API one converged host for every VM pool of the example mesh and, in one pool, a
host in each other state and an orphan. Exports are that PuppetDB's own answers, filtered per test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from compiler.drift.puppet import Expectation, expected_rendering
from compiler.pipeline import Build
from compiler.render import ENVOY_CDS, ENVOY_LDS
from compiler.rollout.output import output_for
from tests.conftest import EXAMPLE, ROOT, inventory_of, meshc_in_process, write_spec
from tests.live_k8s import dump_json, live_objects
from tests.puppetdb_server import PuppetDB, free_port
from tests.test_drift_puppet import OLD_HASH, iso, mesh_facts, submit_facts, submit_report
from tests.test_invalid_specs import BASE
from tests.test_safety_spec import meshc as safety_meshc

POOL = "vm/encryption/sjc"
LONE_POOL = "vm/audit-log/gcp-usc1"  # wave canary: whole targets, no canary hosts (the example's rollout)
PENDING = "encryption-pending.sjc.wire"  # an older CDS hash, facts fresh: within the lag
DRIFTED = "encryption-edited.sjc.wire"  # lds.json edited by hand
FAILED = "encryption-failed.sjc.wire"
UNKNOWN = "encryption-cached.sjc.wire"  # ran a cached catalog
ORPHAN = "ghost-1.sjc.wire"  # mesh facts for a pool meshc does not render
MESH_FACTS = '["mesh_applied", "mesh_service", "mesh_datacenter"]'
CLUSTERS = ("gke-usc1-a", "kube-iad-a", "kube-sjc-a")


def ok_hosts(workload: str, canaries: Mapping[str, Expectation]) -> tuple[str, ...]:
    """The hosts of a pool that report converged: its inventory hosts that are no canary hosts (drift counts an
    inventory host PuppetDB does not know as unknown), or one of the fleet's own where the inventory has none."""
    _, service, datacenter = workload.split("/")
    listed = sorted(c for c, pool in inventory_of(EXAMPLE).items() if pool == workload and c not in canaries)
    return tuple(listed) or (f"{service}-ok.{datacenter}.wire",)


@dataclass(frozen=True, kw_only=True, slots=True)
class Fleet:
    """The PuppetDB the hosts are in, its answers (for exports), the client certificate, when they were submitted."""

    pdb: PuppetDB
    pools: Mapping[str, Expectation]
    canaries: Mapping[str, Expectation]  # the example rollout's canary hosts (node files), by certname
    ok: Mapping[str, tuple[str, ...]]  # pool -> its hosts that report converged (ok_hosts)
    nodes: list[dict[str, Any]]
    facts: list[dict[str, Any]]
    client: tuple[Path, Path]
    submitted: datetime


def deactivate_all(pdb: PuppetDB) -> None:
    """Deactivate every node: drift reads only active nodes, so each module sees only its own hosts."""
    now = iso(datetime.now(UTC))
    for row in pdb.query("nodes[certname] {}"):
        pdb.command(
            "deactivate node", 3, row["certname"], {"certname": row["certname"], "producer_timestamp": now}
        )


@pytest.fixture(scope="module")
def fleet(puppetdb: PuppetDB) -> Iterator[Fleet]:
    deactivate_all(puppetdb)
    # what meshc build writes: the rollout's tree, node files included
    rendering = expected_rendering(output_for(EXAMPLE))
    pools, canaries = rendering.pools, rendering.nodes
    now = datetime.now(UTC)
    ok = {workload: ok_hosts(workload, canaries) for workload in pools}
    hosts: dict[str, tuple[dict[str, Any], str, str]] = {
        certname: (mesh_facts(workload, dict(e.hashes)), "unchanged", "not_used")
        for workload, e in pools.items()
        for certname in ok[workload]
    }
    hosts |= {
        certname: (mesh_facts(e.workload, dict(e.hashes)), "unchanged", "not_used")
        for certname, e in canaries.items()
    }
    documents = dict(pools[POOL].hashes)
    hosts |= {
        PENDING: (mesh_facts(POOL, documents | {ENVOY_CDS: OLD_HASH}), "unchanged", "not_used"),
        DRIFTED: (
            mesh_facts(POOL, documents | {ENVOY_LDS: "edited:sha256:" + "1" * 64}),
            "changed",
            "not_used",
        ),
        FAILED: (mesh_facts(POOL, documents), "failed", "not_used"),
        UNKNOWN: (mesh_facts(POOL, documents), "unchanged", "on_failure"),
        ORPHAN: (mesh_facts("vm/ghost/sjc", documents), "unchanged", "not_used"),
    }
    for certname, (facts, status, cached) in hosts.items():
        submit_facts(puppetdb, certname, facts, now)
        submit_report(puppetdb, certname, now, status, cached)
    assert puppetdb.tls is not None
    nodes = puppetdb.query("nodes {}")
    assert sorted(row["certname"] for row in nodes) == sorted(hosts)
    yield Fleet(
        pdb=puppetdb,
        pools=pools,
        canaries=canaries,
        ok=ok,
        nodes=nodes,
        facts=puppetdb.query(f"facts {{ name in {MESH_FACTS} }}"),
        client=puppetdb.tls.client("meshc-drift-wire"),
        submitted=now,
    )
    deactivate_all(puppetdb)  # leave the session's PuppetDB as empty as this module found it


def meshc(*args: str, command: str = "drift", seed: str | None = None) -> subprocess.CompletedProcess[str]:
    """`meshc COMMAND EXAMPLE ARGS`: in this process, or in a child process when a hash seed is asked for."""
    if seed is None:
        result = meshc_in_process(command, EXAMPLE, *args, env={"MESHC_TODAY": "2026-11-30"})
        assert "Traceback" not in result.stdout + result.stderr
        return result
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MESHC_TODAY": "2026-11-30", "PYTHONHASHSEED": seed}
    env.pop("MESHC_DEBUG", None)
    result = subprocess.run(
        [sys.executable, "-m", "compiler", command, str(EXAMPLE), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "Traceback" not in result.stdout + result.stderr
    return result


def tls_args(fleet: Fleet) -> list[str]:
    assert fleet.pdb.tls is not None
    cert, key = fleet.client
    return [
        "--puppetdb",
        fleet.pdb.ssl_url,
        "--puppetdb-ca",
        str(fleet.pdb.tls.ca_cert),
        "--puppetdb-cert",
        str(cert),
        "--puppetdb-key",
        str(key),
    ]


def export(fleet: Fleet, path: Path, keep: set[str]) -> Path:
    """An export file of PuppetDB's own answers, with only the hosts in `keep`."""
    path.write_text(
        json.dumps(
            {
                "nodes": [n for n in fleet.nodes if n["certname"] in keep],
                "facts": [f for f in fleet.facts if f["certname"] in keep],
            },
            indent=1,
        )
    )
    return path


def converged_hosts(fleet: Fleet) -> set[str]:
    return {certname for hosts in fleet.ok.values() for certname in hosts} | set(fleet.canaries)


def canaries_of(fleet: Fleet, workload: str) -> int:
    return sum(e.workload == workload for e in fleet.canaries.values())


def states(data: Mapping[str, Any]) -> dict[str, str]:
    return {s["subject"]: s["state"] for s in data["subjects"]}


def kubernetes_args(directory: Path) -> list[str]:
    tree = output_for(EXAMPLE)
    args = []
    for cluster in CLUSTERS:
        path = directory / f"{cluster}.json"
        path.write_text(dump_json(live_objects(tree, cluster)))
        args += ["--kubernetes", f"{cluster}={path}"]
    return args


# ---------------------------------------------------------------- every state, from a real PuppetDB over HTTPS


@pytest.mark.consumer
def test_every_host_state_from_puppetdb_over_https(fleet: Fleet) -> None:
    result = meshc(*tls_args(fleet), "--partial", "--format", "json")
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr
    data = json.loads(result.stdout)
    assert states(data) == {
        PENDING: "pending",
        DRIFTED: "drifted",
        FAILED: "failed",
        UNKNOWN: "unknown",
        ORPHAN: "drifted",
    }
    [scope] = [s for s in data["scopes"] if s["platform"] == "puppet"]
    assert (scope["scope"], scope["evidence"], scope["state"], scope["failing"]) == (
        fleet.pdb.ssl_url,
        fleet.pdb.ssl_url,
        "drifted",
        True,
    )
    assert scope["counts"] == {
        "converged": len(converged_hosts(fleet)),
        "drifted": 1,
        "failed": 1,
        "orphan": 1,
        "pending": 1,
        "unknown": 1,
    }
    pool = next(t for t in data["targets"] if t["target"] == POOL)
    k = canaries_of(fleet, POOL) + len(fleet.ok[POOL])
    assert (pool["subjects"], pool["converged"], pool["state"]) == (4 + k, k, "drifted")
    items = {i["id"]: i for s in data["subjects"] for i in s["items"]}
    edited = f"puppet/{fleet.pdb.ssl_url}/{DRIFTED}#drifted:{ENVOY_LDS}"
    assert items[edited]["target"] == POOL and items[edited]["detail"].startswith(
        f"{ENVOY_LDS}: edited by hand"
    )
    assert f"puppet/{fleet.pdb.ssl_url}/{PENDING}#pending:{ENVOY_CDS}" in items
    assert (
        items[f"puppet/{fleet.pdb.ssl_url}/{ORPHAN}#orphan"]["detail"]
        == "reports mesh facts for vm/ghost/sjc, which meshc does not render"
    )


@pytest.mark.consumer
def test_text_and_markdown_summarise_per_pool(fleet: Fleet) -> None:
    text = meshc(*tls_args(fleet)).stdout
    k = canaries_of(fleet, POOL) + len(fleet.ok[POOL])
    assert (
        f"  {POOL}: {k}/{4 + k} converged, 1 pending, 1 drifted, 1 failed, 1 unknown: "
        f"{UNKNOWN}, {DRIFTED}, {FAILED}, {PENDING}"
    ) in text.splitlines()
    lone = len(fleet.ok[LONE_POOL])
    assert f"  {LONE_POOL}: {lone}/{lone} converged" in text.splitlines()
    assert text.startswith("meshc drift: NOT CONVERGED: 1 of 4 scope(s) checked, 3 not checked")
    markdown = meshc(*tls_args(fleet), "--format", "markdown").stdout
    assert (
        f"| `{POOL}` | {k}/{4 + k} | 1 pending, 1 drifted, 1 failed, 1 unknown: "
        f"{UNKNOWN}, {DRIFTED}, {FAILED}, {PENDING} |" in markdown
    )
    assert f"{PENDING}</code> pending (target `{POOL}`)" in markdown


# ---------------------------------------------------------------- exit codes, from exports of the same PuppetDB


@pytest.mark.consumer
def test_every_host_converged_exits_0_and_plain_http_reads_the_same(fleet: Fleet, tmp_path: Path) -> None:
    result = meshc(
        "--puppet-facts", str(export(fleet, tmp_path / "export.json", converged_hosts(fleet))), "--partial"
    )
    assert result.returncode == 0, result.stdout
    assert result.stdout.startswith(
        "meshc drift: converged: 1 of 4 scope(s) checked, 3 not checked (--partial)"
    )
    assert "not converged:" not in result.stdout
    plain = json.loads(meshc("--puppetdb", fleet.pdb.url, "--partial", "--format", "json").stdout)
    over_tls = json.loads(meshc(*tls_args(fleet), "--partial", "--format", "json").stdout)
    assert states(plain) == states(over_tls)


@pytest.mark.consumer
def test_pending_within_the_lag_exits_0_and_shows_it_past_the_lag_drifted(
    fleet: Fleet, tmp_path: Path
) -> None:
    facts = str(export(fleet, tmp_path / "export.json", converged_hosts(fleet) | {PENDING}))
    within = meshc("--puppet-facts", facts, "--partial")
    assert within.returncode == 0, within.stdout
    assert within.stdout.startswith(
        "meshc drift: converging: 1 pending within the lag: 1 of 4 scope(s) checked"
    )
    assert f"{PENDING}  [pending]  target {POOL}" in within.stdout
    # deployed 20 minutes before the facts were gathered: past a 10-minute lag, within an hour's
    since = iso(fleet.submitted - timedelta(minutes=20))
    late = meshc("--puppet-facts", facts, "--partial", "--since", since, "--lag", "10m", "--format", "json")
    assert late.returncode == 1 and states(json.loads(late.stdout)) == {PENDING: "drifted"}
    early = meshc("--puppet-facts", facts, "--partial", "--since", since, "--lag", "1h", "--format", "json")
    assert early.returncode == 0 and states(json.loads(early.stdout)) == {PENDING: "pending"}


@pytest.mark.consumer
@pytest.mark.parametrize(
    "host, state", [(DRIFTED, "drifted"), (FAILED, "failed"), (UNKNOWN, "unknown"), (ORPHAN, "drifted")]
)
def test_drifted_failed_unknown_and_orphan_each_exit_1(
    fleet: Fleet, tmp_path: Path, host: str, state: str
) -> None:
    result = meshc(
        "--puppet-facts",
        str(export(fleet, tmp_path / "export.json", converged_hosts(fleet) | {host})),
        "--partial",
        "--format",
        "json",
    )
    assert result.returncode == 1 and states(json.loads(result.stdout)) == {host: state}


@pytest.mark.consumer
def test_inventory_hosts_puppetdb_does_not_know_are_unknown_even_partial(
    fleet: Fleet, tmp_path: Path
) -> None:
    """LONE_POOL's hosts are missing from PuppetDB: each is unknown (the inventory lists it), the pool is not
    converged, and --partial (evidence not given for some scopes) does not excuse it: this evidence was given."""
    missing = set(fleet.ok[LONE_POOL])
    assert len(missing) > 1 and missing <= set(inventory_of(EXAMPLE))
    facts = str(export(fleet, tmp_path / "export.json", converged_hosts(fleet) - missing))
    dumps = kubernetes_args(tmp_path)
    result = meshc(*dumps, "--puppet-facts", facts, "--format", "json")
    assert result.returncode == 1
    data = json.loads(result.stdout)
    assert states(data) == dict.fromkeys(missing, "unknown")
    assert {s["items"][0]["detail"] for s in data["subjects"]} == {
        "no active node in PuppetDB, though inventory/hosts.yaml lists it: if it is retired, regenerate the inventory"
    }
    assert (
        f"  {LONE_POOL}: 0/{len(missing)} converged, {len(missing)} unknown: "
        in meshc(*dumps, "--puppet-facts", facts).stdout
    )
    assert meshc(*dumps, "--puppet-facts", facts, "--partial").returncode == 1


@pytest.mark.consumer
def test_both_platforms_in_one_run(fleet: Fleet, tmp_path: Path) -> None:
    dumps = kubernetes_args(tmp_path)
    facts = str(export(fleet, tmp_path / "export.json", converged_hosts(fleet)))
    # no --partial: every scope has evidence
    result = meshc(*dumps, "--puppet-facts", facts, "--format", "json")
    assert result.returncode == 0, result.stdout[-2000:]
    data = json.loads(result.stdout)
    assert [(s["platform"], s["scope"], s["state"]) for s in data["scopes"]] == [
        *(("kubernetes", c, "converged") for c in CLUSTERS),
        ("puppet", facts, "converged"),
    ]
    mixed = meshc(*dumps, *tls_args(fleet), "--format", "json")
    assert mixed.returncode == 1
    scopes = {s["platform"]: s["state"] for s in json.loads(mixed.stdout)["scopes"]}
    assert scopes == {"kubernetes": "converged", "puppet": "drifted"}


@pytest.mark.consumer
def test_a_host_item_is_acknowledged_by_its_id(fleet: Fleet, tmp_path: Path) -> None:
    facts = str(export(fleet, tmp_path / "export.json", converged_hosts(fleet) | {DRIFTED}))
    acks = tmp_path / "acks.yaml"
    acks.write_text(
        f'acknowledgements:\n  - match: "puppet/*/{DRIFTED}#drifted:{ENVOY_LDS}"\n'
        "    reason: INC-9 debug logging on one host\n    expires: 2026-12-31\n"
    )
    result = meshc("--puppet-facts", facts, "--partial", "--acknowledgements", str(acks), "--format", "json")
    assert result.returncode == 0, result.stdout
    assert states(json.loads(result.stdout)) == {DRIFTED: "acknowledged"}


@pytest.mark.consumer
def test_deployed_hiera_tree_is_a_scope_of_its_own(fleet: Fleet, tmp_path: Path) -> None:
    server = tmp_path / "server"
    for path, data in output_for(EXAMPLE).items():
        if path.startswith("puppet/"):
            (server / path.removeprefix("puppet/")).parent.mkdir(parents=True, exist_ok=True)
            (server / path.removeprefix("puppet/")).write_bytes(data)
    facts = str(export(fleet, tmp_path / "export.json", converged_hosts(fleet)))
    assert meshc("--puppet-facts", facts, "--hiera", str(server), "--partial").returncode == 0
    (server / "modules/mesh/manifests/init.pp").write_text("# edited on the server\n")
    result = meshc("--puppet-facts", facts, "--hiera", str(server), "--partial", "--format", "json")
    assert result.returncode == 1
    data = json.loads(result.stdout)
    assert states(data) == {"modules/mesh/manifests/init.pp": "drifted"}
    assert (
        data["subjects"][0]["items"][0]["id"] == f"puppet/{server}/modules/mesh/manifests/init.pp#hand-edited"
    )


# ---------------------------------------------------------------- bad input: one line, exit 2


def test_unreachable_puppetdb_is_one_line_exit_2() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = meshc("--puppetdb", url)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith(f"{url}/pdb/query/v4/nodes: error: cannot reach PuppetDB: ")
    assert result.stderr.endswith("[puppetdb-unreachable]\n") and result.stderr.count("\n") == 1


@pytest.mark.consumer
def test_https_without_the_ca_is_one_line_exit_2(fleet: Fleet) -> None:
    result = meshc("--puppetdb", fleet.pdb.ssl_url)
    assert (
        result.returncode == 2
        and "certificate verify failed" in result.stderr
        and result.stderr.count("\n") == 1
    )


def test_truncated_export_is_one_line_exit_2(tmp_path: Path) -> None:
    export_file = tmp_path / "export.json"
    export_file.write_text('{"nodes": [\n {"certname": "a"')
    result = meshc("--puppet-facts", str(export_file))
    assert (result.returncode, result.stdout) == (2, "")
    assert (
        result.stderr
        == f"{export_file}:2:18: error: not valid JSON: Expecting ',' delimiter  [puppetdb-export]\n"
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--puppetdb-ca", "ca.pem"],
            "--puppetdb-ca: error: is an option of --puppetdb URL, which is not given  [drift-usage]",
        ),
        (
            ["--puppetdb", "https://x:8081", "--puppetdb-cert", "c.pem"],
            "--puppetdb-cert: error: --puppetdb-cert and --puppetdb-key go together  [drift-usage]",
        ),
        (
            [],
            "meshc drift: error: nothing to check: "
            "give --kubernetes CLUSTER=DUMP for each cluster (gke-usc1-a, kube-iad-a, kube-sjc-a); "
            "or --puppetdb URL (with --puppetdb-ca/-cert/-key for HTTPS) or --puppet-facts FILE for the VMs  "
            "[drift-usage]",
        ),
    ],
)
def test_usage_errors_are_one_line_exit_2(args: list[str], message: str) -> None:
    result = meshc(*args)
    assert (result.returncode, result.stderr) == (2, message + "\n")


@pytest.mark.parametrize(
    "args", [["--lag", "soon"], ["--since", "yesterday"], ["--puppetdb", "u", "--puppet-facts", "f"]]
)
def test_malformed_options_exit_2(args: list[str]) -> None:
    result = meshc(*args)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "usage:" not in result.stderr
    assert result.stderr.startswith(f"meshc: error: drift: argument {args[0]}") or result.stderr.startswith(
        f"meshc: error: drift: argument {args[2]}"
    ), result.stderr
    assert result.stderr.endswith("; see `meshc drift --help`\n")


def test_every_scope_reads_platform_colon_scope_a_path_too(tmp_path: Path) -> None:
    server = tmp_path / "server"
    server.mkdir()
    (server / "hiera.yaml").write_text("# not what meshc renders\n")
    result = meshc("--hiera", str(server), "--partial")
    assert result.returncode == 1, result.stderr
    assert (
        f"  puppet: {server} " in result.stdout and f"puppet: {server} hiera.yaml  [drifted]" in result.stdout
    )
    assert "  kubernetes: gke-usc1-a " in result.stdout, "a cluster reads as the path does"
    assert "puppet//" not in result.stdout
    markdown = meshc("--hiera", str(server), "--partial", "--format", "markdown").stdout
    assert f"`puppet: {server}`" in markdown and "puppet//" not in markdown


def test_an_unreadable_file_in_the_hiera_tree_is_named() -> None:
    """`meshc drift --hiera /` said only `/: cannot read the deployed tree: Permission denied`, with exit 2."""
    # Root reads anything: meshc runs as nobody, in a directory nobody may enter (pytest's tmp_path is root-only).
    with tempfile.TemporaryDirectory(prefix="meshc-hiera-") as name:
        _unreadable_hiera_file_is_named(Path(name))


def _unreadable_hiera_file_is_named(world: Path) -> None:
    write_spec(world / "spec", BASE)
    for path in (world, *world.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)
    server = world / "server"
    (server / "data/nodes").mkdir(parents=True)
    (server / "hiera.yaml").write_text("version: 5\n")
    secret = server / "data/nodes/secret.json"
    secret.write_text("{}\n")
    for path in (server, server / "data", server / "data/nodes"):
        path.chmod(0o755)
    secret.chmod(0o000)
    result = safety_meshc("drift", "spec", "--hiera", str(server), "--partial", cwd=world, as_nobody=True)
    # Permission denied is the machine's refusal: exit 4, as for a dump or export meshc cannot read.
    assert (result.returncode, result.stdout) == (4, "")
    assert result.stderr == f"meshc: error: {secret}: cannot read the deployed tree: permission denied\n", (
        result.stderr
    )


@pytest.mark.consumer
def test_json_is_byte_identical_under_two_hash_seeds(fleet: Fleet, tmp_path: Path) -> None:
    facts = str(export(fleet, tmp_path / "export.json", {n["certname"] for n in fleet.nodes}))
    first, second = (
        meshc("--puppet-facts", facts, "--format", "json", seed=seed).stdout for seed in ("0", "1")
    )
    assert first == second and json.loads(first)["failing"] is True


# ---------------------------------------------------------------- summaries per wave, a canary in its own wave


def test_wave_summaries_count_a_canary_host_in_its_own_wave(example_build: Build) -> None:
    from compiler.backends.puppet import HASHES_KEY
    from compiler.drift.detect import assemble_report
    from compiler.drift.puppet import Policy, detect_puppet_drift
    from compiler.drift.puppet_records import host_records
    from compiler.drift.puppetdb import Applied, Node, Observations
    from compiler.drift.report import report_data
    from compiler.drift.summary import wave_line
    from tests.test_drift_puppet import canary_file

    canary = "encryption-canary.sjc.wire"
    tree = dict(example_build.tree())
    tree[f"puppet/data/nodes/{canary}.json"] = canary_file(example_build.sidecars[POOL], "one")
    manifest = json.loads(tree["MANIFEST.json"])
    manifest["rollout"] = {
        "targets": {t: {"wave": "main", "revision": "a" * 40} for t in manifest["targets"]},
        "hosts": {canary: {"wave": "canary", "revision": "b" * 40, "target": POOL}},
        "waves": [{"name": "canary", "revision": "b" * 40}, {"name": "main", "revision": "a" * 40}],
    }
    tree["MANIFEST.json"] = json.dumps(manifest).encode()
    now = datetime.now(UTC)
    pool_hashes = json.loads(tree["puppet/data/pools/encryption/sjc.json"])[HASHES_KEY]

    def host(certname: str, documents: Mapping[str, str]) -> Node:
        return Node(
            certname=certname,
            pool=POOL,
            report_status="unchanged",
            cached_catalog_status="not_used",
            report_time=now,
            facts_time=now,
            applied=Applied(workload=POOL, documents=dict(documents)),
        )

    # the canary still runs its pool's documents: against its node file it is pending; the pool host converged
    observations = Observations(
        source="export.json", nodes=(host(canary, pool_hashes), host("encryption-ok.sjc.wire", pool_hashes))
    )
    drift = detect_puppet_drift(expected_rendering(tree), observations, Policy(now=now))
    report = assemble_report([host_records(drift)], [], tree=tree)
    waves = {w["wave"]: w for w in report_data(report)["waves"]}
    assert (waves["canary"]["hosts"], waves["canary"]["counts"], waves["canary"]["state"]) == (
        1,
        {"pending": 1},
        "pending",
    )
    assert wave_line(waves["canary"]) == f"canary: 0/1 hosts converged, 1 pending: {canary}"
    # other pools: no hosts
    assert waves["main"]["counts"] == {"converged": 1} and waves["main"]["state"] == "incomplete"
    assert POOL not in waves["main"]["not_converged"] and "vm/auth/sjc" in waves["main"]["not_converged"]
    assert report.failing


POLICY_ORDER = ["canary", "canary-hosts", "sjc", "iad", "restart-sensitive"]  # mesh.yaml's rollout.waves


def export_of(
    rendering: Any, now: datetime, behind: str = "", stale: str = "", absent: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """A PuppetDB export: every inventory host of a rendered pool (but the `absent`) applied its pool's or node
    file's documents, at `now`; the host `behind` still runs an older CDS (pending: no deploy time is known); the
    host `stale` last reported two days ago (unknown)."""
    import yaml

    nodes, facts = [], []
    for host in yaml.safe_load((EXAMPLE / "inventory/hosts.yaml").read_text()):
        pool = f"vm/{host['service']}/{host['datacenter']}"
        expectation = rendering.nodes.get(host["certname"]) or rendering.pools.get(pool)
        if expectation is None or host["certname"] in absent:
            continue
        hashes = dict(expectation.hashes) | ({ENVOY_CDS: OLD_HASH} if host["certname"] == behind else {})
        nodes.append(
            {
                "certname": host["certname"],
                "latest_report_status": "unchanged",
                "cached_catalog_status": "not_used",
                "report_timestamp": iso(now - timedelta(days=2) if host["certname"] == stale else now),
                "facts_timestamp": iso(now - timedelta(days=2) if host["certname"] == stale else now),
            }
        )
        facts += [
            {"certname": host["certname"], "name": name, "value": value}
            for name, value in mesh_facts(pool, hashes).items()
        ]
    return {"nodes": nodes, "facts": facts}


def example_report(
    example_truth: tuple[dict[str, bytes], dict[str, Any]],
    tmp_path: Path,
    behind: str = "",
    without: str = "",
    stale: str = "",
    acknowledgements: Sequence[Any] = (),
    absent: frozenset[str] = frozenset(),
    edit: Callable[[list[dict[str, Any]]], None] | None = None,
) -> Any:
    """The drift report of the example's rollout as built: every cluster's dump (but `without`'s, then a --partial
    run) and a PuppetDB export in which every host applied its rendering (but `behind` and `stale`, see
    `export_of`), with `acknowledgements`."""
    from compiler.drift.detect import assemble_report, kube_objects
    from compiler.drift.kube_dump import parse_dump
    from compiler.drift.kubernetes import check_cluster, expected_objects
    from compiler.drift.puppet import Policy, detect_puppet_drift
    from compiler.drift.puppet_records import host_records
    from compiler.drift.puppetdb import read_export

    tree, values = example_truth
    rendering = expected_rendering(tree)
    now = datetime.now(UTC)
    export = tmp_path / "export.json"
    export.write_text(json.dumps(export_of(rendering, now, behind=behind, stale=stale, absent=absent)))
    drift = detect_puppet_drift(rendering, read_export(export), Policy(now=now), inventory_of(EXAMPLE))
    expected = expected_objects(tree, kube_objects(values))
    clusters = []
    for cluster in (c for c in CLUSTERS if c != without):
        live = live_objects(tree, cluster)
        if edit is not None:
            edit(live)  # a change made in the cluster, by hand or by another controller
        clusters.append(
            check_cluster("box", cluster, expected[cluster], parse_dump(cluster, dump_json(live).encode()))
        )
    unchecked = [("kubernetes", without)] if without else []
    return assemble_report(
        [*clusters, host_records(drift)],
        unchecked,
        tree=tree,
        partial=bool(without),
        acknowledgements=acknowledgements,
    )


def test_wave_summaries_follow_the_policy_and_a_canary_host_wave_counts_hosts(
    example_truth: tuple[dict[str, bytes], dict[str, Any]], tmp_path: Path
) -> None:
    """The example's rollout, everything converged but one canary host: waves in mesh.yaml's order in every format,
    and canary-hosts (hosts_per_pool: 2) counts its canary hosts, not the pools they belong to."""
    from compiler.drift.report import format_markdown, format_text, report_data

    tree, _ = example_truth
    assert [w["name"] for w in json.loads(tree["MANIFEST.json"])["rollout"]["waves"]] == POLICY_ORDER
    rendering = expected_rendering(tree)
    canary = sorted(c for c, e in rendering.nodes.items() if e.workload == POOL)[0]
    report = example_report(example_truth, tmp_path, behind=canary)
    data = report_data(report)
    assert [w["wave"] for w in data["waves"]] == POLICY_ORDER
    waves = {w["wave"]: w for w in data["waves"]}
    assert {
        k: waves["canary-hosts"][k] for k in ("targets", "converged", "hosts", "counts", "not_converged")
    } == {
        "targets": 0,  # a canary-host wave takes no whole targets
        "converged": 0,
        "hosts": len(rendering.nodes),
        "counts": {"converged": len(rendering.nodes) - 1, "pending": 1},
        "not_converged": [canary],
    }
    pool_wave = rendering.pools[POOL].wave
    assert pool_wave == "sjc" and next(r for r in data["targets"] if r["target"] == POOL)["wave"] == pool_wave
    # the pool's canary hosts count in canary-hosts only: sjc's hosts are its pools' other hosts
    sjc_hosts = [
        s.subject
        for s in report.subjects
        if s.subject not in rendering.nodes
        and s.target in rendering.pools
        and rendering.pools[s.target].wave == "sjc"
    ]
    assert waves["sjc"]["hosts"] == len(sjc_hosts) > 0 and waves["sjc"]["not_converged"] == []
    held = f"{len(rendering.nodes) - 1}/{len(rendering.nodes)}"
    # the pending host's item names its document, with the hashes in its detail, not "(absent) → (absent)"
    assert f"pending   {ENVOY_CDS}  (envoy/cds.json: " in format_text(report)
    assert "(absent) → (absent)" not in format_text(report)
    text = format_text(report).split("\nwaves:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert [line.split(":")[0].strip() for line in text] == POLICY_ORDER
    assert text[1] == f"  canary-hosts: {held} hosts converged, 1 pending: {canary}"
    markdown = format_markdown(report).splitlines()
    table = markdown[
        markdown.index("| wave | state | targets converged | hosts converged | not converged |") + 2 :
    ]
    rows = table[: table.index("")]
    assert [row.split(" | ")[0].removeprefix("| ") for row in rows] == POLICY_ORDER
    assert rows[1] == f"| canary-hosts | **pending** | – | {held} | 1 pending: {canary} |"


def test_a_wave_whose_targets_were_not_checked_is_incomplete_never_converged(
    example_truth: tuple[dict[str, bytes], dict[str, Any]], tmp_path: Path
) -> None:
    """`--partial` without gke-usc1-a's dump: the canary wave's targets there have no evidence. Its line counts them
    and names them, not converged, as the promote gate blocks on them; it said `3/3 targets converged`, the
    targets whose evidence was given."""
    from compiler.drift.gate import wave_verdict
    from compiler.drift.report import format_text, report_data

    report = example_report(example_truth, tmp_path, without="gke-usc1-a")
    unchecked = sorted(
        t for t, w in report.waves.items() if w == "canary" and t.startswith("k8s/gke-usc1-a/")
    )
    assert unchecked
    canary = {w["wave"]: w for w in report_data(report)["waves"]}["canary"]
    assert canary["state"] == "incomplete"
    assert canary["targets"] - canary["converged"] == len(unchecked)
    assert [f"{t} (not checked)" for t in unchecked] == [
        n for n in canary["not_converged"] if "not checked" in n
    ]
    line = next(x for x in format_text(report).splitlines() if x.startswith("  canary:"))
    assert f"{canary['converged']}/{canary['targets']} targets converged" in line
    assert len(wave_verdict(report, "canary").blocking) >= len(unchecked)


def test_no_acknowledgement_accepts_an_unknown_host(
    example_truth: tuple[dict[str, bytes], dict[str, Any]], tmp_path: Path
) -> None:
    """Acknowledgements accept known drift. A host that last reported two days ago is unknown (no data): even
    `match: "*"` leaves it unknown, the run failing and the promote gate closed (it was acknowledged and passed)."""
    from compiler.drift.acknowledge import read_acknowledgements
    from compiler.drift.gate import wave_verdict

    rendering = expected_rendering(example_truth[0])
    host = sorted(c for c, e in rendering.nodes.items() if e.workload == POOL)[0]  # a canary host of vm/...
    accepted = read_acknowledgements(
        "acks.yaml",
        b'acknowledgements:\n  - {match: "*", reason: "accept everything", expires: 2099-01-01}\n',
        datetime.now(UTC).date(),
    )
    report = example_report(example_truth, tmp_path, stale=host, acknowledgements=accepted)
    (subject,) = [s for s in report.subjects if s.subject == host]
    assert subject.state == "unknown" and not any(i.acknowledged for i in subject.items)
    assert report.failing
    assert any(f" {host}: unknown" in line for line in wave_verdict(report, "canary-hosts").blocking)


def test_a_pool_only_its_canary_hosts_report_for_is_not_converged(
    example_truth: tuple[dict[str, bytes], dict[str, Any]], tmp_path: Path
) -> None:
    """vm/encryption/sjc's other hosts are missing from PuppetDB; its canary hosts (wave canary-hosts) report,
    judged against their node files. Nothing reports the pool's own rendering (wave sjc): the inventory's other
    hosts are unknown there, sjc is not converged and the promote gate blocks (it passed: `vm/encryption/sjc: 2/2
    converged`)."""
    from compiler.drift.gate import wave_verdict
    from compiler.drift.report import report_data

    rendering = expected_rendering(example_truth[0])
    others = frozenset(
        c for c, pool in inventory_of(EXAMPLE).items() if pool == POOL and c not in rendering.nodes
    )
    assert others and any(e.workload == POOL for e in rendering.nodes.values())
    report = example_report(example_truth, tmp_path, absent=others)
    missing = {s.subject: s for s in report.subjects if s.subject in others}
    assert set(missing) == others and {(s.state, s.wave, s.target) for s in missing.values()} == {
        ("unknown", "sjc", POOL)
    }
    assert all("inventory/hosts.yaml lists it" in s.items[0].detail for s in missing.values())
    assert report.failing
    sjc = {w["wave"]: w for w in report_data(report)["waves"]}["sjc"]
    assert sjc["state"] != "converged" and others <= set(sjc["not_converged"])
    blocking = wave_verdict(report, "sjc").blocking
    assert all(any(f" {host}: unknown" in line for line in blocking) for host in others), blocking


def test_an_inventory_host_puppetdb_does_not_know_is_unknown_beside_the_pools_reporting_hosts(
    example_truth: tuple[dict[str, bytes], dict[str, Any]], tmp_path: Path
) -> None:
    """One of a pool's inventory hosts has no node in PuppetDB while the others report converged: the pool is not
    `n/n converged` over the hosts that happen to report (no data is not a pass); the host is unknown, says why,
    and no acknowledgement accepts it."""
    from compiler.drift.model import Acknowledgement

    rendering = expected_rendering(example_truth[0])
    pool = "vm/auth/iad"
    hosts = sorted(c for c, p in inventory_of(EXAMPLE).items() if p == pool and c not in rendering.nodes)
    assert len(hosts) > 1
    everything = Acknowledgement(match="*", reason="r", expires="2999-01-01", location="ack.yaml:2:3")
    report = example_report(
        example_truth, tmp_path, absent=frozenset(hosts[:1]), acknowledgements=(everything,)
    )
    [host] = [s for s in report.subjects if s.subject == hosts[0]]
    assert (host.state, host.target) == ("unknown", pool) and not any(i.acknowledged for i in host.items)
    assert "no active node in PuppetDB" in host.items[0].detail
    assert report.failing


def test_the_gate_names_each_field_of_an_object_that_differs(
    example_truth: tuple[dict[str, bytes], dict[str, Any]], tmp_path: Path
) -> None:
    """A ConfigMap of the canary wave edited in gke-usc1-a: the gate's refusal names the fields that differ, then
    once what the last-applied annotation says of them (it repeated that sentence once per field, naming none)."""
    from compiler.drift.gate import wave_verdict

    def edit(live: list[dict[str, Any]]) -> None:
        config = next(
            o for o in live if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-mesh-envoy")
        )
        config["data"] = {**config["data"], "debug.json": "{}", "lds.json": "{}"}  # every LDS field differs

    report = example_report(example_truth, tmp_path, edit=edit)
    (line,) = [line for line in wave_verdict(report, "canary").blocking if "ConfigMap/" in line]
    assert ": drifted (modified data[lds.json]." in line
    assert line.endswith(
        "; …; changed after kube-applier's last apply of this rendering (a hand edit, or another controller))"
    )
    assert line.count("kube-applier") == 1


def test_waves_follow_the_policy_without_a_rollout(example_build: Build, tmp_path: Path) -> None:
    """A wave policy and no rollout.yaml: the waves come from the pools' mesh::wave, still in mesh.yaml's order."""
    spec = write_spec(
        tmp_path / "spec",
        {
            p.relative_to(EXAMPLE).as_posix(): p.read_bytes()
            for p in EXAMPLE.rglob("*")
            if p.is_file() and p.name != "rollout.yaml"
        },
    )
    export = tmp_path / "export.json"
    export.write_text(json.dumps(export_of(expected_rendering(example_build.tree()), datetime.now(UTC))))
    result = meshc_in_process(
        "drift", str(spec), "--puppet-facts", str(export), "--partial", "--format", "json"
    )
    assert result.returncode == 0, result.stderr
    waves = [w["wave"] for w in json.loads(result.stdout)["waves"]]
    assert waves == [w for w in POLICY_ORDER if w != "canary-hosts"]  # no canary hosts without a rollout


# ---------------------------------------------------------------- the promote gate's verdict on one report


def gate_report(host_state: str, dumps: tuple[str, ...], puppet: bool = True) -> Any:
    """A two-wave rollout's report: canary = one canary host and k8s/kube-sjc-a/upload/upload; main = the rest."""
    from compiler.drift.detect import assemble_report
    from compiler.drift.model import DriftItem, ScopeState, SubjectState

    waves = {"k8s/kube-sjc-a/upload/upload": "canary", "k8s/kube-iad-a/upload/upload": "main", POOL: "main"}
    checked = [
        (
            ScopeState(platform="kubernetes", scope=cluster, state="converged", evidence=f"{cluster}.json"),
            [
                SubjectState(
                    platform="kubernetes",
                    scope=cluster,
                    subject="ConfigMap/upload/upload-mesh-envoy",
                    target=f"k8s/{cluster}/upload/upload",
                    state="converged",
                )
            ],
        )
        for cluster in dumps
    ]
    if puppet:
        items = (
            ()
            if host_state == "converged"
            else (
                DriftItem(
                    kind=host_state,
                    platform="puppet",
                    scope="pdb",
                    subject="c-1",
                    target=POOL,
                    path=ENVOY_CDS,
                    detail="envoy/cds.json: applied 0…",
                ),
            )
        )
        checked.append(
            (
                ScopeState(
                    platform="puppet",
                    scope="https://pdb:8081",
                    state="converged",
                    evidence="https://pdb:8081",
                ),
                [
                    SubjectState(
                        platform="puppet",
                        scope="https://pdb:8081",
                        subject="c-1",
                        target=POOL,
                        wave="canary",
                        state=host_state,
                        items=items,
                    )
                ],
            )
        )
    unchecked = [("kubernetes", c) for c in ("kube-iad-a", "kube-sjc-a") if c not in dumps] + (
        [] if puppet else [("puppet", "puppetdb")]
    )
    manifest = {"rollout": {"targets": {t: {"wave": w, "revision": "a" * 40} for t, w in waves.items()}}}
    return assemble_report(
        checked, unchecked, tree={"MANIFEST.json": json.dumps(manifest).encode()}, partial=True
    )


def test_gate_blocks_on_a_pending_canary_host_though_drift_passes() -> None:
    from compiler.drift.gate import wave_verdict

    report = gate_report("pending", ("kube-sjc-a", "kube-iad-a"))
    assert not report.failing, "pending within the lag passes meshc drift"
    verdict = wave_verdict(report, "canary")
    assert verdict.blocking == (f"{POOL} c-1: pending (envoy/cds.json: applied 0…)",)
    assert verdict.evidence == ("kube-iad-a.json", "kube-sjc-a.json", "https://pdb:8081")
    assert wave_verdict(gate_report("converged", ("kube-sjc-a", "kube-iad-a")), "canary").passed


def test_gate_blocks_on_a_missing_dump_or_no_puppetdb_for_the_wave() -> None:
    from compiler.drift.gate import wave_verdict

    no_dump = wave_verdict(gate_report("converged", ("kube-iad-a",)), "canary")
    assert no_dump.blocking == (
        "k8s/kube-sjc-a/upload/upload: not checked: no dump of cluster kube-sjc-a given (--kubernetes)",
    )
    assert wave_verdict(gate_report("converged", ("kube-sjc-a",)), "canary").passed, (
        "a dump missing for another wave only"
    )
    no_pdb = wave_verdict(gate_report("converged", ("kube-sjc-a", "kube-iad-a"), puppet=False), "main")
    assert no_pdb.blocking == (
        f"{POOL}: not checked: no PuppetDB or export given (--puppetdb, --puppet-facts)",
    )
