"""Puppet drift against a real PuppetDB: the module's mesh_applied fact, submitted by real `puppet apply`
runs through puppet-terminus-puppetdb, and the states apply cannot produce submitted through the command API.

One module fixture builds the whole world once: the example mesh's tree plus two canary node
files; two hosts applied for real (one clean, one edited by hand between its runs); and hosts
submitted through the command API for each other state. The tests read it back from PuppetDB
over HTTPS with a client certificate (as a real PuppetDB requires), over HTTP, and from an export.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from compiler.backends.puppet import HASHES_KEY, pool_data
from compiler.drift.detect import assemble_report
from compiler.drift.hiera import compare_hiera, deployed_times
from compiler.drift.model import DriftInputError
from compiler.drift.puppet import (
    Expectation,
    HostState,
    Policy,
    PuppetDrift,
    check_vms,
    detect_puppet_drift,
    expected_rendering,
    judge_host,
)
from compiler.drift.puppet_records import host_records
from compiler.drift.puppetdb import Applied, Node, Observations, parse_applied, read_export, read_puppetdb
from compiler.drift.report import report_data
from compiler.drift.summary import pool_rows, summary_line
from compiler.emit import dump_yaml
from compiler.pipeline import Build
from compiler.render import ENVOY_CDS, ENVOY_LDS, NERVE, SYNAPSE, SidecarConfig
from tests.conftest import require_tool
from tests.puppetdb_server import PuppetDB, report_payload

STDLIB_MODULES = "/usr/share/puppet/modules"
POOL = "vm/encryption/sjc"
POOL_FILE = "puppet/data/pools/encryption/sjc.json"
CLEAN = "encryption-1.sjc.example"  # applied twice: its second run reports what the first wrote
EDITED = (
    "encryption-2.sjc.example"  # applied, lds.json edited and synapse.json removed by hand, applied again
)
CANARY = "encryption-canary.sjc.example"  # node file with a changed CDS; reports the node file's hashes
CANARY_BEHIND = (
    "encryption-canary2.sjc.example"  # node file with a changed CDS; still reports the pool's hashes
)
PENDING = "encryption-3.sjc.example"  # reports an older CDS hash, facts fresh
FAILED = "encryption-4.sjc.example"
CACHED = "encryption-5.sjc.example"  # ran a cached catalog (on_failure)
STALE = "encryption-6.sjc.example"  # facts and report five hours old
NO_REPORT = "encryption-7.sjc.example"  # facts, never a report
ORPHAN = "ghost-1.sjc.example"  # reports mesh facts for a pool meshc does not render
NOT_MESH = "db-1.sjc.example"  # no mesh facts at all
OLD_HASH = "0" * 64


@dataclass(frozen=True, kw_only=True, slots=True)
class World:
    """What the fixture built: the rendered tree, the PuppetDB, the real runs' outputs, when it was submitted."""

    tree: dict[str, bytes]
    pdb: PuppetDB
    runs: dict[str, list[subprocess.CompletedProcess[str]]]
    submitted: datetime
    client: tuple[Path, Path]


def canary_file(sidecar: SidecarConfig, marker: str) -> bytes:
    """A canary host's node file: the pool's data with a changed CDS, hashes recomputed (contract 2)."""
    documents = dict(sidecar.documents) | {
        ENVOY_CDS: dict(sidecar.documents[ENVOY_CDS]) | {"x_canary": marker}
    }
    return pool_data(SidecarConfig(workload=sidecar.workload, documents=documents))


def hashes(tree: Mapping[str, bytes], path: str) -> dict[str, str]:
    return dict(json.loads(tree[path])[HASHES_KEY])


def iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ---------------------------------------------------------------- real Puppet runs through the terminus


