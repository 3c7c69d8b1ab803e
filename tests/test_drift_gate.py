"""`meshc promote`'s drift gate through the real command line, on a real git repository with a rollout in force.

The rollout of tests/test_rollout_build.py (waves canary = gcp-usc1, west = sjc, rest), a change
merged, so the next promotion moves `west`: the gate judges wave `canary` against the rollout as it
stands, from a dump of its cluster (tests/live_k8s.py's rules) and an export of its hosts.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from compiler.cli import main
from compiler.drift.puppet import expected_rendering
from compiler.render import ENVOY_CDS
from compiler.rollout.output import output_for
from tests.conftest import inventory_of, meshc_in_process
from tests.live_k8s import dump_json, live_objects
from tests.test_gitsource import commit
from tests.test_rollout_build import add_timeout_change, start_rollout

CANARY_CLUSTER = "gke-usc1-a"
OLD_HASH = "0" * 64


@pytest.fixture()
def rollout(tmp_path: Path) -> tuple[Path, Path, dict[str, bytes]]:
    """(spec, output, the rollout tree as it stands): a change merged, reaching wave canary only; west is next."""
    repo, spec, _ = start_rollout(tmp_path / "repo")
    out = repo / "output"
    add_timeout_change(repo)
    assert main(["build", str(spec), "-o", str(out)]) == 0
    commit(repo, "output with the change in canary")
    return spec, out, output_for(spec)


def canary_pools(tree: dict[str, bytes]) -> dict[str, dict[str, str]]:
    """workload -> document hashes, for the VM pools of wave canary."""
    waves = json.loads(tree["MANIFEST.json"])["rollout"]["targets"]
    return {
        w: dict(e.hashes) for w, e in expected_rendering(tree).pools.items() if waves[w]["wave"] == "canary"
    }


def write_export(path: Path, hosts: Iterable[tuple[str, str, dict[str, str]]]) -> Path:
    """A PuppetDB export (nodes and facts, as PuppetDB answers) of (certname, workload, documents) hosts, now."""
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    nodes, facts = [], []
    for certname, workload, documents in hosts:
        _, service, datacenter = workload.split("/")
        nodes.append(
            {
                "certname": certname,
                "latest_report_status": "unchanged",
                "cached_catalog_status": "not_used",
                "report_timestamp": now,
                "facts_timestamp": now,
                "deactivated": None,
                "expired": None,
            }
        )
        applied = {"workload": workload, "service": service, "datacenter": datacenter, "documents": documents}
        facts += [
            {"certname": certname, "environment": "production", "name": name, "value": value}
            for name, value in (
                ("mesh_service", service),
                ("mesh_datacenter", datacenter),
                ("mesh_applied", applied),
            )
        ]
    path.write_text(json.dumps({"nodes": nodes, "facts": facts}))
    return path


def converged_export(path: Path, spec: Path, tree: dict[str, bytes], pending: bool = False) -> Path:
    """Every inventory host of wave canary's pools applied its pool's documents (drift counts an inventory host
    PuppetDB does not know as unknown); `pending`: one more host still runs an older CDS."""
    pools = canary_pools(tree)
    hosts = [(c, w, pools[w]) for c, w in sorted(inventory_of(spec).items()) if w in pools]
    assert {w for _, w, _ in hosts} == set(pools), "each canary pool has inventory hosts"
    if pending:  # one more host, still on an older CDS
        workload, hashes = next(iter(sorted(pools.items())))
        hosts.append(("late-1.gate", workload, hashes | {ENVOY_CDS: OLD_HASH}))
    return write_export(path, hosts)


def canary_dump(path: Path, tree: dict[str, bytes]) -> list[str]:
    path.write_text(dump_json(live_objects(tree, CANARY_CLUSTER)))
    return ["--kubernetes", f"{CANARY_CLUSTER}={path}"]


def promote(spec: Path, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`meshc promote --spec SPEC -o OUT ARGS`, in this process (a child's imports would test nothing more)."""
    result = meshc_in_process("promote", "--spec", spec, "-o", out, *args, env={"MESHC_TODAY": "2026-11-30"})
    assert "Traceback" not in result.stdout + result.stderr
    return result


def test_canary_wave_has_pools_and_a_cluster(rollout: tuple[Path, Path, dict[str, bytes]]) -> None:
    _, _, tree = rollout
    assert sorted(canary_pools(tree)) and all(w.endswith("/gcp-usc1") for w in canary_pools(tree))
    waves = json.loads(tree["MANIFEST.json"])["rollout"]["targets"]
    assert any(t.startswith(f"k8s/{CANARY_CLUSTER}/") and w["wave"] == "canary" for t, w in waves.items())


def test_promote_blocks_without_evidence_on_a_pending_host_and_on_a_missing_dump(
    rollout: tuple[Path, Path, dict[str, bytes]], tmp_path: Path
) -> None:
    spec, out, tree = rollout
    before = (spec / "rollout.yaml").read_text()
    nothing = promote(spec, out)
    assert nothing.returncode == 1, nothing.stderr
    assert nothing.stderr.startswith("meshc: promote refused: wave west is not promoted: ")
    assert "(evidence read: none given)" in nothing.stderr
    assert f"not checked: no dump of cluster {CANARY_CLUSTER} given (--kubernetes)" in nothing.stderr
    assert "not checked: no PuppetDB or export given (--puppetdb, --puppet-facts)" in nothing.stderr

    export = converged_export(tmp_path / "pending.json", spec, tree, pending=True)
    pending = promote(spec, out, *canary_dump(tmp_path / "dump.json", tree), "--puppet-facts", str(export))
    assert pending.returncode == 1, pending.stdout + pending.stderr
    [blocker] = [line.strip() for line in pending.stderr.splitlines()[1:]]
    assert blocker.startswith(
        f"{sorted(canary_pools(tree))[0]} late-1.gate: pending ({ENVOY_CDS}: applied 000000000000"
    )
    assert f"evidence read: {tmp_path / 'dump.json'}, {export}" in pending.stderr

    export = converged_export(tmp_path / "converged.json", spec, tree)
    no_dump = promote(spec, out, "--puppet-facts", str(export))
    assert no_dump.returncode == 1
    assert [line.strip() for line in no_dump.stderr.splitlines()[1:]][0].endswith(
        f": not checked: no dump of cluster {CANARY_CLUSTER} given (--kubernetes)"
    )
    assert (spec / "rollout.yaml").read_text() == before, "a refused promotion writes nothing"


