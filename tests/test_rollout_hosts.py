"""Canary hosts: the inventory, rendezvous choice (stable when hosts are added), node files, real Puppet lookups."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from compiler.cli import main
from compiler.diagnostics import Span, SpecError
from compiler.output.manifest import MANIFEST
from compiler.render import ENVOY_CDS
from compiler.rollout.build import build_rollout, node_path
from compiler.rollout.hosts import Host, choose, load_inventory, score
from compiler.rollout.output import output_for
from compiler.rollout.revisions import rollout_context
from tests.conftest import require_tool
from tests.test_puppet_real import Node, lookup_command, strict
from tests.test_rollout_build import (
    SPEC,
    add_timeout_change,
    assert_now_is_what_the_builds_change,
    commit,
    make_repo,
    revision_tree,
    set_policy,
)

POOL = "vm/auth/sjc"


def hosts(pool: str, names: list[str]) -> list[Host]:
    service, dc = pool.split("/")[1:]
    return [
        Host(certname=name, service=service, datacenter=dc, span=Span(file="inventory")) for name in names
    ]


def names(chosen: list[Host]) -> set[str]:
    return {h.certname for h in chosen}


def test_the_choice_is_the_top_scores_and_does_not_depend_on_order() -> None:
    pool = hosts(POOL, [f"auth-{i:03}.sjc.box.net" for i in range(200)])
    chosen = choose(pool, 3)
    top = sorted(pool, key=lambda h: score(POOL, h.certname), reverse=True)[:3]
    assert names(chosen) == names(top) and len(chosen) == 3
    shuffled = list(pool)
    random.Random(7).shuffle(shuffled)
    assert choose(shuffled, 3) == chosen


def test_adding_hosts_never_reshuffles_existing_canaries() -> None:
    existing = hosts(POOL, [f"auth-{i:03}.sjc.box.net" for i in range(100)])
    before = names(choose(existing, 2))
    rng = random.Random(11)
    for round_ in range(30):
        added = hosts(
            POOL, [f"new-{round_}-{rng.randrange(10**9)}.sjc.box.net" for _ in range(rng.randrange(1, 40))]
        )
        after = names(choose(existing + added, 2))
        kept = after & before
        newcomers = after - before
        # only a new host can take a canary's place, and only by outscoring the canary it displaces
        assert newcomers <= names(added)
        displaced = before - after
        assert len(displaced) == len(newcomers)
        lowest_new = min((score(POOL, n) for n in newcomers), default=None)
        assert (
            all(score(POOL, d) < lowest_new for d in displaced) if lowest_new is not None else not displaced
        )
        assert kept | newcomers == after


def test_additions_that_score_lower_leave_the_canaries_identical() -> None:
    existing = hosts(POOL, [f"auth-{i:03}.sjc.box.net" for i in range(50)])
    canaries = choose(existing, 2)
    floor = min(score(POOL, h.certname) for h in canaries)
    candidates = (f"auth-extra-{i}.sjc.box.net" for i in range(10_000))
    low = [name for name in candidates if score(POOL, name) < floor][:25]
    assert len(low) == 25
    assert choose(existing + hosts(POOL, low), 2) == canaries


def test_inventory_errors_are_positioned(tmp_path: Path) -> None:
    path = tmp_path / "hosts.yaml"
    path.write_text(
        "- {certname: a.example, service: auth, datacenter: sjc}\n"
        "- {certname: a.example, service: auth, datacenter: iad}\n"
        "- {certname: b.example, service: auth}\n"
    )
    with pytest.raises(SpecError) as caught:
        load_inventory(path, "mesh-spec/inventory/hosts.yaml")
    assert [d.format() for d in caught.value.diagnostics] == [
        "mesh-spec/inventory/hosts.yaml:2:3: error: "
        "certname 'a.example' is listed twice (first as item 1)  [rollout-inventory]",
        "mesh-spec/inventory/hosts.yaml:3:3: error: "
        "each host is a mapping of exactly certname, service and datacenter  [rollout-inventory]",
    ]
    path.write_text("a: b\n")
    with pytest.raises(SpecError, match="1 error"):
        load_inventory(path, "x")
    assert load_inventory(tmp_path / "absent.yaml", "x") == ()


# ---------------------------------------------------------------- in a build, and through real Puppet

POLICY = """
rollout:
  waves:
    - name: canary
      match: {datacenters: [gcp-usc1]}
    - name: canary-hosts
      hosts_per_pool: 2
      match: {platform: vm}
    - name: west
      match: {datacenters: [sjc]}
    - name: rest
