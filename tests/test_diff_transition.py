"""`meshc diff` without a rollout names the calls that work at the base and can fail while the head is applied."""

from __future__ import annotations

import json
from pathlib import Path

from compiler.diff.revisions import diff_revisions
from tests.conftest import meshc_in_process
from tests.test_gitsource import make_repo
from tests.test_rollout_build import drop_dependency, replace_in


def test_a_mesh_port_change_names_both_combinations_of_each_client(tmp_path: Path) -> None:
    """search moves to another mesh port: every restart class is a hot reload, yet a client still at the base
    watches the old port while search serves the new one, and the other way round."""
    repo = make_repo(tmp_path / "repo")
    spec = repo / "mesh-spec"
    replace_in(spec / "services/search.yaml", "mesh_port: 18080", "mesh_port: 18090")
    diff = diff_revisions(spec, "HEAD")
    assert diff.restarts == 0, "the cost the diff states is still true: hot reloads only"
    found = {(h.client, h.server, h.check, h.states) for h in diff.hazards}
    assert found == {
        ("api-gateway", "search", "discovery", "client at base, server at head"),
        ("api-gateway", "search", "discovery", "client at head, server at base"),
    }
    [old_client] = [h for h in diff.hazards if h.states == "client at base, server at head"]
    assert "search/search:18080 but" in old_client.detail and old_client.detail.endswith(":18090")
    assert "or roll it out in waves" in old_client.fix and "wave watches" not in old_client.fix
    text = meshc_in_process("diff", "--base", "HEAD", "--spec", spec).stdout
    assert "warning: Calls that work today and can fail while the head is applied" in text
    assert "  api-gateway → search (client at base, server at head): " in text
    data = json.loads(meshc_in_process("diff", "--base", "HEAD", "--spec", spec, "--format", "json").stdout)
    assert data["summary"]["hazards"] == 2 and len(data["hazards"]) == 2
    markdown = meshc_in_process("diff", "--base", "HEAD", "--spec", spec, "--format", "markdown").stdout
    assert "> - api-gateway → search (client at head, server at base): " in markdown


