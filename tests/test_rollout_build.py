"""The rollout build on real git repositories: pins, per-wave renderings, expand before contract, promote, hold."""

from __future__ import annotations

import difflib
import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from compiler.cli import main
from compiler.diagnostics import SpecError
from compiler.gitsource import locate, read_revision
from compiler.output.disk import read_tree
from compiler.output.manifest import MANIFEST
from compiler.pipeline import Build, compile
from compiler.rollout.build import build_rollout, node_path, rollout_state_of
from compiler.rollout.compiled import RevisionCache
from compiler.rollout.output import output_for, plain_tree
from compiler.rollout.plan import PromoteError, plan_rollout, promote
from compiler.rollout.renderings import _mesh_key
from compiler.rollout.revisions import rollout_context
from compiler.rollout.states import check_rollout
from tests.test_gitsource import commit, git, make_repo

SPEC = "mesh-spec"
POLICY = """
rollout:
  waves:
    - name: canary
      match: {datacenters: [gcp-usc1]}
    - name: west
      match: {datacenters: [sjc]}
    - name: rest
"""
ROLLOUT = """# Which revision each wave runs; meshc promote moves one pin at a time.
hold: false
pins:
  # west: the sjc datacenter
  west: {west}
  rest: {rest}  # everything else
"""
AUDIT_LOG = "vm/audit-log/gcp-usc1"  # the only target of audit-log: the canary wave


def set_policy(spec: Path, policy: str) -> None:
    """Replace the example's wave policy (the last section of its mesh.yaml) with `policy`."""
    text = (spec / "mesh.yaml").read_text()
    (spec / "mesh.yaml").write_text(text.split("\nrollout:\n", 1)[0] + "\n" + policy)