class Agent:
    """One VM: its own confdir (terminus to PuppetDB over TLS), ssldir with its certificate, root for the module."""

    def __init__(self, base: Path, certname: str, pdb: PuppetDB, tree: Path) -> None:
        self.base, self.certname, self.tree = base, certname, tree
        self.root, confdir, ssldir = base / "root", base / "confdir", base / "ssl"
        for path in (
            self.root / "etc/mesh",
            self.root / "var/run",
            confdir,
            ssldir / "certs",
            ssldir / "private_keys",
            base / "vardir/facts.d",
        ):
            path.mkdir(parents=True, exist_ok=True)
        assert pdb.tls is not None
        cert, key = pdb.tls.client(certname)
        (ssldir / "certs/ca.pem").write_bytes(pdb.tls.ca_cert.read_bytes())
        (ssldir / f"certs/{certname}.pem").write_bytes(cert.read_bytes())
        (ssldir / f"private_keys/{certname}.pem").write_bytes(key.read_bytes())
        dirs = {d: base / d for d in ("vardir", "logdir", "rundir", "codedir")}
        (confdir / "puppet.conf").write_text(
            "[main]\n"
            + "".join(f"{d} = {path}\n" for d, path in dirs.items())
            + f"certname = {certname}\nssldir = {ssldir}\ncertificate_revocation = false\n"
            "storeconfigs = true\nstoreconfigs_backend = puppetdb\nreports = puppetdb\n"
        )
        (confdir / "puppetdb.conf").write_text(f"[main]\nserver_urls = {pdb.ssl_url}\n")
        # Without this route, later runs read stale facts back from PuppetDB (puppetdb.md).
        (confdir / "routes.yaml").write_text(
            "apply:\n  facts:\n    terminus: facter\n    cache: puppetdb_apply\n"
        )
        facts = {
            "mesh_service": "encryption",
            "mesh_datacenter": "sjc",
            "networking": {"ip": "10.20.30.40"},
            "mesh_config_dir": str(self.root / "etc/mesh"),
        }
        (base / "vardir/facts.d/mesh.yaml").write_bytes(dump_yaml(facts))
        self.confdir = confdir

    def apply(self) -> subprocess.CompletedProcess[str]:
        restarts = ", ".join(
            f'{p}_restart_command => "/bin/true"' for p in ("envoy", "envoy_hot", "nerve", "synapse")
        )
        manifest = f'class {{ "mesh": root => "{self.root}", manage_services => false, {restarts} }}'
        return subprocess.run(
            [
                "puppet",
                "apply",
                "--detailed-exitcodes",
                "--color=false",
                "--confdir",
                str(self.confdir),
                "--modulepath",
                f"{self.tree / 'modules'}:{STDLIB_MODULES}",
                "--hiera_config",
                str(self.tree / "hiera.yaml"),
                "-e",
                manifest,
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )


def real_runs(
    base: Path, certname: str, pdb: PuppetDB, tree: Path, edit: bool
) -> list[subprocess.CompletedProcess[str]]:
    """Two applies; with `edit`, lds.json edited and synapse.json removed in between (the second fact sees both)."""
    agent = Agent(base / certname, certname, pdb, tree)
    runs = [agent.apply()]
    if edit:
        lds = agent.root / "etc/mesh" / ENVOY_LDS
        lds.write_text(lds.read_text().replace('"version_info"', '"x_hand_edit": true,\n  "version_info"', 1))
        (agent.root / "etc/mesh" / SYNAPSE).unlink()
    runs.append(agent.apply())
    return runs


# ---------------------------------------------------------------- the command API


def submit_facts(pdb: PuppetDB, certname: str, values: Mapping[str, Any], when: datetime) -> None:
    pdb.command(
        "replace_facts",
        5,
        certname,
        {
            "certname": certname,
            "environment": "production",
            "producer_timestamp": iso(when),
            "producer": "puppet.test",
            "values": dict(values),
        },
    )


def submit_report(
    pdb: PuppetDB,
    certname: str,
    when: datetime,
    status: str = "unchanged",
    cached_catalog_status: str = "not_used",
) -> None:
    start, end = iso(when - timedelta(seconds=20)), iso(when)
    payload = report_payload(certname, start, end, "puppet.test", status, cached_catalog_status)
    pdb.command("store_report", 8, certname, payload)


def mesh_facts(workload: str, documents: Mapping[str, str]) -> dict[str, Any]:
    _, service, datacenter = workload.split("/")
    return {
        "mesh_service": service,
        "mesh_datacenter": datacenter,
        "mesh_applied": {
            "workload": workload,
            "service": service,
            "datacenter": datacenter,
            "documents": dict(documents),
        },
    }


def synthetic_hosts(pdb: PuppetDB, tree: Mapping[str, bytes], now: datetime) -> None:
    """One host per state apply cannot produce (or that needs no real run), through the command API."""
    pool = hashes(tree, POOL_FILE)
    canary = hashes(tree, f"puppet/data/nodes/{CANARY}.json")
    older = pool | {ENVOY_CDS: OLD_HASH}
    hosts = {
        CANARY: (mesh_facts(POOL, canary), now, "unchanged", "not_used"),
        CANARY_BEHIND: (mesh_facts(POOL, pool), now, "changed", "not_used"),
        PENDING: (mesh_facts(POOL, older), now, "unchanged", "not_used"),
        FAILED: (mesh_facts(POOL, pool), now, "failed", "not_used"),
        CACHED: (mesh_facts(POOL, pool), now, "unchanged", "on_failure"),
        STALE: (mesh_facts(POOL, pool), now - timedelta(hours=5), "unchanged", "not_used"),
        ORPHAN: (mesh_facts("vm/ghost/sjc", {NERVE: OLD_HASH}), now, "unchanged", "not_used"),
        NOT_MESH: ({"kernel": "Linux"}, now, "unchanged", "not_used"),
    }
    for certname, (facts, when, status, cached) in hosts.items():
        submit_facts(pdb, certname, facts, when)
        submit_report(pdb, certname, when, status, cached)
    submit_facts(pdb, NO_REPORT, mesh_facts(POOL, pool), now)


@pytest.fixture(scope="module")
def world(puppetdb: PuppetDB, example_build: Build, tmp_path_factory: pytest.TempPathFactory) -> World:
    """The built tree with two canaries, two real hosts applied through the terminus, the synthetic hosts."""
    require_tool("puppet")
    if not Path(STDLIB_MODULES, "stdlib").is_dir():
        pytest.fail(
            f"puppetlabs-stdlib is not in {STDLIB_MODULES} (apt-get install puppet-module-puppetlabs-stdlib)"
        )
    if not Path("/usr/lib/ruby/vendor_ruby/puppet/indirector/facts/puppetdb_apply.rb").is_file():
        pytest.fail("puppet-terminus-puppetdb is not installed")
    sidecar = example_build.sidecars[POOL]
    tree = dict(example_build.tree())
    tree[f"puppet/data/nodes/{CANARY}.json"] = canary_file(sidecar, "one")
    tree[f"puppet/data/nodes/{CANARY_BEHIND}.json"] = canary_file(sidecar, "two")
    base = tmp_path_factory.mktemp("drift")
    server = base / "server"  # output/puppet/ as deployed on the Puppet server
    for path, data in tree.items():
        if path.startswith("puppet/"):
            (server / path.removeprefix("puppet/")).parent.mkdir(parents=True, exist_ok=True)
            (server / path.removeprefix("puppet/")).write_bytes(data)
    assert json.loads(tree[POOL_FILE])["mesh::wave"], (
        "the example has a wave policy: pool data names the wave (contract 3)"
    )
    now = datetime.now(UTC)
    with ThreadPoolExecutor(max_workers=2) as pool:
        clean = pool.submit(real_runs, base, CLEAN, puppetdb, server, False)
        edited = pool.submit(real_runs, base, EDITED, puppetdb, server, True)
        synthetic_hosts(puppetdb, tree, now)
        runs = {CLEAN: clean.result(), EDITED: edited.result()}
    # The terminus submits asynchronously: wait for both real hosts' second reports.
    puppetdb.wait_for(f'reports[count()] {{ certname in ["{CLEAN}", "{EDITED}"] }}', 4)
    puppetdb.wait_for(
        f'facts[count()] {{ name = "mesh_applied" and certname in ["{CLEAN}", "{EDITED}"] }}', 2
    )
    assert puppetdb.tls is not None
    return World(tree=tree, pdb=puppetdb, runs=runs, submitted=now, client=puppetdb.tls.client("meshc-drift"))


def read_tls(world: World) -> Observations:
    assert world.pdb.tls is not None
    cert, key = world.client
    return read_puppetdb(
        world.pdb.ssl_url, cafile=str(world.pdb.tls.ca_cert), certfile=str(cert), keyfile=str(key)
    )


@pytest.fixture(scope="module")
def drift(world: World) -> PuppetDrift:
    """Judged a minute after submission, with no deploy time known: an old hash is pending."""
    policy = Policy(now=datetime.now(UTC) + timedelta(minutes=1))
    return detect_puppet_drift(expected_rendering(world.tree), read_tls(world), policy)


def state_of(drift: PuppetDrift, certname: str) -> tuple[HostState, tuple[str, ...]]:
    host = next(h for h in drift.hosts if h.certname == certname)
    return host.state, host.reasons


# ---------------------------------------------------------------- the module's fact, from real runs


@pytest.mark.consumer
def test_real_applies_succeed_and_reach_puppetdb(world: World) -> None:
    for certname, runs in world.runs.items():
        assert runs[0].returncode == 2, f"{certname} first run: {runs[0].stdout}{runs[0].stderr}"
    assert world.runs[CLEAN][1].returncode == 0, "the second run of an untouched host changes nothing"
    assert world.runs[EDITED][1].returncode == 2, "the second run puts the hand-edited file back"
    status = world.pdb.query(f'reports[certname, status, cached_catalog_status] {{ certname = "{CLEAN}" }}')
    assert {r["cached_catalog_status"] for r in status} == {"not_used"}


@pytest.mark.consumer
def test_fact_reports_the_rendered_hashes_after_a_clean_run(world: World) -> None:
    rows = world.pdb.query(f'facts[value] {{ name = "mesh_applied" and certname = "{CLEAN}" }}')
    assert rows == [
        {
            "value": {
                "workload": POOL,
                "service": "encryption",
                "datacenter": "sjc",
                "wave": json.loads(world.tree[POOL_FILE])["mesh::wave"],
                "documents": hashes(world.tree, POOL_FILE),
            }
        }
    ]


@pytest.mark.consumer
def test_fact_reports_a_hand_edit_as_edited(world: World) -> None:
    value = world.pdb.query(f'facts[value] {{ name = "mesh_applied" and certname = "{EDITED}" }}')[0]["value"]
    expected = hashes(world.tree, POOL_FILE)
    assert value["documents"][ENVOY_LDS].startswith("edited:sha256:")
    assert value["documents"][ENVOY_LDS] != "edited:sha256:" + expected[ENVOY_LDS]
    assert value["documents"][SYNAPSE] == "missing"
    # Nerve's file holds per-host values, yet the fact reports meshc's hash of the pool's rendering.
    assert {k: v for k, v in value["documents"].items() if k not in (ENVOY_LDS, SYNAPSE)} == {
        k: v for k, v in expected.items() if k not in (ENVOY_LDS, SYNAPSE)
    }


# ---------------------------------------------------------------- each state, read over HTTPS


@pytest.mark.consumer
def test_clean_host_is_converged(drift: PuppetDrift) -> None:
    assert state_of(drift, CLEAN) == (HostState.CONVERGED, ())


@pytest.mark.consumer
def test_hand_edited_host_is_drifted(drift: PuppetDrift) -> None:
    state, reasons = state_of(drift, EDITED)
    assert state == HostState.DRIFTED
    assert len(reasons) == 2 and reasons[0].startswith(f"{ENVOY_LDS}: edited by hand since Puppet wrote it (")
    assert reasons[1] == f"{SYNAPSE}: removed by hand since Puppet wrote it"


@pytest.mark.consumer
def test_canary_is_judged_against_its_node_file(drift: PuppetDrift) -> None:
    canary = next(h for h in drift.hosts if h.certname == CANARY)
    assert (canary.state, canary.canary, canary.target) == (HostState.CONVERGED, True, POOL)
    # The other canary applied exactly its pool's documents: against its override, the CDS is not there yet.
    state, reasons = state_of(drift, CANARY_BEHIND)
    assert state == HostState.PENDING
    assert len(reasons) == 1 and reasons[0].startswith(f"{ENVOY_CDS}: applied ")


@pytest.mark.consumer
def test_old_hash_is_pending_within_the_lag(drift: PuppetDrift, world: World) -> None:
    expected = hashes(world.tree, POOL_FILE)[ENVOY_CDS]
    assert state_of(drift, PENDING) == (
        HostState.PENDING,
        (f"{ENVOY_CDS}: applied {OLD_HASH[:12]}, expected {expected[:12]}",),
    )


@pytest.mark.consumer
def test_old_hash_is_drifted_after_the_lag_since_deployment(world: World) -> None:
    observations = read_tls(world)
    deployed = world.submitted - timedelta(hours=1)  # deployed an hour before the facts were gathered
    late = detect_puppet_drift(
        expected_rendering(world.tree), observations, Policy(now=datetime.now(UTC), since=deployed)
    )
    assert state_of(late, PENDING)[0] == HostState.DRIFTED
    early = detect_puppet_drift(
        expected_rendering(world.tree),
        observations,
        Policy(now=datetime.now(UTC), since=world.submitted - timedelta(minutes=10)),
    )
    assert state_of(early, PENDING)[0] == HostState.PENDING
    assert state_of(late, CLEAN)[0] == HostState.CONVERGED


@pytest.mark.consumer
def test_failed_run_is_failed(drift: PuppetDrift) -> None:
    assert state_of(drift, FAILED)[0] == HostState.FAILED


@pytest.mark.consumer
def test_cached_catalog_stale_facts_and_no_report_are_unknown(drift: PuppetDrift) -> None:
    assert state_of(drift, CACHED) == (HostState.UNKNOWN, ("last run used a cached catalog (on_failure)",))
    state, reasons = state_of(drift, STALE)
    assert state == HostState.UNKNOWN and reasons[0].startswith("stale: report 5 h "), reasons
    assert state_of(drift, NO_REPORT) == (HostState.UNKNOWN, ("no report in PuppetDB",))


@pytest.mark.consumer
def test_orphans_and_non_mesh_nodes(drift: PuppetDrift) -> None:
    assert [(o.certname, o.workload) for o in drift.orphans] == [(ORPHAN, "vm/ghost/sjc")]
    assert NOT_MESH not in {h.certname for h in drift.hosts}


@pytest.mark.consumer
def test_pool_summary_and_findings(drift: PuppetDrift) -> None:
    report = assemble_report([host_records(drift)], [])
    rows = {row["target"]: row for row in pool_rows(report)}
    assert summary_line(rows[POOL]) == (
        f"{POOL}: 2/9 converged, 2 pending, 1 drifted, 1 failed, 3 unknown: "
        f"{EDITED}, {PENDING}, {FAILED}, {CACHED}, {STALE}, … 2 more"
    )
    others = [p for p in drift.pools if p.name != POOL]
    assert others and all(p.hosts == 0 and not p.converged for p in others), "a pool with no hosts is no pass"
    assert summary_line(rows[others[0].name]) == f"{others[0].name}: no hosts report to PuppetDB"
    assert rows[others[0].name]["state"] == "not-checked" and report.failing
    assert not drift.converged
    data = report_data(report)
    assert json.loads(json.dumps(data)) == data
    assert next(t for t in data["targets"] if t["target"] == POOL)["counts"] == {
        "converged": 2,
        "pending": 2,
        "drifted": 1,
        "failed": 1,
        "unknown": 3,
    }


# ---------------------------------------------------------------- the same over HTTP, and from an export


@pytest.mark.consumer
def test_plain_http_and_an_export_read_the_same(world: World, tmp_path: Path) -> None:
    over_tls = read_tls(world)
    plain = read_puppetdb(world.pdb.url)
    assert plain.nodes == over_tls.nodes
    export = tmp_path / "export.json"
    nodes = json.loads(json.dumps(world.pdb.query("nodes {}")))
    facts = world.pdb.query('facts { name in ["mesh_applied", "mesh_service", "mesh_datacenter"] }')
    export.write_text(json.dumps({"nodes": nodes, "facts": facts}, indent=1))
    assert read_export(export).nodes == over_tls.nodes
    assert read_export(export).source == str(export)


@pytest.mark.consumer
def test_truncated_export_is_one_line_with_its_position(world: World, tmp_path: Path) -> None:
    export = tmp_path / "export.json"
    export.write_text('{"nodes": [\n {"certname": "a"')
    with pytest.raises(DriftInputError) as error:
        read_export(export)
    assert (
        str(error.value)
        == f"{export}:2:18: error: not valid JSON: Expecting ',' delimiter  [puppetdb-export]"
    )


@pytest.mark.parametrize(
    "content, message",
    [
        ("[]", 'an export is an object {"nodes": [...], "facts": [...]}'),
        (
            '{"nodes": {}, "facts": []}',
            "nodes: expected a list of objects, as PuppetDB's nodes query returns",
        ),
        (
            '{"nodes": [{"certname": 7}], "facts": []}',
            "nodes[0].certname: expected a non-empty string, got 7",
        ),
        (
            '{"nodes": [{"certname": "a", "facts_timestamp": "yesterday"}], '
            '"facts": [{"certname": "a", "name": "mesh_service", "value": "x"}]}',
            "nodes[0].facts_timestamp: not an ISO 8601 timestamp: 'yesterday'",
        ),
        (  # json's int() refuses 4,301 digits and more: once `internal error: ValueError`, exit 3
            '{"nodes": [{"certname": 1' + "0" * 5000 + '}], "facts": []}',
            "a number in it is too long to read; PuppetDB writes none like it",
        ),
    ],
)
def test_malformed_export_is_one_line(tmp_path: Path, content: str, message: str) -> None:
    export = tmp_path / "export.json"
    export.write_text(content)
    with pytest.raises(DriftInputError) as error:
        read_export(export)
    assert str(error.value) == f"{export}: error: {message}  [puppetdb-export]"


def test_unreachable_puppetdb_is_one_line() -> None:
    from tests.puppetdb_server import free_port

    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(DriftInputError) as error:
        read_puppetdb(url, timeout=5)
    assert str(error.value).startswith(f"{url}/pdb/query/v4/nodes: error: cannot reach PuppetDB: ")
    assert str(error.value).endswith("[puppetdb-unreachable]") and "\n" not in str(error.value)


@pytest.mark.consumer
def test_https_without_a_client_certificate_is_refused_in_one_line(world: World) -> None:
    assert world.pdb.tls is not None
    with pytest.raises(DriftInputError) as error:
        read_puppetdb(world.pdb.ssl_url, cafile=str(world.pdb.tls.ca_cert), certfile="/nonexistent.pem")
    assert str(error.value).startswith("/nonexistent.pem: error: cannot load TLS material")


@pytest.mark.consumer
def test_wrong_ca_is_one_line(world: World, tmp_path: Path) -> None:
    with pytest.raises(DriftInputError) as error:
        read_puppetdb(world.pdb.ssl_url, timeout=10)  # the system CAs do not know the test CA
    assert "certificate verify failed" in str(error.value) and "\n" not in str(error.value)


# ---------------------------------------------------------------- the hiera tree on the Puppet server


def deploy(tree: Mapping[str, bytes], root: Path) -> None:
    for path, data in tree.items():
        if path.startswith("puppet/"):
            (root / path.removeprefix("puppet/")).parent.mkdir(parents=True, exist_ok=True)
            (root / path.removeprefix("puppet/")).write_bytes(data)


def test_hiera_tree_stale_missing_extra_and_hand_edited(example_build: Build, tmp_path: Path) -> None:
    tree = example_build.tree()
    deploy(tree, tmp_path)
    assert compare_hiera(tmp_path, tree).clean
    pools = sorted(p for p in tree if p.startswith("puppet/data/pools/"))
    sidecar = example_build.sidecars[POOL]
    # stale: an earlier rendering meshc wrote (its hashes match its documents)
    older = copy.deepcopy(dict(sidecar.documents))
    older[ENVOY_CDS]["x_older"] = True
    (tmp_path / "data/pools/encryption/sjc.json").write_bytes(
        pool_data(SidecarConfig(workload=sidecar.workload, documents=older))
    )
    # hand-edited: a document changed in place, its hash left as it was
    edited_path = next(p for p in pools if not p.endswith("encryption/sjc.json"))
    (tmp_path / edited_path.removeprefix("puppet/")).write_bytes(
        tree[edited_path].replace(b'"version_info"', b'"x": 1, "version_info"', 1)
    )
    (tmp_path / "modules/mesh/manifests/init.pp").write_text("# edited\n")
    # reformatted: the very data meshc renders, re-indented by hand (Puppet reads the same values); an older
    # rendering re-indented is no file meshc wrote: hand-edited
    others = [p for p in pools if p not in (edited_path, "puppet/data/pools/encryption/sjc.json")]
    reindented, older_reindented = others[0], others[1]
    for path, data in (
        (reindented, tree[reindented]),
        (older_reindented, tree[older_reindented].replace(b"V3", b"V2")),
    ):
        (tmp_path / path.removeprefix("puppet/")).write_text(json.dumps(json.loads(data), indent=4))
    missing_path = pools[-1] if pools[-1] != edited_path else pools[-2]
    (tmp_path / missing_path.removeprefix("puppet/")).unlink()
    (tmp_path / ".git").mkdir()
    # r10k/git checkouts: not meshc's files
    (tmp_path / ".git/HEAD").write_text("ref: refs/heads/production\n")
    (tmp_path / "data/pools/ghost").mkdir()
    (tmp_path / "data/pools/ghost/sjc.json").write_text("{}")
    status = compare_hiera(tmp_path, tree)
    assert status.stale == ("data/pools/encryption/sjc.json",)
    assert status.hand_edited == tuple(
        sorted(
            p.removeprefix("puppet/")
            for p in (edited_path, older_reindented, "puppet/modules/mesh/manifests/init.pp")
        )
    )
    assert status.reformatted == (reindented.removeprefix("puppet/"),)
    assert status.missing == (missing_path.removeprefix("puppet/"),)
    assert status.extra == ("data/pools/ghost/sjc.json",)


def test_hiera_stale_by_deployed_manifest_and_deploy_times(example_build: Build, tmp_path: Path) -> None:
    tree = example_build.tree()
    deploy(tree, tmp_path)
    (tmp_path / "hiera.yaml").write_bytes(b"# an older meshc's hiera.yaml\n")
    (tmp_path / "MANIFEST.json").write_text(
        json.dumps(
            {"files": {"puppet/hiera.yaml": hashlib.sha256(b"# an older meshc's hiera.yaml\n").hexdigest()}}
        )
    )
    assert compare_hiera(tmp_path, tree).stale == ("hiera.yaml",)
    pool_file = tmp_path / "data/pools/encryption/sjc.json"
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    os.utime(pool_file, (when.timestamp(), when.timestamp()))
    times = deployed_times(tmp_path, tree)
    assert times["puppet/data/pools/encryption/sjc.json"] == when
    pool_file.write_text("{}")
    assert "puppet/data/pools/encryption/sjc.json" not in deployed_times(tmp_path, tree), (
        "only a deployed rendering has a time"
    )


def test_hiera_dir_that_is_not_one(tmp_path: Path) -> None:
    with pytest.raises(DriftInputError) as error:
        compare_hiera(tmp_path / "nope", {})
    assert str(error.value).endswith("[hiera-tree]")


def test_built_tree_without_document_hashes_says_rebuild() -> None:
    tree = {"puppet/data/pools/a/sjc.json": b'{"mesh::workload": "vm/a/sjc", "mesh::sidecar": {}}'}
    with pytest.raises(DriftInputError) as error:
        expected_rendering(tree)
    assert "rebuild" in str(error.value) and str(error.value).startswith(
        "puppet/data/pools/a/sjc.json: error: "
    )


def test_waves_come_from_the_manifest_rollout(example_build: Build) -> None:
    tree = dict(example_build.tree())
    tree[f"puppet/data/nodes/{CANARY}.json"] = canary_file(example_build.sidecars[POOL], "one")
    manifest = json.loads(tree["MANIFEST.json"])
    # every target in wave main (a pinned wave overrides the pool data's own mesh::wave)
    manifest["rollout"] = {
        "targets": {t: {"wave": "main", "revision": "a" * 40} for t in manifest["targets"]},
        "hosts": {CANARY: {"wave": "canary", "revision": "b" * 40, "target": POOL}},
        "waves": [{"name": "canary", "revision": "b" * 40}, {"name": "main", "revision": "a" * 40}],
    }
    tree["MANIFEST.json"] = json.dumps(manifest).encode()
    rendering = expected_rendering(tree)
    assert rendering.pools[POOL].wave == "main" and rendering.nodes[CANARY].wave == "canary"
    drift = detect_puppet_drift(rendering, Observations(source="x", nodes=()), Policy(now=datetime.now(UTC)))
    assert [(w.name, w.hosts) for w in drift.waves] == [("canary", 1), ("main", 0)]
    assert state_of(drift, CANARY) == (HostState.UNKNOWN, ("no node in PuppetDB",))


@pytest.mark.consumer
def test_check_vms_times_the_lag_from_the_deployed_hiera_tree(world: World, tmp_path: Path) -> None:
    """--hiera: the pool file's modification time on the Puppet server is when its rendering was deployed."""
    deploy(world.tree, tmp_path)
    observations = read_tls(world)
    pool_file = tmp_path / POOL_FILE.removeprefix("puppet/")
    long_ago = (world.submitted - timedelta(hours=1)).timestamp()
    os.utime(pool_file, (long_ago, long_ago))
    result = check_vms(world.tree, observations, Policy(now=datetime.now(UTC)), hiera=tmp_path)
    assert result.hiera is not None and result.hiera.clean
    assert result.hosts is not None and state_of(result.hosts, PENDING)[0] == HostState.DRIFTED
    just_now = world.submitted.timestamp()
    os.utime(pool_file, (just_now, just_now))
    result = check_vms(world.tree, observations, Policy(now=datetime.now(UTC)), hiera=tmp_path)
    assert result.hosts is not None and state_of(result.hosts, PENDING)[0] == HostState.PENDING
    assert not result.converged
    only_hiera = check_vms(world.tree, None, Policy(now=datetime.now(UTC)), hiera=tmp_path)
    assert only_hiera.hosts is None and only_hiera.converged


def node(**changes: Any) -> Node:
    now = datetime.now(UTC)
    base = Node(
        certname="h.example",
        pool=POOL,
        report_status="unchanged",
        cached_catalog_status="not_used",
        report_time=now,
        facts_time=now,
        applied=Applied(workload=POOL, documents={"a": "1" * 64}),
    )
    return replace(base, **changes)


EXPECT = Expectation(path=POOL_FILE, workload=POOL, wave=None, hashes={"a": "1" * 64})


@pytest.mark.parametrize(
    "changes, state, reason",
    [
        ({}, HostState.CONVERGED, None),
        (
            {"applied": None},
            HostState.UNKNOWN,
            "no mesh_applied fact: the mesh class has not written its receipt yet",
        ),
        (
            {"applied": parse_applied({"error": "/etc/mesh/.meshc-applied.json: unexpected token"})},
            HostState.UNKNOWN,
            "the module's receipt is unreadable: /etc/mesh/.meshc-applied.json: unexpected token",
        ),
        (
            {"applied": parse_applied("garbage")},
            HostState.UNKNOWN,
            "mesh_applied is not an object: 'garbage'",
        ),
        (
            {"applied": Applied(workload=POOL, documents={"a": "missing"})},
            HostState.DRIFTED,
            "a: removed by hand since Puppet wrote it",
        ),
        ({"applied": Applied(workload=POOL, documents={})}, HostState.PENDING, "a: not applied yet"),
        (
            {"applied": Applied(workload=POOL, documents={"a": "unhashed:sha256:" + "3" * 64})},
            HostState.PENDING,
            "a: applied from data without document hashes (an older meshc build)",
        ),
        (
            {"applied": Applied(workload=POOL, documents={"a": "1" * 64, "b": "2" * 64})},
            HostState.PENDING,
            "b: applied but no longer rendered",
        ),
        (
            {"applied": Applied(workload="vm/other/sjc", documents={"a": "1" * 64})},
            HostState.PENDING,
            f"applied the data of vm/other/sjc, expected {POOL}",
        ),
        ({"report_status": "failed", "cached_catalog_status": "on_failure"}, HostState.FAILED, None),
        ({"facts_time": None}, HostState.UNKNOWN, None),
    ],
)
def test_judge_host_edges(changes: dict[str, Any], state: HostState, reason: str | None) -> None:
    judged, reasons = judge_host(node(**changes), EXPECT, Policy(now=datetime.now(UTC)))
    assert judged == state
    if reason is not None:
        assert reasons == [reason]


def test_a_fifo_in_the_deployed_tree_is_drift_not_a_hang(example_build: Build, tmp_path: Path) -> None:
    # deployed_times opened every data file: a FIFO there blocked `meshc drift --hiera` for ever.
    tree = example_build.tree()
    deploy(tree, tmp_path)
    pool_file = tmp_path / "data/pools/encryption/sjc.json"
    pool_file.unlink()
    os.mkfifo(pool_file)
    # a regression blocks in open(): fail after 60 s instead of hanging the suite
    with ThreadPoolExecutor(1) as pool:
        times = pool.submit(deployed_times, tmp_path, tree)
        try:
            found = times.result(timeout=60)
        finally:
            if not times.done():
                # a writer come and gone: the reader gets EOF
                os.close(os.open(pool_file, os.O_WRONLY | os.O_NONBLOCK))
    assert "puppet/data/pools/encryption/sjc.json" not in found and found, (
        "the other deployed files keep their times"
    )
    status = compare_hiera(tmp_path, tree)
    assert "data/pools/encryption/sjc.json" in status.missing + status.hand_edited + status.stale