def test_removing_a_service_with_its_callers_names_the_callers_still_at_the_base(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    spec = repo / "mesh-spec"
    (spec / "services/search.yaml").unlink()
    drop_dependency(spec / "services/api-gateway.yaml", "search")
    hazards = diff_revisions(spec, "HEAD").hazards
    assert {(h.client, h.server, h.states) for h in hazards} == {
        ("api-gateway", "search", "client at base, no server at head")
    }
    assert "remove a service only after no client calls it" in hazards[0].fix


def test_safe_changes_and_new_calls_name_nothing(tmp_path: Path) -> None:
    """A timeout change, and a new service with its first client: nothing that works today can break (a new
    call fails until its ends converge, which is no regression)."""
    repo = make_repo(tmp_path / "repo")
    spec = repo / "mesh-spec"
    replace_in(spec / "mesh.yaml", "connect_timeout: 1s", "connect_timeout: 2s")
    (spec / "services/thumb.yaml").write_text(
        "service: thumb\nowner: media\nport: 9090\nmesh_port: 19090\nlocal_port: 7290\n"
        "deploy:\n  vm: {datacenters: [sjc]}\n"
    )
    (spec / "services/billing.yaml").write_text(
        "service: billing\nowner: payments\nport: 8080\nmesh_port: 18080\nlocal_port: 7291\n"
        "deploy:\n  kubernetes: [{cluster: kube-sjc-a}]\ndependencies:\n  - service: thumb\n"
    )
    diff = diff_revisions(spec, "HEAD")
    assert diff.targets and diff.hazards == ()
    assert "Calls that work today" not in meshc_in_process("diff", "--base", "HEAD", "--spec", spec).stdout


def test_a_namespace_move_names_the_servers_that_refuse_the_base_pods(tmp_path: Path) -> None:
    """Every placement of upload moves to namespace upload2: its targets are new ones, so its base pods look as if
    they stopped calling; they still run (kube-applier deletes nothing) and each server upload calls stops admitting
    their identity. The head's identity, not admitted yet by a server at the base, is a new call: not named."""
    repo = make_repo(tmp_path / "repo")
    spec = repo / "mesh-spec"
    replace_in(
        spec / "services/upload.yaml",
        "    - {cluster: kube-sjc-a}",
        "    - {cluster: kube-sjc-a, namespace: upload2}",
    )
    replace_in(spec / "services/upload.yaml", "namespace: upload}", "namespace: upload2}")
    hazards = diff_revisions(spec, "HEAD").hazards
    refused = {h.server for h in hazards if h.client == "upload" and h.check == "identity-admitted"}
    assert refused == {"encryption", "event-bus", "feature-flags", "metadata", "storage-gateway"}
    assert all("spiffe://box.mesh/ns/upload/sa/upload" in h.detail for h in hazards if h.client == "upload")
    assert not any("ns/upload2/" in h.detail for h in hazards if h.check == "identity-admitted")
    # upload's own clients watch the old namespace at the base: named once per state, not once per client side
    states = sorted(h.states for h in hazards if h.server == "upload" and h.check == "discovery")
    assert states == ["client at base or head, no server at head"]


def test_under_a_rollout_a_later_promotion_it_would_refuse_is_named_at_review(tmp_path: Path) -> None:
    """The example's own waves (canary, canary-hosts, sjc, iad, restart-sensitive), every one pinned to the base:
    upload moves to another mesh port. The next promotion (canary-hosts, VM hosts only) is safe, so the build and
    check_rollout pass; promoting sjc would leave api-gateway in iad watching the old port of upload in sjc, and the
    rollout would stop there. The review diff names those promotions, with their findings."""
    repo = make_repo(tmp_path / "repo")
    spec = repo / "mesh-spec"
    pin_every_wave(repo, "nothing new")
    replace_in(spec / "services/upload.yaml", "mesh_port: 18080", "mesh_port: 18081")
    diff = diff_revisions(spec, "HEAD")
    assert diff.now is not None and diff.hazards == (), "under a rollout, its own checks stand"
    refused = {r.wave: r.findings for r in diff.now.refused_ahead}
    assert list(refused) == ["sjc", "iad"]
    assert all(f.code == "rollout-unsafe" and "api-gateway → upload: " in f.message for f in refused["sjc"])
    assert any("watches kube-sjc-a/upload/upload:18080 but" in f.message for f in refused["sjc"])
    text = meshc_in_process("diff", "--base", "HEAD", "--spec", spec).stdout
    assert (
        "warning: Promotions the rollout will refuse as this change leaves it" in text
        and "  wave sjc:" in text
    )
    data = json.loads(meshc_in_process("diff", "--base", "HEAD", "--spec", spec, "--format", "json").stdout)
    assert data["summary"]["refused_ahead"] == 2 and data["now"]["refused_ahead"][0]["wave"] == "sjc"
    markdown = meshc_in_process("diff", "--base", "HEAD", "--spec", spec, "--format", "markdown").stdout
    assert "> [!CAUTION]\n> Promotions the rollout will refuse" in markdown


def test_under_a_rollout_the_merge_step_of_the_first_wave_is_named(tmp_path: Path) -> None:
    """b and its only client a run in gke-usc1-a alone (wave canary): moving b's mesh port passes every rollout
    check (no other wave calls b), yet the merge itself moves both ends at once on their own clocks: a at the base
    still watches the old port while b at the head serves the new one. The fix is the rollout's (its waves)."""
    repo = make_repo(tmp_path / "repo")
    spec = repo / "mesh-spec"
    service = "service: {name}\nowner: o\nport: 8080\nmesh_port: 18080\nlocal_port: {port}\n"
    service += "deploy:\n  kubernetes: [{{cluster: gke-usc1-a}}]\n"
    (spec / "services/b.yaml").write_text(service.format(name="b", port=7295))
    (spec / "services/a.yaml").write_text(
        service.format(name="a", port=7296) + "dependencies:\n  - service: b\n"
    )
    pin_every_wave(repo, "a and b in the canary")
    replace_in(spec / "services/b.yaml", "mesh_port: 18080", "mesh_port: 18081")
    diff = diff_revisions(spec, "HEAD")
    assert diff.now is not None and diff.now.refused_ahead == ()
    assert {(h.client, h.server, h.check, h.states) for h in diff.hazards} == {
        ("a", "b", "discovery", "client at base, server at head"),
        ("a", "b", "discovery", "client at head, server at base"),
    }
    assert all("or roll it out in waves" not in h.fix and "every wave" in h.fix for h in diff.hazards)


def test_a_trust_domain_change_breaks_every_call_and_markdown_lists_the_first_twenty(tmp_path: Path) -> None:
    """Every identity moves: each call breaks both ways round (the server's allow-list, the client's expectation).
    Text and JSON name each; the pull-request comment the first twenty, then how many more."""
    from compiler.commands.diff_report import MAX_HAZARD_ROWS

    repo = make_repo(tmp_path / "repo")
    spec = repo / "mesh-spec"
    replace_in(spec / "mesh.yaml", "trust_domain: box.mesh", "trust_domain: box2.mesh")
    hazards = diff_revisions(spec, "HEAD").hazards
    assert {h.check for h in hazards} == {"identity-admitted", "identity-expected"}
    assert len(hazards) > MAX_HAZARD_ROWS
    text = meshc_in_process("diff", "--base", "HEAD", "--spec", spec).stdout
    assert sum(line.startswith("  ") and " (client at " in line for line in text.splitlines()) == len(hazards)
    markdown = meshc_in_process("diff", "--base", "HEAD", "--spec", spec, "--format", "markdown").stdout
    rows = [line for line in markdown.splitlines() if line.startswith("> - ")]
    assert len(rows) == MAX_HAZARD_ROWS + 1
    assert (
        rows[-1]
        == f"> - … and {len(hazards) - MAX_HAZARD_ROWS} more (`meshc diff --format json` lists every one)"
    )


def pin_every_wave(repo: Path, message: str) -> None:
    """Commit the spec as it is (`message`), then a rollout.yaml pinning every later wave of the example's policy
    to that commit: the merge that follows reaches wave canary only."""
    from tests.test_gitsource import commit

    base = commit(repo, message)
    pins = "\n".join(f"  {wave}: {base}" for wave in ("canary-hosts", "sjc", "iad", "restart-sensitive"))
    (repo / "mesh-spec/rollout.yaml").write_text(f"hold: false\npins:\n{pins}\n")
    commit(repo, "start the rollout")
