"""The Puppet backend against real Puppet 7 and stdlib: hiera lookups, the module applied into a temp root.

Each Puppet process costs seconds of CPU, so all Puppet runs happen once, in one fixture, as three
concurrent chains: the example pool's applies (first run, rerun, hot-reload change, restart change),
the trap pool's applies, and the queries (`puppet parser validate`, one `puppet lookup` command, and
one Ruby process that drives Puppet's own `puppet lookup` application once per node of every pool).
The tests assert on what those runs recorded.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from compiler.backends.puppet import build_puppet, restart_fingerprints
from compiler.diagnostics import SpecError
from compiler.emit import Artifact, dump_json, dump_yaml
from compiler.ir.model import Mesh
from compiler.pipeline import Build, compile
from compiler.render import ENVOY_BOOTSTRAP, ENVOY_CDS, ENVOY_LDS, ENVOY_SDS, NERVE, SYNAPSE, SidecarConfig
from tests.conftest import require_tool

pytestmark = pytest.mark.consumer  # every test here hands artifacts to Puppet 7 and its Ruby

STDLIB_MODULES = "/usr/share/puppet/modules"  # Debian's puppet-module-puppetlabs-stdlib
HOST_IP = "10.20.30.40"
POOL = "vm/encryption/sjc"
TRAP_POOL = "vm/yes/no"
CANARY = "encryption-canary.sjc.example"  # has a node-level override of one document
# The example host's `discovery_credentials` (Puppet source) from each step on: a token that changes
# and a second cluster whose token comes as a plain String, which the module must still redact.
CREDENTIALS = {
    "first": "{'kube-sjc-a' => {token => Sensitive('secret-one'), ca => 'CA sjc'}}",
    "hot": (
        "{'kube-sjc-a' => {token => Sensitive('secret-two'), ca => 'CA sjc'}, "
        "'kube-iad-a' => {token => 'secret-iad', ca => 'CA iad'}}"
    ),
}

# A spec whose names YAML 1.1 (Ruby's Psych) would misread if they were not quoted: a service
# named `yes`, a datacenter named `no` in region `on`.
TRAP_SPEC = {
    "mesh.yaml": b"mesh: trap\ntrust_domain: trap.mesh\n"
    b'datacenters:\n  "no": {region: "on", zookeeper: [zk1.no.example:2181]}\n',
    "services/yes.yaml": b'service: "yes"\nowner: ops\nport: 8080\nmesh_port: 18080\nlocal_port: 7100\n'
    b'restart_sensitive: true\ndeploy:\n  vm: {datacenters: ["no"]}\n',
}
# Values no spec can produce today, injected into the trap pool's documents: hiera interpolation
# syntax (Synapse's haproxy server_options really use %{port}), YAML 1.1 look-alikes, odd text.
TRAPS: dict[str, Any] = {
    "server_options": "check inter 2s port %{port}",
    "%{key}": "interpolation syntax in a key",
    "literal": "%{literal('%')}",
    "percent": "100% %%{x}",
    "version": "1.10",
    "no": "no",
    "on": "On",
    "y": "y",
    "tilde": "~",
    "null": "null",
    "octal": "017",
    "octal12": "0o17",
    "hex": "0x1F",
    "sexagesimal": "1:30",
    "date": "2001-01-01",
    "exp": "1e3",
    "inf": ".inf",
    "merge": "<<",
    "empty": "",
    "padded": " padded ",
    "multiline": "line1\nline2\n",
    "unicode": "résumé ✓",
    "quote": 'it\'s "x"',
    "tab": "a\tb",
    "backslash": "C:\\dir",
    "hash": "# not a comment",
    "colon": "key: value",
    "dash": "- item",
    "star": "*ref",
    "amp": "&anchor",
    "bang": "!tag",
    "pipe": "|",
    "at": "@x",
    "int": 7,
    "float": 0.25,
    "true": True,
    "false": False,
    "list": [],
    "map": {},
}

# Drives Puppet's own `puppet lookup` application once per job in one process: settings are
# initialized once, then each job is a `puppet lookup ARGS` command line (plus, for --compile, the
# manifest code to compile), stdout to a file.
LOOKUP_DRIVER = """
require 'json'
require 'puppet'
require 'puppet/util/command_line'
jobs = JSON.parse(File.read(ARGV[0]))
Puppet.initialize_settings(JSON.parse(File.read(ARGV[1])))
status = {}
jobs.each do |job|
  Puppet[:code] = job['code'] if job['code']  # a setting: command-line settings are read only once
  app = Puppet::Application.find('lookup').new(Puppet::Util::CommandLine.new('puppet', ['lookup', *job['args']]))
  status[job['out']] = 0
  File.open(job['out'], 'w') do |out|
    $stdout = out
    begin
      app.run
    rescue SystemExit => e
      status[job['out']] = e.status
    ensure
      $stdout = STDOUT
    end
  end