"""


def inventory(count: int) -> str:
    lines = [
        f"- {{certname: {service}-{i:02}.{dc}.box.net, service: {service}, datacenter: {dc}}}"
        for service, dc in (("auth", "sjc"), ("auth", "iad"), ("audit-log", "gcp-usc1"))
        for i in range(count)
    ]
    return "# PuppetDB inventory export\n" + "\n".join(lines) + "\n"


def hosts_repo(root: Path) -> tuple[Path, str]:
    """A repo with POLICY and an inventory (commit `base`), and rollout.yaml pinning every later wave to base,
    not yet committed: (repo, base)."""
    repo = make_repo(root)
    spec = repo / SPEC
    set_policy(spec, POLICY)
    (spec / "inventory").mkdir(exist_ok=True)
    (spec / "inventory/hosts.yaml").write_text(inventory(10))
    base = commit(repo, "policy and inventory")
    (spec / "rollout.yaml").write_text(
        f"hold: false\npins:\n  canary-hosts: {base}\n  west: {base}\n  rest: {base}\n"
    )
    return repo, base


@pytest.fixture(scope="module")
def canary_repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    repo, base = hosts_repo(tmp_path_factory.mktemp("hosts") / "repo")
    spec = repo / SPEC
    commit(repo, "rollout")
    head = add_timeout_change(repo)
    (spec / "rollout.yaml").write_text(
        f"hold: false\npins:\n  canary-hosts: {head}\n  west: {base}\n  rest: {base}\n"
    )
    commit(repo, "promote canary-hosts")
    return repo, base, head


def test_canary_hosts_get_node_files_with_their_waves_rendering(canary_repo: tuple[Path, str, str]) -> None:
    repo, base, head = canary_repo
    tree = output_for(repo / SPEC)
    rollout = json.loads(tree[MANIFEST])["rollout"]
    chosen = {c: h for c, h in rollout["hosts"].items()}
    assert {h["target"] for h in chosen.values()} == {"vm/auth/sjc", "vm/auth/iad"}, (
        "audit-log/gcp-usc1 is in the canary wave already"
    )
    assert len(chosen) == 4 and {h["wave"] for h in chosen.values()} == {"canary-hosts"}
    assert {h["revision"] for h in chosen.values()} == {head}
    new, old = revision_tree(repo, head), revision_tree(repo, base)
    for certname, host in chosen.items():
        node = json.loads(tree[node_path(certname)])
        pool_path = f"puppet/data/pools/{host['target'].split('/')[1]}/{host['target'].split('/')[2]}.json"
        assert node["mesh::wave"] == "canary-hosts"
        expected = json.loads(new[pool_path])
        assert node["mesh::sidecar"] == expected["mesh::sidecar"], (
            "the node gets the canary-host wave's revision"
        )
        assert json.loads(tree[pool_path])["mesh::sidecar"] == json.loads(old[pool_path])["mesh::sidecar"], (
            "the pool keeps its wave's"
        )
    assert not any(
        p.startswith("puppet/data/nodes/") and p[len("puppet/data/nodes/") : -5] not in chosen for p in tree
    )


def test_adding_hosts_to_the_inventory_keeps_the_existing_canaries(
    canary_repo: tuple[Path, str, str], tmp_path: Path
) -> None:
    repo, _, _ = canary_repo
    spec = repo / SPEC
    before = json.loads(output_for(spec)[MANIFEST])["rollout"]["hosts"]
    original = (spec / "inventory/hosts.yaml").read_text()
    try:
        # the same 10 hosts per pool and 30 more each
        (spec / "inventory/hosts.yaml").write_text(inventory(40))
        after = json.loads(output_for(spec)[MANIFEST])["rollout"]["hosts"]
    finally:
        (spec / "inventory/hosts.yaml").write_text(original)
    # a canary goes only for a newcomer of its pool that outscores it
    for certname in set(before) - set(after):
        pool = before[certname]["target"]
        newcomers = [c for c, h in after.items() if h["target"] == pool and c not in before]
        assert newcomers and all(score(pool, n) > score(pool, certname) for n in newcomers)
    for certname in after:
        assert certname in before or int(certname.split("-")[-1].split(".")[0]) >= 10, (
            "an existing non-canary became a canary"
        )


@pytest.mark.consumer
def test_real_puppet_lookup_serves_the_canary_its_revision_and_the_pool_its_pin(
    canary_repo: tuple[Path, str, str], tmp_path: Path
) -> None:
    require_tool("puppet")
    repo, base, head = canary_repo
    tree = output_for(repo / SPEC)
    root = tmp_path / "puppet"
    for path, data in tree.items():
        if path.startswith("puppet/"):
            (root / path.removeprefix("puppet/")).parent.mkdir(parents=True, exist_ok=True)
            (root / path.removeprefix("puppet/")).write_bytes(data)
    hosts_ = json.loads(tree[MANIFEST])["rollout"]["hosts"]
    canary = min(c for c, h in hosts_.items() if h["target"] == "vm/auth/sjc")
    other = next(f"auth-{i:02}.sjc.box.net" for i in range(10) if f"auth-{i:02}.sjc.box.net" not in hosts_)
    new, old = revision_tree(repo, head), revision_tree(repo, base)
    pool = "puppet/data/pools/auth/sjc.json"
    looked_up = {}
    for certname in (canary, other):
        (tmp_path / certname).mkdir()
        result = lookup_command(
            tmp_path / certname, root, Node(certname=certname, service="auth", datacenter="sjc")
        )
        assert result.rc == 0, result.stderr
        looked_up[certname] = json.loads(result.stdout)
    assert strict(looked_up[canary]) == strict(json.loads(new[pool])["mesh::sidecar"])
    assert strict(looked_up[other]) == strict(json.loads(old[pool])["mesh::sidecar"])
    assert looked_up[canary][ENVOY_CDS] != looked_up[other][ENVOY_CDS], (
        "the change (connect timeout) is in the CDS"
    )


def test_the_diff_counts_canary_hosts_among_the_promotions_still_ahead(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The canary-hosts wave is the next promotion of a change to auth's pools: "still ahead" names it with its
    # hosts (it named the target waves alone), in the policy's order.
    repo, base = hosts_repo(tmp_path / "repo")
    spec = repo / SPEC
    start = commit(repo, "rollout")
    head = add_timeout_change(repo)
    assert main(["diff", "--base", start, "--head", head, "--spec", str(spec), "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    context = rollout_context(spec)
    assert context is not None
    hosts = {f"host/{c.certname}" for c in build_rollout(context).state.canaries}
    assert len(hosts) == 4
    [ahead] = report["now"]["hosts_ahead"]
    assert ahead["wave"] == "canary-hosts" and set(ahead["targets"]) == hosts
    assert not hosts & {c["target"] for c in report["now"]["changes"]}, "they keep the base until promoted"
    assert main(["diff", "--base", start, "--head", head, "--spec", str(spec)]) == 0
    splits = {s["wave"]: len(s["targets"]) for s in report["waves"]}
    assert (
        f"Still ahead, one promotion each: canary-hosts (4 host(s)), west ({splits['west']}), rest ({splits['rest']})"
        in capsys.readouterr().out
    )


def test_a_host_becoming_a_canary_is_compared_with_its_pool(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A rollout starts with every wave at the base: the canary hosts get node files that hold their pool's very
    # rendering. Nothing they run changes (it read "added … Envoy restart" against nothing); the files are named.
    repo, base = hosts_repo(tmp_path / "repo")
    head = commit(repo, "rollout")
    report = assert_now_is_what_the_builds_change(repo, base, head, tmp_path, capsys)
    assert not [c for c in report["now"]["changes"] if c["target"].startswith("host/")]
    nodes = [
        (path, status) for path, status in report["now"]["files"] if path.startswith("puppet/data/nodes/")
    ]
    assert len(nodes) == 4 and {status for _, status in nodes} == {"added"}


def test_a_canary_host_moved_to_another_pool_is_compared_with_what_it_ran(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # An inventory edit moves a canary host to another VM pool, where it stays a canary: its node file now holds the
    # other pool's rendering. It is compared with the pool it ran before (it read "no change" against its new
    # pool's own rendering at the base, and the node file went among the other files).
    repo, _ = hosts_repo(tmp_path / "repo")
    base = commit(repo, "rollout")
    context = rollout_context(repo / SPEC)
    assert context is not None
    moved = next(c for c in build_rollout(context).state.canaries if c.pool == "vm/auth/sjc")
    hosts = repo / SPEC / "inventory/hosts.yaml"
    before = f"{{certname: {moved.certname}, service: auth,"
    assert hosts.read_text().count(before) == 1
    hosts.write_text(hosts.read_text().replace(before, f"{{certname: {moved.certname}, service: edge,"))
    head = commit(repo, f"{moved.certname} serves edge")
    report = assert_now_is_what_the_builds_change(repo, base, head, tmp_path, capsys)
    changes = [c for c in report["now"]["changes"] if c["target"] == f"host/{moved.certname}"]
    assert [(c["status"], c["restart"]) for c in changes] == [("changed", "envoy-restart")]
    assert node_path(moved.certname) not in {path for path, _ in report["now"]["files"]}