def test_promote_passes_once_the_wave_converged(
    rollout: tuple[Path, Path, dict[str, bytes]], tmp_path: Path
) -> None:
    spec, out, tree = rollout
    export = converged_export(tmp_path / "converged.json", spec, tree)
    result = promote(spec, out, *canary_dump(tmp_path / "dump.json", tree), "--puppet-facts", str(export))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("promoted west: ") and "FORCED" not in result.stdout
    assert "forced" not in (spec / "rollout.yaml").read_text()


def test_force_is_recorded_in_the_output_and_in_rollout_yaml(
    rollout: tuple[Path, Path, dict[str, bytes]], tmp_path: Path
) -> None:
    spec, out, tree = rollout
    export = converged_export(tmp_path / "pending.json", spec, tree, pending=True)
    result = promote(
        spec, out, *canary_dump(tmp_path / "dump.json", tree), "--puppet-facts", str(export), "--force"
    )
    assert result.returncode == 0, result.stderr
    [forced] = [line for line in result.stdout.splitlines() if line.startswith("FORCED: ")]
    assert (
        "forced past the drift gate on 2026-11-30: wave canary had 1 not converged (" in forced
        and "late-1.gate: pending" in forced
    )
    [pin] = [
        line for line in (spec / "rollout.yaml").read_text().splitlines() if line.strip().startswith("west:")
    ]
    assert "# forced past the drift gate on 2026-11-30: wave canary had 1 not converged" in pin
    assert "# west: the sjc datacenter" in (spec / "rollout.yaml").read_text(), "the file's own comments stay"
    assert main(["check", str(spec), "-o", str(out)]) == 0, "promote rebuilt the output for the new pin"


# ---------------------------------------------------------------- a canary host is judged against its node file

HOSTS_POLICY = """
rollout:
  waves:
    - name: canary
      match: {datacenters: [gcp-usc1]}
    - name: canary-hosts
      hosts_per_pool: 2
      match: {platform: vm}
    - name: rest
"""


def test_drift_judges_a_canary_host_against_its_node_file(tmp_path: Path) -> None:
    """canary-hosts runs the change, the pools do not yet: one canary reports its node file's hashes, one its pool's."""
    from tests.test_gitsource import make_repo
    from tests.test_rollout_build import set_policy

    repo = make_repo(tmp_path / "repo")
    spec = repo / "mesh-spec"
    set_policy(spec, HOSTS_POLICY)
    base = commit(repo, "wave policy with canary hosts")
    head = add_timeout_change(repo)
    (spec / "rollout.yaml").write_text(f"hold: false\npins:\n  canary-hosts: {head}\n  rest: {base}\n")
    commit(repo, "canary hosts run the change")
    rendering = expected_rendering(output_for(spec))
    changed = sorted(
        c for c, e in rendering.nodes.items() if dict(e.hashes) != dict(rendering.pools[e.workload].hashes)
    )
    assert len(changed) >= 2, "the change reaches some canary hosts' documents"
    ahead, behind = (
        changed[0],
        next(c for c in changed[1:] if rendering.nodes[c].workload == rendering.nodes[changed[0]].workload),
    )
    workload = rendering.nodes[ahead].workload
    # every other canary host reports its node file too, every other inventory host its pool's: a host the inventory
    # lists that PuppetDB does not know is unknown (it fails the run)
    others = [(c, e.workload, dict(e.hashes)) for c, e in rendering.nodes.items() if c not in (ahead, behind)]
    others += [
        (c, w, dict(rendering.pools[w].hashes))
        for c, w in inventory_of(spec).items()
        if c not in rendering.nodes and w in rendering.pools
    ]
    export = write_export(
        tmp_path / "export.json",
        [
            (ahead, workload, dict(rendering.nodes[ahead].hashes)),
            (behind, workload, dict(rendering.pools[workload].hashes)),
            *others,
        ],
    )
    result = meshc_in_process(
        "drift",
        spec,
        "--puppet-facts",
        export,
        "--partial",
        "--format",
        "json",
        env={"MESHC_TODAY": "2026-11-30"},
    )
    assert "Traceback" not in result.stdout + result.stderr
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr  # pending within the lag
    data = json.loads(result.stdout)
    hosts = {
        s["subject"]: s
        for s in data["subjects"]
        if s["platform"] == "puppet" and s["subject"] in (ahead, behind)
    }
    assert list(hosts) == [behind], "the canary that applied its node file converged"
    assert (hosts[behind]["state"], hosts[behind]["target"]) == ("pending", workload)
    assert all(i["detail"].split(": ")[1].startswith("applied ") for i in hosts[behind]["items"])
    wave = next(w for w in data["waves"] if w["wave"] == "canary-hosts")
    assert behind in wave["not_converged"] and ahead not in wave["not_converged"]