end
puts JSON.generate(status)
"""


@dataclass(frozen=True, kw_only=True, slots=True)
class Node:
    """A VM of a pool: its certname and the facts provisioning gives it."""

    certname: str
    service: str
    datacenter: str

    @property
    def facts(self) -> dict[str, Any]:
        hostname, domain = self.certname.split(".", 1)
        return {
            "clientcert": self.certname,
            "hostname": hostname,
            "domain": domain,
            "fqdn": self.certname,
            "mesh_service": self.service,
            "mesh_datacenter": self.datacenter,
            "networking": {"ip": HOST_IP},
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class Applied:
    """One `puppet apply`: exit code, output, the restarts its refreshes ran, and the files after it."""

    rc: int
    output: str
    restarts: list[str]
    files: dict[str, bytes]
    inodes: dict[str, int]
    fingerprints: dict[str, str]
    discovery: dict[str, tuple[bytes, int]]  # credential file under discovery/ -> (content, permission bits)


@dataclass(frozen=True, kw_only=True, slots=True)
class Command:
    """One Puppet command: exit code and output."""

    rc: int
    stdout: str
    stderr: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Runs:
    """Everything the Puppet runs recorded."""

    example: dict[str, Applied]
    trap: dict[str, Applied]
    lookups: dict[str, tuple[int, str]]
    lookup_command: Command
    validate: Command


def node_of(workload_id: str) -> Node:
    _, service, datacenter = workload_id.split("/")
    return Node(certname=f"{service}-1.{datacenter}.example", service=service, datacenter=datacenter)


def settings(work: Path) -> list[str]:
    """Keep Puppet's state out of /etc/puppet and /var/cache/puppet."""
    return [
        arg for d in ("confdir", "vardir", "codedir", "logdir", "rundir") for arg in (f"--{d}", str(work / d))
    ]