def replace_in(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{path.name} no longer holds {old!r}"
    path.write_text(text.replace(old, new, 1))


def drop_dependency(path: Path, service: str) -> None:
    """Remove the dependency on `service` (with its overrides) from a service file."""
    data = yaml.safe_load(path.read_text())
    data["dependencies"] = [d for d in data["dependencies"] if d["service"] != service]
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def start_rollout(root: Path) -> tuple[Path, Path, str]:
    """A repo with the example spec and a wave policy (commit `base`), then rollout.yaml pinning every wave to base."""
    repo = make_repo(root)
    spec = repo / SPEC
    set_policy(spec, POLICY)
    base = commit(repo, "wave policy")
    (spec / "rollout.yaml").write_text(ROLLOUT.format(west=base, rest=base))
    commit(repo, "start the rollout")
    return repo, spec, base


def set_pins(spec: Path, west: str, rest: str, hold: bool = False) -> None:
    text = ROLLOUT.format(west=west, rest=rest).replace("hold: false", f"hold: {str(hold).lower()}")
    (spec / "rollout.yaml").write_text(text)


def revision_tree(repo: Path, revision: str) -> dict[str, bytes]:
    """The plain build (no rollout) of the spec at `revision`."""
    return compile(read_revision(locate(repo / SPEC), revision), SPEC).tree()


def targets(tree: dict[str, bytes]) -> dict[str, list[str]]:
    return json.loads(tree[MANIFEST])["targets"]


def files_of(tree: dict[str, bytes], target: str) -> dict[str, bytes]:
    return {path: tree[path] for path in targets(tree)[target]}


def waves_of(tree: dict[str, bytes]) -> dict[str, str]:
    return {t: v["wave"] for t, v in json.loads(tree[MANIFEST])["rollout"]["targets"].items()}


def add_timeout_change(repo: Path) -> str:
    """A change to every storage-gateway client edge's policy: event-bus and storage-gateway run in every datacenter."""
    replace_in(repo / SPEC / "mesh.yaml", "connect_timeout: 1s", "connect_timeout: 2s")
    return commit(repo, "connect timeout 2s")


def add_timeout_change_again(repo: Path) -> str:
    """A second spec change after add_timeout_change: the connect timeout 2s -> 3s."""
    replace_in(repo / SPEC / "mesh.yaml", "connect_timeout: 2s", "connect_timeout: 3s")
    return commit(repo, "connect timeout 3s")


@pytest.fixture(scope="module")
def merged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """A rollout at base, then a change merged: (repo, base, head)."""
    repo, _, base = start_rollout(tmp_path_factory.mktemp("merged") / "repo")
    return repo, base, add_timeout_change(repo)


# ---------------------------------------------------------------- a merge reaches the first wave only


def test_a_merge_during_a_rollout_reaches_only_the_first_wave(merged: tuple[Path, str, str]) -> None:
    repo, base, head = merged
    tree = output_for(repo / SPEC)
    old, new = revision_tree(repo, base), revision_tree(repo, head)
    waves = waves_of(tree)
    assert set(waves.values()) == {"canary", "west", "rest"}
    changed = {t for t in targets(new) if t in targets(old) and files_of(old, t) != files_of(new, t)}
    assert {waves[t] for t in changed} == {"canary", "west", "rest"}, "the change touches every wave"
    for target, wave in waves.items():
        expected = new if wave == "canary" else old
        assert files_of(tree, target) == files_of(expected, target), (
            f"{target} ({wave}) is not its wave's rendering"
        )
    manifest = json.loads(tree[MANIFEST])["rollout"]
    assert manifest["waves"] == [
        {"name": "canary", "revision": "HEAD"},
        {"name": "west", "revision": base},
        {"name": "rest", "revision": base},
    ]
    assert manifest["targets"][AUDIT_LOG] == {"wave": "canary", "revision": "HEAD"}
    assert manifest["targets"]["vm/auth/sjc"] == {"wave": "west", "revision": base}
    assert not any(base.encode() in data for path, data in tree.items() if path != MANIFEST), (
        "no revision inside artifacts"
    )


def test_without_rollout_yaml_the_build_is_the_plain_build(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    spec = repo / SPEC
    set_policy(spec, POLICY)
    commit(repo, "policy, no rollout.yaml")
    assert rollout_context(spec) is None
    in_git = output_for(spec)
    outside = tmp_path / "copy" / SPEC
    shutil.copytree(spec, outside)
    assert in_git == output_for(outside) == plain_tree(spec)
    assert "rollout" not in json.loads(in_git[MANIFEST])
    # outside git, a rollout.yaml has no revisions to name: the build is the plain build too
    (outside / "rollout.yaml").write_text(
        "hold: true\npins: {canary: 0000000000000000000000000000000000000000}\n"
    )
    assert output_for(outside) == in_git


def test_every_distinct_spec_is_compiled_once(merged: tuple[Path, str, str]) -> None:
    repo, base, head = merged
    from compiler.rollout.revisions import compile_revision, spec_key

    context = rollout_context(repo / SPEC, RevisionCache())
    assert context is not None
    build_rollout(context)
    assert len(context.cache.compiled) == 2  # the working tree and base (pinned by two waves)
    # the head commit holds the working tree's spec: same key (mesh.yaml blob + services/ tree), no compile
    assert spec_key(context, head) == spec_key(context, "HEAD") != spec_key(context, base)
    assert compile_revision(context, head) is not None and compile_revision(context, base) is not None
    assert len(context.cache.compiled) == 2


# ---------------------------------------------------------------- pins


def pin_errors(spec: Path) -> list[str]:
    with pytest.raises(SpecError) as caught:
        output_for(spec)
    return [d.format() for d in caught.value.diagnostics]


def line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def test_pins_that_skip_a_wave_or_are_not_commits_are_rejected(tmp_path: Path) -> None:
    repo, spec, base = start_rollout(tmp_path / "repo")
    head = add_timeout_change(repo)
    label = (spec / "rollout.yaml").as_posix()
    set_pins(spec, west=base, rest=head)  # rest would run a revision west has not had
    line = line_of(spec / "rollout.yaml", "rest:")
    assert pin_errors(spec) == [
        f"{label}:{line}:9: error: wave 'rest' is pinned to {head[:12]}, "
        f"which is not {base[:12]} of the wave before it nor one of "
        "its ancestors; pins move forward one wave at a time (meshc promote), "
        "never past the wave before  [rollout-pin-order]"
    ]
    set_pins(spec, west="f" * 40, rest=base)
    assert pin_errors(spec) == [
        f"{label}:{line_of(spec / 'rollout.yaml', '  west: ')}:9: error: the pin of wave 'west' is not a commit "
        "of this repository; fetch the full history (CI: fetch-depth: 0) or fix the pin  [rollout-pin-unknown]"
    ]
    set_pins(spec, west="main", rest=base)
    assert pin_errors(spec)[0].endswith(
        "the pin of wave 'west' must be a full 40-hex commit id (git rev-parse REV), not 'main'  [rollout-pin-unknown]"
    )
    set_pins(spec, west="9" * 5000, rest=base)  # a number too long for int(): named, cut, not echoed whole
    assert pin_errors(spec)[0].endswith(f"not {'9' * 63}…  [rollout-pin-unknown]")
    (spec / "rollout.yaml").write_text(f"pins:\n  wst: {base}\n")
    assert pin_errors(spec) == [
        f"{label}:1:1: error: wave 'rest' has no pin; "
        "add `rest: <commit>` under pins (the revision it runs now)  [rollout-pin-missing]",
        f"{label}:1:1: error: wave 'west' has no pin; "
        "add `west: <commit>` under pins (the revision it runs now)  [rollout-pin-missing]",
        f"{label}:2:8: error: rollout.yaml pins unknown wave 'wst' (did you mean 'west'?); "
        "the waves are canary, west, rest  [rollout-unknown-wave]",
    ]


def test_an_unreadable_spec_file_during_a_rollout_is_a_diagnostic_not_a_crash(tmp_path: Path) -> None:
    repo, spec, base = start_rollout(tmp_path / "repo")
    os.mkfifo(spec / "services" / "pipe.yaml")  # the revision cache once hashed the reader's refusal
    assert pin_errors(spec) == [
        f"{(spec / 'services' / 'pipe.yaml').as_posix()}:1:1: error: this is a FIFO, not a regular file; "
        "remove it or make it a regular file  [file-type]"
    ]


def test_a_pin_ahead_of_the_current_commit_is_rejected(tmp_path: Path) -> None:
    repo, spec, base = start_rollout(tmp_path / "repo")
    head = add_timeout_change(repo)
    git(repo, "checkout", "-q", base)  # HEAD goes back; the pins stay ahead of it
    set_pins(spec, west=head, rest=head)
    found = pin_errors(spec)
    assert (
        len(found) == 1
        and "wave 'west' is pinned to" in found[0]
        and "which is not the current commit" in found[0]
    )


# ---------------------------------------------------------------- promote, revert, hold


def test_promote_moves_exactly_one_pin_keeps_comments_and_rebuilds(tmp_path: Path) -> None:
    repo, spec, base = start_rollout(tmp_path / "repo")
    out = repo / "output"
    assert main(["build", str(spec), "-o", str(out)]) == 0
    commit(repo, "output at base")
    add_timeout_change(repo)
    assert main(["build", str(spec), "-o", str(out)]) == 0
    head = commit(repo, "output with the change in canary")
    before = (spec / "rollout.yaml").read_text()
    done = promote(spec, out)
    assert (done.wave, done.old, done.new) == ("west", base, head)
    after = (spec / "rollout.yaml").read_text()
    changed = [
        line
        for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
        if line[:1] in "+-"
    ]
    assert changed == ["--- ", "+++ ", f"-  west: {base}", f"+  west: {head}"], (
        "one line changes; comments and layout stay"
    )
    assert read_tree(out) == output_for(spec), "promote wrote what a build of the new pins writes"
    assert main(["check", str(spec), "-o", str(out)]) == 0
    assert waves_of(read_tree(out))["vm/auth/sjc"] == "west"
    assert files_of(read_tree(out), "vm/auth/sjc") == files_of(revision_tree(repo, head), "vm/auth/sjc")
    assert files_of(read_tree(out), "vm/auth/iad") == files_of(revision_tree(repo, base), "vm/auth/iad")
    commit(repo, "promote west")
    done = promote(spec, out)
    assert (done.wave, done.old, done.new) == ("rest", base, head)
    commit(repo, "promote rest")
    with pytest.raises(PromoteError, match="nothing to promote"):
        promote(spec, out)


def test_promote_refuses_an_uncommitted_working_tree(tmp_path: Path) -> None:
    repo, spec, _ = start_rollout(tmp_path / "repo")
    add_timeout_change(repo)
    replace_in(spec / "mesh.yaml", "connect_timeout: 2s", "connect_timeout: 3s")
    with pytest.raises(PromoteError, match="uncommitted changes; wave 'west' moves to the current commit"):
        promote(spec, repo / "output")


def test_git_revert_of_a_promotion_restores_the_output_byte_for_byte(tmp_path: Path) -> None:
    repo, spec, base = start_rollout(tmp_path / "repo")
    out = repo / "output"
    add_timeout_change(repo)
    assert main(["build", str(spec), "-o", str(out)]) == 0
    commit(repo, "output with the change in canary")
    previous = read_tree(out)
    promote(spec, out)
    promoted = commit(repo, "promote west")
    assert read_tree(out) != previous
    git(repo, "revert", "--no-edit", promoted)
    reverted = git(repo, "rev-parse", "HEAD").strip()
    assert read_tree(out) == previous, "git restored the committed output"
    assert output_for(spec) == previous, "and it is exactly what the reverted pins build"
    # the revert's own transition (west: head -> base) is checked: its states are those of promoting west again
    context = rollout_context(spec)
    assert context is not None
    report = check_rollout(context, rollout_state_of(context))
    assert (
        report.promotion == ("west", reverted)
        and report.combinations > report.pairs > 0
        and not report.problems
    )


def test_hold_stops_a_new_merge_from_reaching_the_first_wave(tmp_path: Path) -> None:
    repo, spec, base = start_rollout(tmp_path / "repo")
    (spec / "rollout.yaml").write_text(
        ROLLOUT.format(west=base, rest=base)
        .replace("hold: false", "hold: true")
        .replace("pins:\n", f"pins:\n  canary: {base}\n")
    )
    commit(repo, "hold")
    held = output_for(spec)
    add_timeout_change(repo)
    assert output_for(spec) == held, "with hold, the merge reaches no wave"
    assert json.loads(held[MANIFEST])["rollout"]["waves"][0] == {"name": "canary", "revision": base}
    unheld = output_for_without_hold(spec)
    assert files_of(unheld, AUDIT_LOG) != files_of(held, AUDIT_LOG)


def output_for_without_hold(spec: Path) -> dict[str, bytes]:
    text = (spec / "rollout.yaml").read_text()
    (spec / "rollout.yaml").write_text(
        "\n".join(line for line in text.splitlines() if "canary:" not in line).replace(
            "hold: true", "hold: false"
        )
        + "\n"
    )
    try:
        return output_for(spec)
    finally:
        (spec / "rollout.yaml").write_text(text)


def test_first_wave_pinned_without_hold_is_an_error(tmp_path: Path) -> None:
    repo, spec, base = start_rollout(tmp_path / "repo")
    (spec / "rollout.yaml").write_text(
        ROLLOUT.format(west=base, rest=base).replace("pins:\n", f"pins:\n  canary: {base}\n")
    )
    found = pin_errors(spec)
    assert len(found) == 1 and found[0].endswith(
        "the first wave 'canary' runs the revision being built; pin it only with `hold: true`  [rollout-file]"
    )


# ---------------------------------------------------------------- expand before contract, unsafe changes


def test_a_new_dependency_on_a_later_wave_is_admitted_everywhere_first(tmp_path: Path) -> None:
    repo, spec, base = start_rollout(tmp_path / "repo")
    (spec / "services/audit-log.yaml").write_text(
        (spec / "services/audit-log.yaml").read_text() + "  - service: auth\n"
    )
    head = commit(repo, "audit-log calls auth")
    identity = "spiffe://box.mesh/ns/audit-log/sa/audit-log"
    context = rollout_context(spec)
    assert context is not None
    build = build_rollout(context)
    for target in ("vm/auth/sjc", "vm/auth/iad"):
        placement = build.state.placements[target]
        assert placement.revision == base and identity in placement.workload.ingress.allowed_clients, target
    plain_base = compile(read_revision(locate(spec), base), SPEC).mesh
    assert identity not in plain_base.workloads_of("auth")[0].ingress.allowed_clients, (
        "the naive selection would refuse it"
    )
    plan = plan_rollout(context)
    assert [(s.service, s.identities) for s in plan.expanded] == [("auth", (identity,))]
    assert plan.promotion == ("west", head) and plan.next_states is not None and not plan.next_states.problems
    # removing the dependency again: auth keeps admitting audit-log until no live revision calls it
    (spec / "services/audit-log.yaml").write_text(
        (spec / "services/audit-log.yaml").read_text().replace("  - service: auth\n", "")
    )
    removed = commit(repo, "audit-log stops calling auth")
    set_pins(spec, west=head, rest=head)
    commit(repo, "west and rest at head")
    context = rollout_context(spec)
    assert context is not None
    build = build_rollout(context)
    # west runs head, which calls auth
    assert identity in build.state.placements["vm/auth/sjc"].workload.ingress.allowed_clients
    set_pins(spec, west=removed, rest=removed)
    assert (
        identity
        not in build_rollout(rollout_context(spec))
        .state.placements["vm/auth/sjc"]
        .workload.ingress.allowed_clients
    )  # type: ignore[arg-type]


def test_an_external_reader_keeps_granting_what_an_older_wave_still_watches(tmp_path: Path) -> None:
    """api-gateway (kube-sjc-a and kube-iad-a, pinned waves) reads gke-usc1-a from outside: namespaces
    feature-flags, preview and search. The head stops calling search; the head's revision, the newest live one,
    lays out the reader, yet base's api-gateway still watches search there, so the grant stays until no live
    revision watches it (it went at once: contract before expand, and base's pods lost that discovery)."""
    repo, spec, base = start_rollout(tmp_path / "repo")
    reader = "kubernetes/gke-usc1-a/meshc-discovery/api-gateway.yaml"

    def granted(tree: dict[str, bytes]) -> list[str]:
        objects = yaml.safe_load_all(tree[reader])
        return sorted(o["metadata"]["namespace"] for o in objects if o["kind"] == "RoleBinding")

    assert granted(output_for(spec)) == ["feature-flags", "preview", "search"]
    drop_dependency(spec / "services/api-gateway.yaml", "search")
    head = commit(repo, "api-gateway stops calling search")
    assert granted(revision_tree(repo, head)) == ["feature-flags", "preview"]
    assert granted(output_for(spec)) == ["feature-flags", "preview", "search"]
    set_pins(spec, west=head, rest=head)
    commit(repo, "every wave at head")
    assert granted(output_for(spec)) == ["feature-flags", "preview"]


def test_what_the_first_wave_still_waits_for_is_the_contract_not_a_promotion(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """api-gateway stops calling search: search (gke-usc1-a, the first wave) keeps admitting it while base is live.
    The first wave is never promoted: its line says what it waits for (it read `canary (2)` among the promotions)."""
    repo, spec, base = start_rollout(tmp_path / "repo")
    drop_dependency(spec / "services/api-gateway.yaml", "search")
    head = commit(repo, "api-gateway stops calling search")
    capsys.readouterr()
    assert main(["diff", "--base", base, "--head", head, "--spec", str(spec)]) == 0
    (ahead,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Still ahead")]
    assert (
        ahead.startswith("Still ahead, one promotion each: canary (")
        and ", when the older revisions leave)" in ahead
    )


THUMBNAIL = """service: thumbnail
owner: content-experience
port: 8080
mesh_port: 18080
local_port: 7141
deploy:
  vm: {datacenters: [sjc]}
"""


def test_the_hosts_of_a_pool_new_since_the_canary_host_wave_are_no_canaries_yet(tmp_path: Path) -> None:
    """The example's own policy (canary-hosts: two hosts of every VM pool) with every wave but the first at base. A
    new VM service at head, its hosts in the inventory: canary-hosts runs base, where the pool does not exist, so its
    hosts get no node file and are no canaries (MANIFEST.json listed them: plan counted them, drift called them
    orphans). Once canary-hosts runs head, they are."""
    repo = make_repo(tmp_path / "repo")
    spec = repo / SPEC
    base = git(repo, "rev-parse", "HEAD").strip()
    waves = [wave["name"] for wave in yaml.safe_load((spec / "mesh.yaml").read_text())["rollout"]["waves"]]
    pins = "".join(f"  {wave}: {base}\n" for wave in waves[1:])
    (spec / "rollout.yaml").write_text(f"hold: false\npins:\n{pins}")
    commit(repo, "every wave but the first at base")
    (spec / "services/thumbnail.yaml").write_text(THUMBNAIL)
    hosts = [f"thumbnail-00{n}.sjc.box.net" for n in (1, 2, 3)]
    with (spec / "inventory/hosts.yaml").open("a") as inventory:
        inventory.writelines(
            f"- {{certname: {host}, service: thumbnail, datacenter: sjc}}\n" for host in hosts
        )
    head = commit(repo, "a new VM service, thumbnail, with its hosts")

    def canary_hosts(tree: dict[str, bytes]) -> set[str]:
        return {h for h in json.loads(tree[MANIFEST])["rollout"]["hosts"] if h.startswith("thumbnail-")}

    tree = output_for(spec)
    assert canary_hosts(tree) == set() and not [
        p for p in tree if p.startswith("puppet/data/nodes/thumbnail-")
    ]
    (spec / "rollout.yaml").write_text(f"hold: false\npins:\n{pins.replace(base, head, 1)}")
    commit(repo, "canary-hosts at head")
    tree = output_for(spec)
    assert len(canary_hosts(tree)) == 2
    assert {p for p in tree if p.startswith("puppet/data/nodes/thumbnail-")} == {
        node_path(host) for host in canary_hosts(tree)
    }


def test_a_protocol_switch_across_waves_is_unsafe(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo, spec, base = start_rollout(tmp_path / "repo")
    replace_in(spec / "services/encryption.yaml", "protocol: grpc", "protocol: http")
    head = commit(repo, "encryption speaks http")
    # validate (the pre-commit hook) and the review diff refuse what the build refuses, with the same findings
    capsys.readouterr()
    assert main(["validate", str(spec)]) == 2
    refused = capsys.readouterr().err
    assert "[rollout-unsafe]" in refused and "upload → encryption: " in refused
    assert main(["diff", "--base", base, "--head", head, "--spec", str(spec), "--format", "markdown"]) == 2
    assert "[rollout-unsafe]" in capsys.readouterr().err
    found = pin_errors(spec)
    assert found and all(line.endswith("[rollout-unsafe]") for line in found)
    upload = (spec / "services/upload.yaml").as_posix()
    line = line_of(spec / "services/upload.yaml", "- service: encryption")
    first = next(f for f in found if f.startswith(f"{upload}:{line}:"))
    assert "upload → encryption: " in first and "which serves" in first and "once west is promoted" in first
    assert "split the change" in first
    assert main(["build", str(spec), "-o", str(repo / "output")]) == 2
    assert not (repo / "output").exists(), "nothing is written for an unsafe rollout"


def test_moving_a_placement_to_another_namespace_across_waves_is_unsafe(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """preview's pods in gke-usc1-a (the canary wave) move to namespace content at the merge, while api-gateway in
    west and rest, still at base, watches namespace preview there: those clients lose that half of preview until
    their waves move, though some preview (kube-sjc-a's) is left for them."""
    repo, spec, base = start_rollout(tmp_path / "repo")
    replace_in(
        spec / "services/preview.yaml",
        "- {cluster: gke-usc1-a}",
        "- {cluster: gke-usc1-a, namespace: content}",
    )
    head = commit(repo, "preview moves to namespace content in gke-usc1-a")
    capsys.readouterr()
    assert main(["validate", str(spec)]) == 2
    assert "api-gateway → preview: " in capsys.readouterr().err
    assert main(["diff", "--base", base, "--head", head, "--spec", str(spec)]) == 2
    assert "[rollout-unsafe]" in capsys.readouterr().err
    gateway = spec / "services/api-gateway.yaml"
    line = line_of(gateway, "- service: preview")
    client = "k8s/kube-iad-a/api-gateway/api-gateway"
    assert pin_errors(spec) == [
        f"{gateway.as_posix()}:{line}:14: error: api-gateway → preview: {client} watches gke-usc1-a/preview/preview "
        "but k8s/gke-usc1-a/content/preview registers in gke-usc1-a/content/preview "
        f"({client} in wave rest at {base[:12]}, now → k8s/gke-usc1-a/content/preview in wave canary at the "
        "revision being built, now); split the change: serve both placements (a service runs in one namespace per "
        "cluster, so the new namespace as a new service beside the old one), move every client wave to it, then "
        "drop the old  [rollout-unsafe]"
    ]
    assert main(["build", str(spec), "-o", str(repo / "output")]) == 2
    assert not (repo / "output").exists(), "nothing is written for an unsafe rollout"


def test_plan_formats(merged: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]) -> None:
    repo, base, head = merged
    assert main(["plan", str(repo / SPEC), "--format", "json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [(w["name"], w["revision"]) for w in plan["waves"]] == [
        ("canary", "HEAD"),
        ("west", base),
        ("rest", base),
    ]
    assert plan["promotion"] == {"wave": "west", "revision": head}
    changes = {c["target"]: c for c in plan["changes"]}
    assert changes and {c["wave"] for c in changes.values()} == {"west"}
    assert all(c["reason"] == "promoted" and c["restart"] == "hot-reload" for c in changes.values())
    assert plan["states"]["next"]["problems"] == 0 and plan["states"]["next"]["combinations"] > 0
    assert main(["plan", str(repo / SPEC), "--format", "markdown"]) == 0
    markdown = capsys.readouterr().out
    assert (
        markdown.startswith("## meshc rollout plan\n")
        and f"### Next: promote west to {head[:12]}" in markdown
    )
    assert "| west | `" in markdown and "hot reload" in markdown
    assert main(["plan", str(repo / SPEC)]) == 0
    assert "Checked states" in capsys.readouterr().out


def test_on_hold_the_plan_says_the_newest_revision_runs_in_no_wave(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo, spec, base = held_rollout(tmp_path / "repo")
    # the hold commit changes only rollout.yaml: every wave runs the newest spec
    capsys.readouterr()
    assert main(["plan", str(spec)]) == 0
    text = capsys.readouterr().out
    assert (
        "Every wave runs the newest revision: nothing to promote." in text and "runs in no wave" not in text
    )
    assert "behind" not in text
    head = add_timeout_change(repo)
    assert main(["plan", str(spec)]) == 0
    text = capsys.readouterr().out
    note = held_back_note(head)
    assert f"\n{note[0].upper()}{note[1:]}.\n" in text
    assert f"Every wave runs the held revision {base[:12]}: nothing to promote." in text
    assert "newest revision: nothing to promote" not in text
    assert [line.split()[-1] for line in text.splitlines()[2:5]] == ["behind"] * 3, text
    assert main(["plan", str(spec), "--format", "markdown"]) == 0
    markdown = capsys.readouterr().out
    assert (
        f"**{note[0].upper()}{note[1:]}.**" in markdown and f"| canary | `{base[:12]}` (behind) |" in markdown
    )
    assert main(["plan", str(spec), "--format", "json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert (plan["hold"], plan["held_back"], plan["promotion"]) == (True, head, None)
    assert [w["current"] for w in plan["waves"]] == [False, False, False]
    # west behind the held revision: it can still be promoted up to it, and the hold is still said
    set_pins(spec, west=base, rest=base, hold=True)
    (spec / "rollout.yaml").write_text((spec / "rollout.yaml").read_text() + f"  canary: {head}\n")
    commit(repo, "hold at head")
    newest = add_timeout_change_again(repo)
    assert main(["plan", str(spec)]) == 0
    text = capsys.readouterr().out
    assert f"Next: promote west to {head[:12]}" in text and held_back_note(newest)[1:] in text


def test_diff_shows_what_changes_now_and_what_is_ahead(
    merged: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    repo, base, head = merged
    assert main(["diff", "--base", base, "--head", head, "--spec", str(repo / SPEC), "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rollout"] == "active"
    splits = {s["wave"]: s["targets"] for s in report["waves"]}
    assert list(splits) == ["canary", "west", "rest"]
    changed = {t["target"] for t in report["targets"]}
    assert set().union(*splits.values()) == changed
    assert (
        AUDIT_LOG in splits["canary"] and "vm/auth/sjc" in splits["west"] and "vm/auth/iad" in splits["rest"]
    )
    # what "now" means is what the rollout build really changes: exactly the canary wave's targets, which the
    # diff lists from the rollout builds of both revisions (the base is the plain build: no rollout.yaml there)
    tree, old = output_for(repo / SPEC), revision_tree(repo, base)
    really = {t for t in targets(tree) if t in targets(old) and files_of(tree, t) != files_of(old, t)}
    assert really == set(splits["canary"])
    now = report["now"]
    assert {c["target"] for c in now["changes"]} == really and now["files"] == []
    assert {(c["wave"], c["reason"]) for c in now["changes"]} == {("canary", "its wave moves")}
    assert now["moves"] == [{"wave": "canary", "old": base, "new": head}]
    assert main(["diff", "--base", base, "--head", head, "--spec", str(repo / SPEC)]) == 0
    text = capsys.readouterr().out
    assert (
        f"Still ahead, one promotion each: west ({len(splits['west'])}), rest ({len(splits['rest'])})" in text
    )
    assert (
        f"Rollout: merging changes {len(really)} target(s) and canary host(s) in output/ at once, 0 with a restart"
    ) in text


def test_the_diff_of_a_promotion_lists_what_it_changes_and_restarts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A promotion commit changes rollout.yaml and output/ alone: no spec file renders differently, yet the wave it
    # moves changes at once, restarts included. The diff must say so (it said "No target changes.", exit 0).
    repo, spec, base = start_rollout(tmp_path / "repo")
    out = repo / "output"
    replace_in(
        spec / "services/auth.yaml", "mesh_port: 18080", "mesh_port: 18081"
    )  # Nerve registers it: a restart
    head = commit(repo, "auth: another mesh port")
    assert main(["build", str(spec), "-o", str(out)]) == 0
    built = commit(repo, "output with the change in canary")
    before = read_tree(out)
    promote(spec, out)
    promoted = commit(repo, "promote west")
    capsys.readouterr()  # the build's line
    changed = {
        path for path in before.keys() | read_tree(out).keys() if before.get(path) != read_tree(out).get(path)
    }
    assert main(["diff", "--base", built, "--head", promoted, "--spec", str(spec), "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["targets"] == [] and report["changed"] is True
    now = report["now"]
    assert now["moves"] == [{"wave": "west", "old": base, "new": built}]
    listed = {path for c in now["changes"] for path in targets(read_tree(out)).get(c["target"], [])}
    assert listed | {path for path, _ in now["files"]} == changed - {MANIFEST}
    assert {c["wave"] for c in now["changes"]} == {"west"}
    assert "vm/auth/sjc" in {c["target"] for c in now["changes"] if c["restart"] == "sidecar-restart"}
    # --exit-code: a promotion is a change; the text says what moves, not "No target changes."
    assert main(["diff", "--base", built, "--head", promoted, "--spec", str(spec), "--exit-code"]) == 1
    text = capsys.readouterr().out
    assert "No target changes." not in text
    assert f"  wave west moves: {base[:12]} → {built[:12]}\n" in text
    assert head != built


def test_a_promotion_between_revisions_that_render_alike_still_changes_the_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """west moves from base to the commit that started the rollout, whose spec is base's: no target renders
    differently, but MANIFEST.json records west's new revision. The diff says so and --exit-code calls it a change
    (it said "merging changes nothing in output/ at once", exit 0)."""
    repo, spec, base = start_rollout(tmp_path / "repo")
    started = git(repo, "rev-parse", "HEAD").strip()
    out = repo / "output"
    assert main(["build", str(spec), "-o", str(out)]) == 0
    built = commit(repo, "output")
    before = (out / MANIFEST).read_bytes()
    set_pins(spec, west=started, rest=base)
    assert main(["build", str(spec), "-o", str(out)]) == 0
    assert (out / MANIFEST).read_bytes() != before
    promoted = commit(repo, "promote west")
    capsys.readouterr()
    assert main(["diff", "--base", built, "--head", promoted, "--spec", str(spec), "--exit-code"]) == 1
    text = capsys.readouterr().out
    assert (
        "Rollout: merging changes no target in output/ at once; MANIFEST.json records the waves' revisions"
        in text
    )
    assert f"  wave west moves: {base[:12]} → {started[:12]}\n" in text


def test_a_target_whose_files_change_at_once_is_not_still_ahead(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """audit-log (a VM pool in gcp-usc1, the canary wave) starts calling preview, which runs in Kubernetes: its
    external reader in a cluster of preview's is a new pseudo-target, laid out at once by the first wave's
    revision. Its file is listed as changing now, so it is not "still ahead" in the canary wave, which is never
    promoted (it was: "Still ahead, one promotion each: canary (1), …")."""
    repo, spec, base = start_rollout(tmp_path / "repo")
    replace_in(spec / "services/audit-log.yaml", "dependencies:\n", "dependencies:\n  - service: preview\n")
    head = commit(repo, "audit-log calls preview")
    capsys.readouterr()
    assert main(["diff", "--base", base, "--head", head, "--spec", str(spec), "--format", "json"]) == 0
    now = json.loads(capsys.readouterr().out)["now"]
    readers = [t for t in now["file_targets"] if "/meshc-discovery/audit-log" in t]
    assert readers, now["file_targets"]
    assert main(["diff", "--base", base, "--head", head, "--spec", str(spec)]) == 0
    text = capsys.readouterr().out
    ahead = next((line for line in text.splitlines() if line.startswith("Still ahead")), "")
    assert not ahead.startswith("Still ahead, one promotion each: canary"), ahead


def test_the_diff_names_the_hosts_an_inventory_edit_adds_and_removes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Canary hosts are chosen from inventory/hosts.yaml: an edit of it is reviewed even where no canary moves (the
    diff said only "No target changes.")."""
    repo, spec, _ = start_rollout(tmp_path / "repo")
    inventory = spec / "inventory/hosts.yaml"
    lines = inventory.read_text().splitlines(keepends=True)
    gone = next(line for line in lines if line.startswith("- {certname: "))
    certname = gone.split("certname: ", 1)[1].split(",", 1)[0]
    inventory.write_text(
        "".join(line for line in lines if line != gone)
        + "- {certname: upload-sjc-099.box.net, service: upload, datacenter: sjc}\n"
    )
    capsys.readouterr()
    assert main(["diff", "--base", "HEAD", "--spec", str(spec), "--format", "json"]) in (0, 1)
    now = json.loads(capsys.readouterr().out)["now"]
    assert (now["hosts_added"], now["hosts_removed"]) == (["upload-sjc-099.box.net"], [certname])
    main(["diff", "--base", "HEAD", "--spec", str(spec)])
    text = capsys.readouterr().out
    assert "  the inventory gains 1 host(s): upload-sjc-099.box.net\n" in text
    assert f"  the inventory loses 1 host(s): {certname}\n" in text


def test_a_target_that_starts_or_stops_at_once_restarts_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A new service in gke-usc1-a (the canary wave) starts at once: the rollout section lists it added, at no
    restart, as the spec diff does (it said `pod roll` and counted it among the restarts)."""
    repo, spec, base = start_rollout(tmp_path / "repo")
    (spec / "services/reports.yaml").write_text(REPORTS)
    head = commit(repo, "a new service, reports, in gke-usc1-a")
    capsys.readouterr()
    assert main(["diff", "--base", base, "--head", head, "--spec", str(spec), "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    added = [c for c in report["now"]["changes"] if c["target"] == "k8s/gke-usc1-a/reports/reports"]
    assert [(c["status"], c["restart"]) for c in added] == [("added", "none")]
    assert report["summary"]["now_restarts"] == 0
    # a restart on Kubernetes is named by its class, as the spec diff names it, and as the pod roll it is
    from compiler.render.restart import RestartClass
    from compiler.rollout.changes import TargetChange
    from compiler.rollout.report import cost

    change = {"wave": "canary", "status": "changed", "restart_sensitive": False, "reason": "promoted"}
    envoy = RestartClass.ENVOY_RESTART
    assert cost(TargetChange(target="k8s/gke-usc1-a/reports/reports", restart=envoy, **change)) == (
        "Envoy restart, a pod roll"
    )
    assert cost(TargetChange(target="vm/audit-log/gcp-usc1", restart=envoy, **change)) == "Envoy restart"


def test_the_plan_lists_every_file_the_next_promotion_changes(tmp_path: Path) -> None:
    """preview moves namespace in gke-usc1-a (canary) and its base pods are admitted by feature-flags' NetworkPolicy
    there while base is live. The promotion that ends base narrows that policy, a file whose target's documents do
    not change: the plan lists it with the targets, so what it names is what the promotion rewrites (it named only
    the targets whose documents change)."""
    repo = make_repo(tmp_path / "repo")
    spec = repo / SPEC
    set_policy(spec, SPLIT_POLICY)
    replace_in(spec / "services/api-gateway.yaml", "  - service: preview\n", "")  # nobody later calls preview
    base = commit(repo, "wave policy split by service; api-gateway stops calling preview")
    replace_in(
        spec / "services/preview.yaml",
        "- {cluster: gke-usc1-a}",
        "- {cluster: gke-usc1-a, namespace: previews}",
    )
    head = commit(repo, "preview moves to namespace previews in gke-usc1-a")
    set_pins(spec, west=head, rest=base)
    commit(repo, "west at head, rest at base")
    context = rollout_context(spec)
    assert context is not None
    plan = plan_rollout(context)
    assert plan.promotion is not None and plan.promotion[0] == "rest"
    before = output_for(spec)
    set_pins(spec, west=head, rest=plan.promotion[1])
    after = output_for(spec)
    changed = {path for path in before.keys() | after.keys() if before.get(path) != after.get(path)} - {
        MANIFEST
    }
    listed = {
        path for c in plan.changes for tree in (before, after) for path in targets(tree).get(c.target, [])
    }
    assert {path for path, _ in plan.files} == changed - listed
    assert ("kubernetes/gke-usc1-a/feature-flags/feature-flags.yaml", "changed") in plan.files
    # the status page, drawn from the same records, names them too (no box stands for them)
    from compiler.graph.status import render_plan_page

    page = render_plan_page(plan)
    assert "Other files the promotion of rest rewrites: " in page
    assert "kubernetes/gke-usc1-a/feature-flags/feature-flags.yaml (changed)" in page


def test_the_plan_shows_the_expand_step_of_a_service_whose_canary_admits_the_client(tmp_path: Path) -> None:
    # storage-gateway runs in every wave: its canary (gcp-usc1) runs the revision that admits audit-log; sjc and
    # iad still run the base and admit it by widening alone. That is an expand step in force (it said "nothing",
    # as one of storage-gateway's revisions admits the client).
    repo, spec, _ = start_rollout(tmp_path / "repo")
    with (spec / "services/audit-log.yaml").open("a") as handle:
        handle.write("  - service: storage-gateway\n")
    commit(repo, "audit-log calls storage-gateway")
    context = rollout_context(spec)
    assert context is not None
    plan = plan_rollout(context)
    identity = "spiffe://box.mesh/ns/audit-log/sa/audit-log"
    assert [(s.service, s.identities) for s in plan.expanded] == [("storage-gateway", (identity,))]
    sjc = build_rollout(context).state.placements["vm/storage-gateway/sjc"]
    assert (
        sjc.wave == "west" and sjc.workload is not None and identity in sjc.workload.ingress.allowed_clients
    )


def test_the_diff_lists_allow_lists_a_merge_widens_in_later_waves(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Expand before contract: a new client in the canary wave is admitted at once by its server's targets in every
    # wave. The diff's "now" is exactly what the build changes, those targets included, as an authorization step.
    repo, spec, _ = start_rollout(tmp_path / "repo")
    out = repo / "output"
    assert main(["build", str(spec), "-o", str(out)]) == 0
    built = commit(repo, "output at base")
    before = read_tree(out)
    with (spec / "services/audit-log.yaml").open("a") as handle:  # audit-log: the canary wave alone
        handle.write("  - service: auth\n")
    head = commit(repo, "audit-log calls auth")
    capsys.readouterr()  # the build's line
    assert main(["diff", "--base", built, "--head", head, "--spec", str(spec), "--format", "json"]) == 0
    now = json.loads(capsys.readouterr().out)["now"]
    assert main(["build", str(spec), "-o", str(out)]) == 0
    after = read_tree(out)
    changed = {path for path in before.keys() | after.keys() if before.get(path) != after.get(path)} - {
        MANIFEST
    }
    listed = {path for c in now["changes"] for path in targets(after).get(c["target"], [])}
    assert listed | {path for path, _ in now["files"]} == changed
    reasons = {c["target"]: (c["wave"], c["reason"]) for c in now["changes"]}
    assert reasons["vm/auth/sjc"] == ("west", "authorization") and reasons["vm/auth/iad"] == (
        "rest",
        "authorization",
    )


def held_rollout(root: Path) -> tuple[Path, Path, str]:
    """A rollout with every wave, the first too, held at `base`: (repo, spec, base)."""
    repo, spec, base = start_rollout(root)
    (spec / "rollout.yaml").write_text(
        f"hold: true\npins:\n  canary: {base}\n  west: {base}\n  rest: {base}\n"
    )
    commit(repo, "hold")
    return repo, spec, base


def held_back_note(head: str) -> str:
    return (
        f"on hold: the newest revision, {head[:12]}, runs in no wave; lifting the hold "
        "(hold: false, and no pin for canary) lets it reach the first wave, canary"
    )


def test_on_hold_the_first_wave_is_never_promoted(tmp_path: Path) -> None:
    repo, spec, base = held_rollout(tmp_path / "repo")
    head = add_timeout_change(repo)
    # not "every wave already runs the newest revision": the newest (head) runs in none
    with pytest.raises(PromoteError) as refused:
        promote(spec, repo / "output")
    assert str(refused.value) == (
        f"every wave already runs the held revision {base[:12]}, so nothing to promote; {held_back_note(head)}"
    )
    with pytest.raises(PromoteError) as refused:
        promote(spec, repo / "output", "west")
    assert str(refused.value) == (
        f"wave 'west' already runs the revision of the wave before it, so nothing to promote; "
        f"{held_back_note(head)}"
    )
    with pytest.raises(
        PromoteError,
        match="the first wave 'canary' is never promoted: it runs the commit being built once the hold is lifted",
    ):
        promote(spec, repo / "output", "canary")
    with pytest.raises(PromoteError, match="unknown wave 'wets'"):
        promote(spec, repo / "output", "wets")


def test_validate_checks_the_pins_too(tmp_path: Path) -> None:
    repo, spec, base = start_rollout(tmp_path / "repo")
    assert main(["validate", str(spec)]) == 0
    set_pins(spec, west=base, rest="e" * 40)
    assert main(["validate", str(spec)]) == 2


def test_a_rollout_yaml_that_is_no_file_is_an_error_not_the_plain_build(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # It was taken for "no rollout": every wave silently got the commit being built, past the canary.
    repo, spec, _ = start_rollout(tmp_path / "repo")
    rollout = spec / "rollout.yaml"
    text = rollout.read_text()
    for make in (
        lambda: rollout.mkdir(),
        lambda: os.mkfifo(rollout),
        lambda: rollout.symlink_to("/nonexistent"),
    ):
        rollout.unlink()
        make()
        for command in (["build", str(spec), "-o", str(repo / "output")], ["plan", str(spec)]):
            assert main(command) == 2, (command, rollout)
            err = capsys.readouterr().err
            assert err.startswith(f"{rollout}:1:1: error: this is "), err
        assert not (repo / "output").exists()
        rollout.rmdir() if rollout.is_dir() and not rollout.is_symlink() else rollout.unlink()
        rollout.write_text(text)
    (spec / "inventory").mkdir(exist_ok=True)
    (spec / "inventory" / "hosts.yaml").unlink(missing_ok=True)
    os.mkfifo(spec / "inventory" / "hosts.yaml")
    assert main(["build", str(spec), "-o", str(repo / "output")]) == 2
    assert capsys.readouterr().err.startswith(f"{spec}/inventory/hosts.yaml:1:1: error: this is a FIFO")


# ---------------------------------------------------------------- a cluster's Namespaces: the union over live revisions


def cluster_namespaces_in(tree: dict[str, bytes], cluster: str) -> list[str]:
    """The Namespaces of a cluster's 00-cluster.yaml, in file order (it holds them all, then the ClusterRole)."""
    objects = list(yaml.safe_load_all(tree[f"kubernetes/{cluster}/00-cluster.yaml"]))
    assert [o["kind"] for o in objects][-1] == "ClusterRole"
    return [o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"]


def test_a_namespace_only_an_older_wave_uses_stays_until_no_live_revision_needs_it(tmp_path: Path) -> None:
    repo, spec, _ = start_rollout(tmp_path / "repo")
    # nothing calls upload at base, so moving it is safe (a caller at base would lose it: see
    # test_moving_a_placement_to_another_namespace_across_waves_is_unsafe)
    drop_dependency(spec / "services/api-gateway.yaml", "upload")
    base = commit(repo, "api-gateway no longer calls upload")
    set_pins(spec, west=base, rest=base)
    commit(repo, "every wave at base")
    # upload in kube-sjc-a (the west wave) moves from namespace `upload` to `uploads` at head
    replace_in(
        spec / "services/upload.yaml",
        "- {cluster: kube-sjc-a}",
        "- {cluster: kube-sjc-a, namespace: uploads}",
    )
    head = commit(repo, "upload moves to namespace uploads in kube-sjc-a")
    assert "upload" not in cluster_namespaces_in(revision_tree(repo, head), "kube-sjc-a")
    tree = output_for(spec)  # canary runs head, west and rest still run base
    assert waves_of(tree)["k8s/kube-sjc-a/upload/upload"] == "west"
    assert "kubernetes/kube-sjc-a/upload/upload.yaml" in tree, "west still runs upload in namespace upload"
    found = cluster_namespaces_in(tree, "kube-sjc-a")
    assert found == sorted(found) and {"upload", "uploads"} <= set(found), found
    assert not [path for path in tree if "00-namespaces" in path]
    # every wave at head: base is no longer live, and nothing writes namespace `upload` in kube-sjc-a
    set_pins(spec, west=head, rest=head)
    commit(repo, "west and rest at head")
    tree = output_for(spec)
    assert "upload" not in cluster_namespaces_in(tree, "kube-sjc-a")
    assert "uploads" in cluster_namespaces_in(tree, "kube-sjc-a")
    assert "upload" in cluster_namespaces_in(tree, "kube-iad-a"), "kube-iad-a's upload stays where it was"
    assert (
        tree["kubernetes/kube-sjc-a/00-cluster.yaml"]
        == revision_tree(repo, head)["kubernetes/kube-sjc-a/00-cluster.yaml"]
    )


SPLIT_POLICY = """
rollout:
  waves:
    - name: canary
      match: {clusters: [gke-usc1-a], restart_sensitive: false}
    - name: west
      match: {datacenters: [sjc]}
    - name: rest
"""
REPORTS = """service: reports
owner: content-experience
port: 8080
mesh_port: 18080
local_port: 7140
deploy:
  kubernetes:
    - {cluster: gke-usc1-a}
dependencies:
  - service: feature-flags
"""


def policy_peers(tree: dict[str, bytes], path: str) -> set[tuple[str, str]]:
    """(namespace, service) of each pod peer the NetworkPolicy in `path` admits to the mesh port."""
    (policy,) = (o for o in yaml.safe_load_all(tree[path]) if o["kind"] == "NetworkPolicy")
    peers = [peer for rule in policy["spec"]["ingress"] for peer in rule["from"] if "podSelector" in peer]
    return {
        (
            peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
            peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
        )
        for peer in peers
    }


def test_a_network_policy_at_an_older_wave_admits_the_pods_of_every_live_revision(tmp_path: Path) -> None:
    """gke-usc1-a enforces NetworkPolicies and the wave policy splits it: feature-flags, restart-sensitive, is in
    the last wave. At head preview moves to namespace `previews` and a new service, reports, calls feature-flags;
    both run head in the canary wave while feature-flags still runs base in the same cluster. Its NetworkPolicy
    admits the pods of both revisions, then, once base is no longer live, those of head alone (expand before
    contract, as its allow-list does)."""
    repo = make_repo(tmp_path / "repo")
    spec = repo / SPEC
    set_policy(spec, SPLIT_POLICY)
    replace_in(
        spec / "services/feature-flags.yaml", "locality: global", "locality: global\nrestart_sensitive: true"
    )
    # nothing calls preview at base, so moving it is safe (a caller at base would lose it: see
    # test_moving_a_placement_to_another_namespace_across_waves_is_unsafe)
    drop_dependency(spec / "services/api-gateway.yaml", "preview")
    base = commit(repo, "wave policy split by service; api-gateway no longer calls preview")
    (spec / "rollout.yaml").write_text(ROLLOUT.format(west=base, rest=base))
    commit(repo, "start the rollout")
    replace_in(
        spec / "services/preview.yaml",
        "- {cluster: gke-usc1-a}",
        "- {cluster: gke-usc1-a, namespace: previews}",
    )
    (spec / "services/reports.yaml").write_text(REPORTS)
    head = commit(repo, "preview moves to namespace previews in gke-usc1-a; reports calls feature-flags")
    flags = "kubernetes/gke-usc1-a/feature-flags/feature-flags.yaml"
    tree = output_for(spec)
    waves = waves_of(tree)
    assert (
        waves["k8s/gke-usc1-a/feature-flags/feature-flags"],
        waves["k8s/gke-usc1-a/previews/preview"],
    ) == (
        "rest",
        "canary",
    )
    naive = policy_peers(revision_tree(repo, base), flags)
    assert ("preview", "preview") in naive and not {("previews", "preview"), ("reports", "reports")} & naive
    assert {("preview", "preview"), ("previews", "preview"), ("reports", "reports")} <= policy_peers(
        tree, flags
    )
    # every wave at head: nothing runs preview in namespace `preview` any more, and nothing admits it
    set_pins(spec, west=head, rest=head)
    commit(repo, "west and rest at head")
    tree = output_for(spec)
    assert tree[flags] == revision_tree(repo, head)[flags]
    assert ("preview", "preview") not in policy_peers(tree, flags)


# ---------------------------------------------------------------- the diff's "at once" against two real builds


def built_at(repo: Path, revision: str, where: Path) -> dict[str, bytes]:
    """What `meshc build` writes in a checkout of `revision` (a worktree of `repo`: its pins resolve there)."""
    git(repo, "worktree", "add", "-q", "--detach", str(where), revision)
    return output_for(where / SPEC)


def assert_now_is_what_the_builds_change(
    repo: Path, base: str, head: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> dict:
    """The diff's `now`, checked: the files it names are exactly those a build at `head` writes differently from
    a build at `base` (MANIFEST.json aside)."""
    old, new = built_at(repo, base, tmp_path / "at-base"), built_at(repo, head, tmp_path / "at-head")
    changed = {path for path in old.keys() | new.keys() if old.get(path) != new.get(path)} - {MANIFEST}
    capsys.readouterr()
    assert main(["diff", "--base", base, "--head", head, "--spec", str(repo / SPEC), "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    now = report["now"]
    named = {path for path, _ in now["files"]}
    for change in now["changes"]:
        if change["target"].startswith("host/"):
            named.add(node_path(change["target"].removeprefix("host/")))
        else:
            named.update(targets(old).get(change["target"], []) + targets(new).get(change["target"], []))
    assert named == changed
    return report


def test_the_diff_of_a_rollout_starting_names_every_file_it_changes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The base has no wave policy and no rollout.yaml (a plain build); the head adds both, every wave pinned to the
    # base: nothing runs differently, but every pool file gains its wave. The base must be built as what it is,
    # not with the head's waves (then those files went unnamed).
    repo = make_repo(tmp_path / "repo")
    spec = repo / SPEC
    set_policy(spec, "")
    base = commit(repo, "no waves")
    set_policy(spec, POLICY)
    (spec / "rollout.yaml").write_text(ROLLOUT.format(west=base, rest=base))
    head = commit(repo, "waves, every one at the base")
    report = assert_now_is_what_the_builds_change(repo, base, head, tmp_path, capsys)
    assert report["now"]["changes"] == [] and report["now"]["files"], "no sidecar changes, files do"
    assert report["now"]["mode"] == "active"


def test_the_diff_of_a_rollout_ending_names_every_file_it_changes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # rollout.yaml removed while west and rest still run the base: every wave jumps to the head at once.
    repo, spec, _ = start_rollout(tmp_path / "repo")
    started = git(repo, "rev-parse", "HEAD").strip()
    add_timeout_change(repo)
    (spec / "rollout.yaml").unlink()
    head = commit(repo, "end the rollout")
    report = assert_now_is_what_the_builds_change(repo, started, head, tmp_path, capsys)
    assert {c["wave"] for c in report["now"]["changes"]} >= {"west", "rest"}
    assert report["now"]["mode"] == "none" and report["rollout"] == "none"
    # every wave gets the change at once: the wave line counts each wave's targets (it counted none)
    splits = {s["wave"]: len(s["targets"]) for s in report["waves"]}
    assert main(["diff", "--base", started, "--head", head, "--spec", str(spec)]) == 0
    assert (
        f"Waves: canary ({splits['canary']}), west ({splits['west']}), rest ({splits['rest']}); "
        "no rollout.yaml, so every wave gets this at once"
    ) in capsys.readouterr().out


def test_on_hold_the_diff_changes_nothing_at_once_and_every_wave_is_ahead(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo, spec, base = start_rollout(tmp_path / "repo")
    set_pins(spec, west=base, rest=base, hold=True)
    (spec / "rollout.yaml").write_text((spec / "rollout.yaml").read_text() + f"  canary: {base}\n")
    held = commit(repo, "hold")
    head = add_timeout_change(repo)
    report = assert_now_is_what_the_builds_change(repo, held, head, tmp_path, capsys)
    assert report["now"]["changes"] == report["now"]["files"] == [] and report["now"]["mode"] == "hold"
    splits = {s["wave"]: len(s["targets"]) for s in report["waves"]}
    assert main(["diff", "--base", held, "--head", head, "--spec", str(spec)]) == 0
    assert (
        "Rollout on hold: no wave gets this until hold is lifted; then, one promotion at a time: "
        f"canary ({splits['canary']}), west ({splits['west']}), rest ({splits['rest']})"
    ) in capsys.readouterr().out


def commit_a_broken_pin(repo: Path, spec: Path, base: str) -> str:
    """Commit a rollout.yaml pinning west to no commit (what a shallow clone lacks), then put the pins back in the
    working tree (uncommitted); the broken commit's id."""
    (spec / "rollout.yaml").write_text(ROLLOUT.format(west="1" * 40, rest=base))
    broken = commit(repo, "a pin that is no commit")
    (spec / "rollout.yaml").write_text(ROLLOUT.format(west=base, rest=base))
    return broken


def test_a_base_whose_rollout_cannot_be_built_is_unknown_never_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A pin the repository does not hold (a shallow clone's): what the merge changes at once cannot be known, so
    # the diff says so, and --exit-code does not report "no change".
    repo, spec, base = start_rollout(tmp_path / "repo")
    broken = commit_a_broken_pin(repo, spec, base)
    head = commit(repo, "pins fixed")
    capsys.readouterr()
    assert main(["diff", "--base", broken, "--head", head, "--spec", str(spec), "--exit-code"]) == 1
    text = capsys.readouterr().out
    assert "what the rollout changes at once is unknown" in text
    assert f"the rollout at {broken} cannot be built: {broken}:{spec}/rollout.yaml:" in text
    # the head's, in turn, is an error, as its build is
    assert main(["diff", "--base", head, "--head", broken, "--spec", str(spec)]) == 2
    assert "[rollout-pin-unknown]" in capsys.readouterr().err


def test_a_rollout_in_a_spec_directory_reached_through_a_committed_link(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `mesh-spec -> specs/v2`, committed: each revision's tree is read through the link (the review flow documents
    # it), the rollout's spec keys too (they looked the path up without following it: an internal error).
    repo = make_repo(tmp_path / "repo")
    (repo / "specs").mkdir()
    (repo / SPEC).rename(repo / "specs/v2")
    (repo / SPEC).symlink_to("specs/v2")
    spec = repo / SPEC
    set_policy(spec, POLICY)
    base = commit(repo, "spec behind a link")
    (spec / "rollout.yaml").write_text(ROLLOUT.format(west=base, rest=base))
    started = commit(repo, "start the rollout")
    head = add_timeout_change(repo)
    capsys.readouterr()
    assert main(["diff", "--base", started, "--head", head, "--spec", str(spec), "--format", "json"]) == 0
    now = json.loads(capsys.readouterr().out)["now"]
    assert {c["wave"] for c in now["changes"]} == {"canary"} and now["moves"][0]["wave"] == "canary"


def test_the_rendering_cache_tells_apart_widenings_that_differ_in_other_revisions_pods(
    example_build: Build,
) -> None:
    """A rendering is reused by its spec and widening (renderings._mesh_key): the pods other revisions run change
    the NetworkPolicies, so they are part of the key."""
    mesh = example_build.mesh
    moved = replace(mesh, rollout_pods=frozenset({("gke-usc1-a", "preview", "previews")}))
    assert _mesh_key(mesh) == _mesh_key(replace(mesh)) != _mesh_key(moved)


# ---------------------------------------------------------------- objects to delete by hand: what leaves at once

# notification's one placement: kube-iad-a, in wave rest
NOTIFICATION = "kubernetes/kube-iad-a/notification/notification.yaml"
ObjectKey = tuple[str, str, str | None, str]


def applied(tree: dict[str, bytes]) -> set[ObjectKey]:
    """(cluster, kind, namespace, name) of every Kubernetes object of an output tree, read with PyYAML: what
    kube-applier applies from it."""
    found = set()
    for path, data in tree.items():
        if path.startswith("kubernetes/") and path.endswith(".yaml"):
            for obj in yaml.safe_load_all(data):
                meta = obj["metadata"]
                found.add((path.split("/")[1], obj["kind"], meta.get("namespace"), meta["name"]))
    return found


def deletions_of(
    capsys: pytest.CaptureFixture[str], spec: Path, base: str, head: str | None = None
) -> tuple[set[ObjectKey], dict[ObjectKey, str]]:
    """The diff's objects to delete now, and those it says go with a later promotion (by the wave it names)."""
    capsys.readouterr()
    args = ["diff", "--base", base, "--spec", str(spec), "--format", "json"]
    assert main([*args, *(["--head", head] if head else [])]) == 0
    report = json.loads(capsys.readouterr().out)
    now = {object_key(d) for d in report["deletions"]}
    assert len(now) == len(report["deletions"]) == report["summary"]["deletions"]
    ahead = {object_key(a["object"]): a["wave"] for a in report["now"]["deletions_ahead"]}
    assert len(ahead) == report["summary"]["deletions_ahead"]
    return now, ahead


def object_key(record: dict) -> ObjectKey:
    """A deletion record of the diff's JSON as `applied` names its object."""
    return record["cluster"], record["kind"], record["namespace"], record["name"]


def promote_and_commit(repo: Path, spec: Path) -> tuple[set[ObjectKey], set[ObjectKey], str, str]:
    """The next promotion, committed: the objects output/ held before and after it, and the commits around it."""
    out = repo / "output"
    before, previous = applied(read_tree(out)), git(repo, "rev-parse", "HEAD").strip()
    done = promote(spec, out)
    return before, applied(read_tree(out)), previous, commit(repo, f"promote {done.wave}")


def remove_notification(root: Path) -> tuple[Path, Path, str, str, set[ObjectKey]]:
    """A rollout whose output/ is committed (`built`), then notification removed, output/ rebuilt (`head`): the repo,
    the spec, both commits and the objects the spec at head no longer writes."""
    repo, spec, _ = start_rollout(root)
    out = repo / "output"
    assert main(["build", str(spec), "-o", str(out)]) == 0
    built = commit(repo, "output at base")
    before = applied(read_tree(out))
    (spec / "services/notification.yaml").unlink()
    assert main(["build", str(spec), "-o", str(out)]) == 0
    head = commit(repo, "remove notification")
    gone = before - applied(revision_tree(repo, head))
    assert ("kube-iad-a", "Service", "notification", "notification") in gone
    assert ("kube-iad-a", "Namespace", None, "notification") in gone
    return repo, spec, built, head, gone


def test_a_service_removed_in_a_pinned_wave_gets_no_delete_command_at_the_merge(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The diff printed `kubectl delete` for notification's objects at the merge, while wave rest still ran the base
    # and output/ kept writing them: deleting them was an outage.
    repo, spec, built, head, gone = remove_notification(tmp_path / "repo")
    assert NOTIFICATION in read_tree(repo / "output") and gone <= applied(read_tree(repo / "output"))
    now, ahead = deletions_of(capsys, spec, built, head)
    assert now == set(), "nothing leaves output/ at once"
    assert ahead == dict.fromkeys(gone, "rest"), "each goes when wave rest has the change"
    assert main(["diff", "--base", built, "--head", head, "--spec", str(spec)]) == 0
    text = capsys.readouterr().out
    assert "kubectl --context" not in text and "to delete by hand" not in text
    assert (
        "  not yet, until wave rest has this change: service/notification (kube-iad-a, namespace notification)\n"
        in text
    )
    assert main(["diff", "--base", built, "--head", head, "--spec", str(spec), "--format", "markdown"]) == 0
    markdown = capsys.readouterr().out
    assert "```sh" not in markdown and "kubectl --context" not in markdown
    assert "> - not yet, until wave rest has this change: namespace/notification (kube-iad-a)\n" in markdown


def test_the_promotion_that_drops_a_removed_service_lists_its_delete_commands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The promotion that really dropped notification's file from output/ printed no delete command at all.
    repo, spec, _, _, gone = remove_notification(tmp_path / "repo")
    # west has nothing of notification: its promotion deletes nothing
    older, newer, previous, promoted = promote_and_commit(repo, spec)
    assert older == newer and deletions_of(capsys, spec, previous, promoted) == (set(), {})
    # rest's promotion drops notification's file and, no live revision placing it any more, its Namespace
    older, newer, previous, promoted = promote_and_commit(repo, spec)
    assert NOTIFICATION not in read_tree(repo / "output") and older - newer == gone
    assert deletions_of(capsys, spec, previous, promoted) == (gone, {})
    git(repo, "reset", "-q", "--soft", previous)  # the working tree after `meshc promote`, not yet committed
    assert deletions_of(capsys, spec, previous) == (gone, {})
    assert main(["diff", "--base", previous, "--spec", str(spec)]) == 0
    text = capsys.readouterr().out
    assert "  kubectl --context kube-iad-a delete -n notification service/notification\n" in text
    assert "  # kubectl --context kube-iad-a delete namespace/notification   # only once nothing else" in text


def test_a_namespace_left_only_by_a_later_promotion_is_deleted_by_that_promotion(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # upload in kube-sjc-a (wave west) moves to namespace uploads: its objects leave with west's promotion, but
    # namespace upload stays in 00-cluster.yaml while wave rest runs a revision with upload there. Nothing calls
    # upload at base, so the move is safe (test_moving_a_placement_to_another_namespace_across_waves_is_unsafe).
    repo, spec, _ = start_rollout(tmp_path / "repo")
    drop_dependency(spec / "services/api-gateway.yaml", "upload")
    base = commit(repo, "api-gateway no longer calls upload")
    set_pins(spec, west=base, rest=base)
    commit(repo, "every wave at base")
    out = repo / "output"
    assert main(["build", str(spec), "-o", str(out)]) == 0
    built = commit(repo, "output at base")
    before = applied(read_tree(out))
    replace_in(
        spec / "services/upload.yaml",
        "- {cluster: kube-sjc-a}",
        "- {cluster: kube-sjc-a, namespace: uploads}",
    )
    assert main(["build", str(spec), "-o", str(out)]) == 0
    head = commit(repo, "upload moves to namespace uploads in kube-sjc-a")
    namespace = ("kube-sjc-a", "Namespace", None, "upload")
    gone = before - applied(revision_tree(repo, head))
    assert namespace in gone and ("kube-sjc-a", "ServiceAccount", "upload", "upload") in gone
    now, ahead = deletions_of(capsys, spec, built, head)
    # at once, only what output/ really drops
    assert now == before - applied(read_tree(out)) and namespace not in now
    assert ahead == {key: "rest" if key == namespace else "west" for key in gone - now}
    # west's promotion: upload's objects in namespace upload leave, the Namespace does not
    older, newer, previous, promoted = promote_and_commit(repo, spec)
    assert namespace in newer and ("kube-sjc-a", "ServiceAccount", "upload", "upload") in older - newer
    assert deletions_of(capsys, spec, previous, promoted) == (older - newer, {})
    # rest's: the Namespace leaves
    older, newer, previous, promoted = promote_and_commit(repo, spec)
    assert namespace in older - newer
    assert deletions_of(capsys, spec, previous, promoted) == (older - newer, {})


def test_without_a_rollout_the_diff_deletes_what_the_head_no_longer_writes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # No rollout.yaml: the plain build is what runs, so every object the head no longer writes leaves at once.
    repo = make_repo(tmp_path / "repo")
    base = git(repo, "rev-parse", "HEAD").strip()
    (repo / SPEC / "services/notification.yaml").unlink()
    head = commit(repo, "remove notification")
    gone = applied(revision_tree(repo, base)) - applied(revision_tree(repo, head))
    capsys.readouterr()
    assert main(["diff", "--base", base, "--head", head, "--spec", str(repo / SPEC), "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["now"] is None
    assert {object_key(d) for d in report["deletions"]} == gone
    assert main(["diff", "--base", base, "--head", head, "--spec", str(repo / SPEC)]) == 0
    text = capsys.readouterr().out
    assert (
        f"Kubernetes objects to delete by hand ({len(gone)}): kube-applier never deletes what the head no longer "
        "writes. Run in this order (the reverse of its apply order); kubectl contexts are named after mesh.yaml's "
        "clusters:\n  kubectl --context kube-iad-a delete -n notification service/notification\n"
    ) in text
    assert "not yet" not in text


def test_where_the_base_rollout_cannot_be_built_no_delete_command_is_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # What leaves output/ at once is unknown (a pin the clone lacks): the spec's deletions are no commands to run.
    repo, spec, base = start_rollout(tmp_path / "repo")
    broken = commit_a_broken_pin(repo, spec, base)
    (spec / "services/notification.yaml").unlink()
    head = commit(repo, "pins fixed, notification removed")
    now, ahead = deletions_of(capsys, spec, broken, head)
    assert now == set()
    assert ahead == dict.fromkeys(applied(revision_tree(repo, base)) - applied(revision_tree(repo, head)), "")
    assert main(["diff", "--base", broken, "--head", head, "--spec", str(spec)]) == 0
    text = capsys.readouterr().out
    assert "kubectl --context" not in text
    assert "whether merging drops them from output/ at once is unknown (below), so delete none now" in text