def write_tree(artifacts: list[Any], root: Path) -> None:
    for artifact in artifacts:
        path = root / artifact.path.removeprefix("puppet/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(artifact.data)


def strict(value: Any) -> bytes:
    """Canonical JSON: unlike ==, tells true from 1 and 1.0 from 1."""
    return dump_json(value)


def ruby_json_normalised(data: bytes) -> bytes:
    """Undo the one known difference of stdlib's to_json_pretty (Ruby's JSON.pretty_generate):
    it writes an empty array as `[` newline newline indent `]` and an empty object as `{` newline indent `}`."""
    return re.sub(rb"\{\n *\}", b"{}", re.sub(rb"\[\n\n *\]", b"[]", data))


def per_host(documents: Mapping[str, Any], instance_id: str, host: str) -> dict[str, Any]:
    """The documents as a host writes them: Nerve completed with its instance_id and each service's host."""
    result = dict(documents)
    if NERVE in result:
        nerve = copy.deepcopy(result[NERVE])
        nerve["instance_id"] = instance_id
        for service in nerve["services"].values():
            service["host"] = host
        result[NERVE] = nerve
    return result


def trap_sidecar() -> SidecarConfig:
    """The trap spec's only VM pool, its Synapse and Nerve documents carrying the trap values."""
    sidecar = compile(TRAP_SPEC, "trap").sidecars[TRAP_POOL]
    documents = copy.deepcopy(dict(sidecar.documents))
    documents[SYNAPSE]["x_meshc_traps"] = TRAPS
    documents[NERVE]["services"]["yes"]["labels"]["version"] = "1.10"
    return SidecarConfig(workload=sidecar.workload, documents=documents)


SERVICES_ONLY = "#services"  # suffix of a step name: change only the document's `services`


def changed(sidecar: SidecarConfig, names: tuple[str, ...]) -> SidecarConfig:
    """The same pool with each named document changed (a marker key added, at the top or in `services`)."""
    documents = dict(sidecar.documents)
    for name in names:
        if name.endswith(SERVICES_ONLY):
            name = name.removesuffix(SERVICES_ONLY)
            services = dict(documents[name]["services"]) | {"x-meshc-test": {"discovery": {"method": "base"}}}
            documents[name] = dict(documents[name]) | {"services": services}
        else:
            documents[name] = dict(documents[name]) | {"x_meshc_test_change": name}
    return SidecarConfig(workload=sidecar.workload, documents=documents)


# ---------------------------------------------------------------- Puppet runs


class Host:
    """One VM's Puppet state: its work dirs, its facts, the hiera tree it reads, the root the module writes."""

    def __init__(self, base: Path, tree: Path, node: Node) -> None:
        self.base, self.tree, self.node = base, tree, node
        self.root = base / "root"
        for path in (self.root / "etc", self.root / "var/run", base / "work/vardir/facts.d"):
            path.mkdir(parents=True, exist_ok=True)
        # External facts: strings quoted (a bare `no` would be the boolean false), networking overridden.
        facts = {
            "mesh_service": node.service,
            "mesh_datacenter": node.datacenter,
            "networking": {"ip": HOST_IP},
        }
        (base / "work/vardir/facts.d/mesh.yaml").write_bytes(dump_yaml(facts))

    def apply(self, credentials: str = "{}") -> Applied:
        log = self.root / "restarts.log"
        before = log.read_text().split() if log.exists() else []
        restart = {
            p: f'/bin/sh -c \\"echo {p} >> {log}\\"' for p in ("envoy", "envoy-hot", "nerve", "synapse")
        }
        manifest = (
            f'class {{ "mesh": root => "{self.root}", manage_services => false, '
            f'envoy_restart_command => "{restart["envoy"]}", envoy_hot_restart_command => "{restart["envoy-hot"]}", '
            f'nerve_restart_command => "{restart["nerve"]}", synapse_restart_command => "{restart["synapse"]}", '
            f"discovery_credentials => {credentials} }}"
        )
        result = subprocess.run(
            [
                "puppet",
                "apply",
                "--detailed-exitcodes",
                "--color=false",
                *settings(self.base / "work"),
                "--modulepath",
                f"{self.tree / 'modules'}:{STDLIB_MODULES}",
                "--hiera_config",
                str(self.tree / "hiera.yaml"),
                "--certname",
                self.node.certname,
                "-e",
                manifest,
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        after = log.read_text().split() if log.exists() else []
        config = self.root / "etc/mesh"
        # Dot files are the module's restart fingerprints, discovery/ the site's credentials: not sidecar documents.
        files = sorted(
            p
            for p in config.rglob("*")
            if p.is_file() and not p.name.startswith(".") and p.relative_to(config).parts[0] != "discovery"
        )
        fingerprints = {p.parent.name: p.read_text() for p in config.rglob(".restart-fingerprint")}
        discovery = {
            p.relative_to(config / "discovery").as_posix(): (p.read_bytes(), p.stat().st_mode & 0o777)
            for p in sorted((config / "discovery").rglob("*"))
            if p.is_file()
        }
        return Applied(
            rc=result.returncode,
            output=result.stdout + result.stderr,
            restarts=after[len(before) :],
            files={p.relative_to(config).as_posix(): p.read_bytes() for p in files},
            inodes={p.relative_to(config).as_posix(): p.stat().st_ino for p in files},
            fingerprints=fingerprints,
            discovery=discovery,
        )

    def update(self, mesh: Mesh, sidecar: SidecarConfig) -> None:
        """Publish new data for one pool, as a new build deployed on the Puppet server would."""
        write_tree(build_puppet(mesh, {sidecar.workload.id: sidecar}), self.tree)


def host_runs(
    base: Path,
    tree: Path,
    mesh: Mesh,
    sidecar: SidecarConfig,
    steps: tuple[tuple[str, tuple[str, ...]], ...],
    credentials: Mapping[str, str] | None = None,
) -> dict[str, Applied]:
    """A host of the pool: a first apply, then one apply after each step's documents (and credentials) changed."""
    shutil.copytree(tree, base / "puppet")  # its own tree: the steps change the pool's data
    host = Host(base, base / "puppet", node_of(sidecar.workload.id))
    current = (credentials or {}).get("first", "{}")
    runs = {"first": host.apply(current)}
    for name, documents in steps:
        sidecar = changed(sidecar, documents)
        host.update(mesh, sidecar)
        current = (credentials or {}).get(name, current)
        runs[name] = host.apply(current)
    return runs


def lookup_jobs(base: Path, sidecars: Mapping[str, SidecarConfig]) -> list[dict[str, Any]]:
    """`puppet lookup` command lines: every VM pool's sidecar and compiled catalog, the canary, one --explain."""
    nodes = {wid: node_of(wid) for wid, s in sidecars.items() if s.workload.platform == "vm"}
    nodes["canary"] = Node(certname=CANARY, service="encryption", datacenter="sjc")
    jobs = []
    for name, node in nodes.items():
        facts = base / f"{node.certname}.yaml"
        facts.write_bytes(dump_yaml(node.facts))
        common = ["--node", node.certname, "--facts", str(facts)]
        jobs.append({"name": name, "args": ["mesh::sidecar", *common, "--render-as", "json"]})
        # --compile: the node's whole catalog (`include mesh`, parameters from hiera, services managed)
        # is compiled before the lookup; any evaluation error fails the job.
        jobs.append(
            {
                "name": f"{name} compiled",
                "code": "include mesh",
                "args": ["mesh::workload", *common, "--compile", "--render-as", "json"],
            }
        )
        if name == POOL:  # proves the compile jobs compile: a duplicate declaration must fail
            jobs.append(
                {
                    "name": "compile control",
                    "code": "include mesh\nservice { 'envoy': }",
                    "args": ["mesh::workload", *common, "--compile", "--render-as", "json"],
                }
            )
        if name == "canary":
            jobs.append({"name": "explain", "args": ["mesh::sidecar", *common, "--explain"]})
    for i, job in enumerate(jobs):
        job["out"] = str(base / f"{i}.out")
    return jobs


def batch_lookups(
    base: Path, tree: Path, sidecars: Mapping[str, SidecarConfig]
) -> dict[str, tuple[int, str]]:
    """Job name -> (exit code, stdout) of every lookup job, all run in one Ruby process."""
    jobs = lookup_jobs(base, sidecars)
    (base / "jobs.json").write_text(json.dumps(jobs))
    global_settings = [
        *settings(base / "work"),
        "--hiera_config",
        str(tree / "hiera.yaml"),
        "--modulepath",
        f"{tree / 'modules'}:{STDLIB_MODULES}",
    ]
    (base / "settings.json").write_text(json.dumps(global_settings))
    (base / "driver.rb").write_text(LOOKUP_DRIVER)
    result = subprocess.run(
        ["ruby", str(base / "driver.rb"), str(base / "jobs.json"), str(base / "settings.json")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        return {"driver": (result.returncode, result.stderr)}
    status = json.loads(result.stdout.splitlines()[-1])
    return {job["name"]: (status[job["out"]], Path(job["out"]).read_text()) for job in jobs}


def command(args: list[str]) -> Command:
    result = subprocess.run(args, capture_output=True, text=True, timeout=300)
    return Command(rc=result.returncode, stdout=result.stdout, stderr=result.stderr)


def lookup_command(base: Path, tree: Path, node: Node) -> Command:
    """The real `puppet lookup` command, offline, facts from a file."""
    facts = base / "facts.yaml"
    facts.write_bytes(dump_yaml(node.facts))
    return command(
        [
            "puppet",
            "lookup",
            "mesh::sidecar",
            "--node",
            node.certname,
            "--facts",
            str(facts),
            "--render-as",
            "json",
            "--hiera_config",
            str(tree / "hiera.yaml"),
            *settings(base / "work"),
        ]
    )


def queries(base: Path, tree: Path, sidecars: Mapping[str, SidecarConfig]) -> tuple[Any, ...]:
    manifests = sorted(str(p) for p in (tree / "modules/mesh").rglob("*.pp"))
    (base / "batch").mkdir(parents=True)
    (base / "command").mkdir()
    return (
        batch_lookups(base / "batch", tree, sidecars),
        lookup_command(base / "command", tree, node_of(TRAP_POOL)),
        command(["puppet", "parser", "validate", *manifests]),
    )


@pytest.fixture(scope="module")
def sidecars(example_build: Build) -> dict[str, SidecarConfig]:
    """The example mesh's sidecars plus the trap pool."""
    return {**example_build.sidecars, TRAP_POOL: trap_sidecar()}


@pytest.fixture(scope="module")
def runs(
    example_build: Build, sidecars: dict[str, SidecarConfig], tmp_path_factory: pytest.TempPathFactory
) -> Runs:
    """Every Puppet run of this module, in three concurrent chains (see the module docstring)."""
    require_tool("puppet")
    require_tool("ruby")  # Puppet's own interpreter; drives the batched lookups
    if not Path(STDLIB_MODULES, "stdlib").is_dir():
        pytest.fail(
            f"puppetlabs-stdlib is not in {STDLIB_MODULES} (apt-get install puppet-module-puppetlabs-stdlib)"
        )
    base = tmp_path_factory.mktemp("puppet")
    tree = base / "server/puppet"  # output/puppet as a Puppet server holds it, plus one canary node file
    write_tree(build_puppet(example_build.mesh, sidecars), tree)
    write_tree(
        [
            Artifact(
                path=f"puppet/data/nodes/{CANARY}.json",
                data=dump_json({"mesh::sidecar": {ENVOY_CDS: {"canary": True}}}),
            )
        ],
        tree,
    )
    mesh = example_build.mesh
    with ThreadPoolExecutor(max_workers=3) as pool:
        example = pool.submit(
            host_runs,
            base / "example",
            tree,
            mesh,
            sidecars[POOL],
            (
                ("again", ()),
                ("hot", (ENVOY_LDS, ENVOY_CDS, ENVOY_SDS)),
                ("services", (SYNAPSE + SERVICES_ONLY,)),
                ("restart", (ENVOY_BOOTSTRAP, NERVE)),
            ),
            CREDENTIALS,
        )
        trap = pool.submit(
            host_runs,
            base / "trap",
            tree,
            mesh,
            sidecars[TRAP_POOL],
            (("restart", (ENVOY_BOOTSTRAP, SYNAPSE)),),
        )
        lookups, lookup, validate = pool.submit(queries, base / "queries", tree, sidecars).result()
        return Runs(
            example=example.result(),
            trap=trap.result(),
            lookups=lookups,
            lookup_command=lookup,
            validate=validate,
        )


def documents_after(sidecar: SidecarConfig, steps: tuple[tuple[str, ...], ...]) -> Mapping[str, Any]:
    for documents in steps:
        sidecar = changed(sidecar, documents)
    return sidecar.documents


def assert_files_are_rendering(applied: Applied, node: Node, documents: Mapping[str, Any]) -> None:
    expected = {name: dump_json(doc) for name, doc in per_host(documents, node.certname, HOST_IP).items()}
    assert sorted(applied.files) == sorted(expected)
    for name, data in applied.files.items():
        assert strict(json.loads(data)) == expected[name], name
        assert ruby_json_normalised(data) == expected[name], f"{name}: bytes differ from meshc's JSON"


# ---------------------------------------------------------------- parser


def test_every_module_manifest_parses(runs: Runs) -> None:
    assert runs.validate.rc == 0, runs.validate.stdout + runs.validate.stderr


# ---------------------------------------------------------------- lookup


def test_lookup_returns_each_pools_rendered_sidecar_config(
    runs: Runs, sidecars: dict[str, SidecarConfig]
) -> None:
    assert "driver" not in runs.lookups, runs.lookups.get("driver")
    pools = sorted(wid for wid, s in sidecars.items() if s.workload.platform == "vm")
    assert len(pools) == 23
    for wid in pools:
        rc, out = runs.lookups[wid]
        assert rc == 0, f"{wid}: lookup failed: {out}"
        assert strict(json.loads(out)) == strict(dict(sidecars[wid].documents)), (
            f"{wid}: lookup differs from rendering"
        )
        rc, out = runs.lookups[f"{wid} compiled"]
        assert rc == 0 and json.loads(out) == wid, f"{wid}: the catalog with `include mesh` does not compile"


def test_compile_jobs_really_compile_the_class(runs: Runs) -> None:
    rc, _ = runs.lookups["compile control"]
    assert rc == 1


def test_node_level_replaces_whole_documents_only(runs: Runs, sidecars: dict[str, SidecarConfig]) -> None:
    rc, out = runs.lookups["canary"]
    assert rc == 0, out
    expected = dict(sidecars[POOL].documents) | {ENVOY_CDS: {"canary": True}}
    assert strict(json.loads(out)) == strict(expected)


def test_explain_names_the_file_each_value_came_from(runs: Runs) -> None:
    rc, out = runs.lookups["explain"]
    assert rc == 0
    merge = 'Using merge options from "lookup_options" hash\nSearching for "mesh::sidecar"\n  Merge strategy hash\n'
    assert merge in out
    assert f"/data/nodes/{CANARY}.json" in out
    assert "/data/pools/encryption/sjc.json" in out


def test_puppet_lookup_command_agrees_with_the_batch(runs: Runs) -> None:
    assert runs.lookup_command.rc == 0, runs.lookup_command.stderr
    assert strict(json.loads(runs.lookup_command.stdout)) == strict(json.loads(runs.lookups[TRAP_POOL][1]))


def test_trap_values_survive_lookup(runs: Runs) -> None:
    rc, out = runs.lookups[TRAP_POOL]
    assert rc == 0, out
    documents = json.loads(out)
    assert strict(documents[SYNAPSE]["x_meshc_traps"]) == strict(TRAPS)
    assert documents[NERVE]["services"]["yes"]["labels"] == {
        "datacenter": "no",
        "region": "on",
        "version": "1.10",
    }


# ---------------------------------------------------------------- apply


def test_apply_writes_the_rendered_documents(runs: Runs, sidecars: dict[str, SidecarConfig]) -> None:
    applied = runs.example["first"]
    assert applied.rc == 2, applied.output
    assert_files_are_rendering(applied, node_of(POOL), sidecars[POOL].documents)
    assert sorted(applied.restarts) == ["envoy", "nerve", "synapse"]


def test_second_apply_changes_nothing(runs: Runs) -> None:
    applied = runs.example["again"]
    assert applied.rc == 0, applied.output
    assert applied.restarts == []
    assert applied.inodes == runs.example["first"].inodes


def test_lds_cds_sds_change_restarts_nothing(runs: Runs, sidecars: dict[str, SidecarConfig]) -> None:
    hot = (ENVOY_LDS, ENVOY_CDS, ENVOY_SDS)
    applied = runs.example["hot"]
    assert applied.rc == 2, applied.output
    assert applied.restarts == []
    assert_files_are_rendering(applied, node_of(POOL), documents_after(sidecars[POOL], (hot,)))
    before = runs.example["again"].inodes
    # A changed file is a new inode renamed into place: Envoy's watched_directory sees a move.
    assert sorted(name for name, inode in applied.inodes.items() if inode != before[name]) == sorted(hot)


def test_synapse_services_change_restarts_nothing(runs: Runs, sidecars: dict[str, SidecarConfig]) -> None:
    """A new or changed dependency: the Synapse fork reconciles `services` itself (no restart)."""
    applied = runs.example["services"]
    assert applied.rc == 2, applied.output
    assert applied.restarts == []
    steps = ((ENVOY_LDS, ENVOY_CDS, ENVOY_SDS), (SYNAPSE + SERVICES_ONLY,))
    assert_files_are_rendering(applied, node_of(POOL), documents_after(sidecars[POOL], steps))
    before = runs.example["hot"].inodes
    assert sorted(name for name, inode in applied.inodes.items() if inode != before[name]) == [SYNAPSE]
    assert applied.fingerprints == runs.example["hot"].fingerprints, "services only: the fingerprint stays"
    assert applied.fingerprints == {
        "synapse": restart_fingerprints(documents_after(sidecars[POOL], steps))["synapse"] + "\n"
    }


def test_bootstrap_and_nerve_change_restart_envoy_and_nerve(
    runs: Runs, sidecars: dict[str, SidecarConfig]
) -> None:
    applied = runs.example["restart"]
    assert applied.rc == 2, applied.output
    assert sorted(applied.restarts) == ["envoy", "nerve"]
    steps = ((ENVOY_LDS, ENVOY_CDS, ENVOY_SDS), (SYNAPSE + SERVICES_ONLY,), (ENVOY_BOOTSTRAP, NERVE))
    assert_files_are_rendering(applied, node_of(POOL), documents_after(sidecars[POOL], steps))


def test_trap_values_survive_apply(runs: Runs, sidecars: dict[str, SidecarConfig]) -> None:
    applied = runs.trap["first"]
    assert applied.rc == 2, applied.output
    assert_files_are_rendering(applied, node_of(TRAP_POOL), sidecars[TRAP_POOL].documents)
    assert (
        json.loads(applied.files[SYNAPSE])["x_meshc_traps"]["server_options"] == "check inter 2s port %{port}"
    )


def test_restart_sensitive_pool_hot_restarts_envoy(runs: Runs, sidecars: dict[str, SidecarConfig]) -> None:
    assert sidecars[TRAP_POOL].workload.restart_sensitive
    applied = runs.trap["restart"]
    assert applied.rc == 2, applied.output
    assert sorted(applied.restarts) == ["envoy-hot", "synapse"]


def test_discovery_credentials_are_written_private_and_never_logged(runs: Runs) -> None:
    applied = runs.example["first"]
    assert applied.discovery == {
        "kube-sjc-a/ca.crt": (b"CA sjc", 0o644),
        "kube-sjc-a/token": (b"secret-one", 0o600),
    }
    assert "discovery/kube-sjc-a/token]/ensure" in applied.output  # the output does report the file
    assert "secret" not in applied.output
    assert runs.trap["first"].discovery == {}, "no credentials given: the module writes none"


def test_a_new_token_and_cluster_restart_nothing(runs: Runs) -> None:
    """Synapse re-reads its token (Synapse fork contract): a rotated token or new cluster credentials notify nothing."""
    applied = runs.example["hot"]
    assert applied.restarts == []
    assert applied.discovery == {
        "kube-iad-a/ca.crt": (b"CA iad", 0o644),
        "kube-iad-a/token": (b"secret-iad", 0o600),
        "kube-sjc-a/ca.crt": (b"CA sjc", 0o644),
        "kube-sjc-a/token": (b"secret-two", 0o600),
    }
    assert (
        "discovery/kube-iad-a/token]/ensure" in applied.output
        and "discovery/kube-sjc-a/token]/content" in applied.output
    )
    assert "secret" not in applied.output, "a token given as a plain String is redacted too"
    assert runs.example["restart"].discovery == applied.discovery


# ---------------------------------------------------------------- sidecar directories


def test_module_applies_with_separate_directories_of_the_sites_choice(tmp_path: Path) -> None:
    """Directories other than the defaults, one a string prefix of the other (two separate trees), apply; the
    same directory for both, which `validate` rejects (sidecar-overlap), is a catalog Puppet refuses to compile."""
    require_tool("puppet")
    config_dir, runtime_dir = "/srv/mesh", "/srv/mesh-run"
    sidecar = f"sidecar: {{config_dir: {config_dir}, runtime_dir: {runtime_dir}}}\n".encode()
    build = compile({**TRAP_SPEC, "mesh.yaml": TRAP_SPEC["mesh.yaml"] + sidecar}, "trap")
    same = f"sidecar: {{config_dir: {config_dir}, runtime_dir: {config_dir}}}\n".encode()
    with pytest.raises(SpecError) as rejected:
        compile({**TRAP_SPEC, "mesh.yaml": TRAP_SPEC["mesh.yaml"] + same}, "trap")
    assert [d.code for d in rejected.value.diagnostics] == ["sidecar-overlap"]
    # What the build would have written had validate let it through: the same documents, both directories one.
    overlapping = replace(build.mesh, sidecar=replace(build.mesh.sidecar, runtime_dir=config_dir))
    hosts = []
    for name, mesh in (("separate", build.mesh), ("same", overlapping)):
        write_tree(build_puppet(mesh, build.sidecars), tmp_path / name / "puppet")
        host = Host(tmp_path / name / "host", tmp_path / name / "puppet", node_of(TRAP_POOL))
        (host.root / "srv").mkdir()  # Puppet creates no parent directories; /etc and /var/run are there
        hosts.append(host)
    with ThreadPoolExecutor(max_workers=2) as pool:
        separate, same_dir = pool.map(lambda host: host.apply(CREDENTIALS["first"]), hosts)

    assert separate.rc == 2, separate.output
    config = hosts[0].root / config_dir.removeprefix("/")
    written = {p.relative_to(config).as_posix() for p in config.rglob("*") if p.is_file()}
    # Dot files are the module's receipt and restart fingerprints, discovery/ the site's credentials.
    documents = {name for name in written if "/." not in f"/{name}" and not name.startswith("discovery/")}
    assert documents == set(build.sidecars[TRAP_POOL].documents)
    assert {".meshc-applied.json", "discovery/kube-sjc-a/token"} <= written
    assert (hosts[0].root / runtime_dir.removeprefix("/") / "eds").is_dir()
    bootstrap = json.loads((config / ENVOY_BOOTSTRAP).read_bytes())
    assert f"{config_dir}/envoy" in json.dumps(bootstrap), "the documents name the site's directories"

    assert same_dir.rc == 1
    assert "has already been used in this resource expression" in same_dir.output, same_dir.output
