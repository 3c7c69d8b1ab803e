"""`meshc diff` end to end on a real git repository: exact targets and restart classes, in every format."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from compiler.backends.kubernetes.readers import external_readers
from compiler.cli import main
from compiler.commands.diff_markdown import GITHUB_COMMENT_LIMIT, format_markdown
from compiler.diff.revisions import diff_revisions
from compiler.ir.lower import lower
from compiler.ir.model import Mesh
from compiler.pipeline import validate_only
from compiler.spec.load import read_tree
from tests.conftest import EXAMPLE
from tests.test_gitsource import commit, git, make_repo, repo_state

SPEC = "mesh-spec"


@dataclass(frozen=True, kw_only=True, slots=True)
class Scenario:
    """One commit on top of the previous one, and what its diff must report."""

    name: str
    base: str
    head: str


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Scenario]:
    """A repo whose linear history holds one commit per scenario, each diffed against its parent."""
    repo = make_repo(tmp_path_factory.mktemp("diff") / "repo")
    spec = repo / SPEC
    steps = {
        # permissions (VM in sjc, pods in iad) starts calling storage-gateway (VMs in 3 DCs, pods in gke-usc1-a)
        "add-dependency": lambda: _append(
            spec / "services/permissions.yaml", "  - service: storage-gateway\n"
        ),
        "timeout": lambda: _replace(spec / "services/upload.yaml", "timeout: 2s", "timeout: 3s"),
        "admin-port": lambda: _replace(spec / "mesh.yaml", "admin_port: 9901", "admin_port: 9902"),
        "remove-service": lambda: (spec / "services/audit-log.yaml").unlink(),
        "comment-only": lambda: _replace(
            spec / "services/upload.yaml", "# Example 1 of the article", "# Example one of the article"
        ),
    }
    scenarios = {}
    for name, edit in steps.items():
        base = git(repo, "rev-parse", "HEAD").strip()
        edit()
        scenarios[name] = Scenario(name=name, base=base, head=commit(repo, name))
    scenarios["repo"] = repo  # type: ignore[assignment]
    return scenarios


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def _replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{path.name} no longer holds {old!r}; update the scenario"
    path.write_text(text.replace(old, new, 1))


@pytest.fixture(scope="module")
def example_mesh() -> Mesh:
    """The example mesh's IR (the base of the first scenario)."""
    return lower(validate_only(read_tree(EXAMPLE), SPEC))


def _ids(mesh: Mesh, service: str) -> set[str]:
    ids = {w.id for w in mesh.workloads_of(service)}
    assert ids, f"no workloads of {service}"
    return ids


def expected(name: str, mesh: Mesh) -> dict[str, tuple[str, str]]:
    """Target -> (status, restart class) each scenario must report, derived from the IR."""
    if name == "add-dependency":
        # the client gains an egress listener and cluster, and a Synapse service (reloaded live, no
        # restart); the server admits one more identity. But permissions now watches gke-usc1-a, a
        # cluster it did not read before: its VMs need a new mesh::discovery_credentials entry
        # (Synapse reads it live), its pods a new credentials volume, which rolls them.
        clients = {
            w.id: ("changed", "pod-roll" if w.platform == "kubernetes" else "hot-reload")
            for w in mesh.workloads_of("permissions")
        }
        servers = {t: ("changed", "hot-reload") for t in _ids(mesh, "storage-gateway")}
        assert (
            {w.platform for w in mesh.workloads_of("permissions")}
            == {w.platform for w in mesh.workloads_of("storage-gateway")}
            == {"vm", "kubernetes"}
        )
        # permissions runs in none of storage-gateway's clusters, so it becomes an external reader in
        # each (ServiceAccount, token Secret, grants there), a target of its own that restarts nothing
        clusters = {w.cluster for w in mesh.workloads_of("storage-gateway") if w.cluster} - {
            w.cluster for w in mesh.workloads_of("permissions")
        }
        assert (
            clusters
            and not {r.cluster for r in external_readers(mesh) if r.service == "permissions"} & clusters
        )
        readers = {f"k8s/{c}/meshc-discovery/permissions": ("added", "none") for c in clusters}
        return clients | servers | readers
    if name == "timeout":
        return {t: ("changed", "hot-reload") for t in _ids(mesh, "upload")}
    if name == "admin-port":
        return {w.id: ("changed", "envoy-restart") for w in mesh.workloads}
    if name == "remove-service":
        assert [e.service for w in mesh.workloads_of("audit-log") for e in w.egress] == ["event-bus"]
        return {t: ("removed", "none") for t in _ids(mesh, "audit-log")} | {
            t: ("changed", "hot-reload") for t in _ids(mesh, "event-bus")
        }
    return {}


RESTARTS = ("sidecar-restart", "envoy-restart", "pod-roll")
LABELS = {"none": "no restart"}  # the text and Markdown reports' word for a change that restarts nothing


def shown(status: str, restart: str) -> str:
    """How the text report shows a target's cost: `new`, `removed`, or `changed, <restart class>`."""
    return {"added": "new", "removed": "removed"}.get(status) or f"changed, {LABELS.get(restart, restart)}"


SCENARIOS = ("add-dependency", "timeout", "admin-port", "remove-service", "comment-only")
SPEC_CHANGES = {
    "add-dependency": ["services/permissions.yaml"],
    "timeout": ["services/upload.yaml"],
    "admin-port": ["mesh.yaml"],
    "remove-service": ["services/audit-log.yaml"],
    "comment-only": [],
}


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["diff", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _args(history: dict, name: str, fmt: str) -> list[str]:
    scenario = history[name]
    return [
        "--base",
        scenario.base,
        "--head",
        scenario.head,
        "--spec",
        str(history["repo"] / SPEC),
        "--format",
        fmt,
    ]


@pytest.mark.parametrize("name", SCENARIOS)
def test_json_reports_exact_targets_and_restart_classes(
    name: str, history: dict, example_mesh: Mesh, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, *_args(history, name, "json"))
    report = json.loads(out)
    want = expected(name, example_mesh)
    assert code == 0
    assert {t["target"]: (t["status"], t["restart"]) for t in report["targets"]} == want
    assert [s["file"] for s in report["spec"]] == SPEC_CHANGES[name]
    assert report["changed"] is bool(want)
    assert report["summary"]["targets"] == len(want)
    assert report["summary"]["restarts"] == sum(
        r in ("sidecar-restart", "envoy-restart", "pod-roll") for _, r in want.values()
    )
    groups = {(g["platform"], g["datacenter"]): set(g["targets"]) for g in report["groups"]}
    assert set().union(*groups.values()) == set(want) if want else groups == {}
    workloads = {w.id: w for w in example_mesh.workloads}
    assert all(
        workloads[t].platform == p and workloads[t].datacenter == dc
        for (p, dc), ts in groups.items()
        for t in ts
        if "/meshc-discovery/" not in t
    )  # an external reader's grant belongs to no workload
    order = ["none", "hot-reload", "sidecar-restart", "envoy-restart"]
    for target in report["targets"]:  # a changed target costs what its dearest document costs, or a pod roll
        dearest = max((d["restart"] for d in target["documents"]), key=order.index, default="none")
        rolls = target["platform"] == "kubernetes" and target["credentials"]
        assert target["restart"] == (
            "none" if target["status"] != "changed" else "pod-roll" if rolls else dearest
        )


@pytest.mark.parametrize("name", SCENARIOS)
def test_markdown_has_the_summary_table_first_and_every_target_folded(
    name: str, history: dict, example_mesh: Mesh, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, *_args(history, name, "markdown"))
    want = expected(name, example_mesh)
    assert code == 0 and len(out) < GITHUB_COMMENT_LIMIT
    folded = dict(
        re.findall(r"<details><summary><code>([^<]+)</code>: (new|removed|changed, <b>[a-z -]+</b>)", out)
    )
    assert {t: re.sub("</?b>", "", v) for t, v in folded.items()} == {
        t: shown(s, r) for t, (s, r) in want.items()
    }
    if want:
        table = out.index("| Platform | Datacenter | Targets |")
        assert table < out.index("<details>")
        assert f"| **total** | | **{len(want)}** |" in out
    else:
        assert "**No target changes.**" in out and "| Platform |" not in out


@pytest.mark.parametrize("name", SCENARIOS)
def test_text_lists_each_target_once_with_its_restart_class(
    name: str, history: dict, example_mesh: Mesh, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, *_args(history, name, "text"))
    want = expected(name, example_mesh)
    listed = dict(re.findall(r"^  ((?:vm|k8s)/\S+): (.+)$", out, re.MULTILINE))
    assert code == 0 and "\033[" not in out  # captured output is not a TTY: no colour
    sensitive = {w.id for w in example_mesh.workloads if w.restart_sensitive}
    assert listed == {
        t: shown(s, r) + (" (restart-sensitive)" if t in sensitive and r in RESTARTS else "")
        for t, (s, r) in want.items()
    }


def test_specific_semantic_paths(history: dict) -> None:
    spec = history["repo"] / SPEC
    timeout = diff_revisions(spec, history["timeout"].base, history["timeout"].head)
    (spec_change,) = timeout.spec
    assert [(c.path, c.old, c.new) for c in spec_change.changes] == [
        ("dependencies[service=encryption].timeout", "2s", "3s")
    ]
    for target in timeout.targets:
        (lds,) = target.documents
        assert lds.name == "envoy/lds.json"
        assert any(c.path.endswith("route.timeout") and (c.old, c.new) == ("2s", "3s") for c in lds.changes)
    comment = diff_revisions(spec, history["comment-only"].base, history["comment-only"].head)
    assert (comment.spec, comment.targets, comment.reformatted) == ((), (), ("services/upload.yaml",))


def test_exit_code_flag(history: dict, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, *_args(history, "timeout", "json"), "--exit-code")[0] == 1
    assert run(capsys, *_args(history, "comment-only", "json"), "--exit-code")[0] == 0


def test_head_defaults_to_the_working_tree_and_nothing_in_the_repo_changes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = make_repo(tmp_path / "repo")
    _replace(repo / SPEC / "services/upload.yaml", "timeout: 2s", "timeout: 3s")  # uncommitted
    (repo / SPEC / "services/notification.yaml").unlink()  # uncommitted delete
    git(repo, "add", f"{SPEC}/services/notification.yaml")  # ... and staged, so the index differs from HEAD
    before = repo_state(repo)
    for fmt in ("text", "markdown", "json"):
        code, out, err = run(capsys, "--base", "HEAD", "--spec", str(repo / SPEC), "--format", fmt)
        assert code == 0, err
    assert repo_state(repo) == before
    report = json.loads(out)
    assert report["head"] == "working tree"
    assert {s["file"]: s["status"] for s in report["spec"]} == {
        "services/notification.yaml": "removed",
        "services/upload.yaml": "changed",
    }
    assert "k8s/kube-iad-a/notification/notification" in {
        t["target"] for t in report["targets"] if t["status"] == "removed"
    }


def test_invalid_head_is_diagnosed_with_the_revision_in_the_file_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = make_repo(tmp_path / "repo")
    _replace(repo / SPEC / "services/upload.yaml", "service: metadata", "service: metdata")
    bad = commit(repo, "typo")
    code, out, err = run(capsys, "--base", "HEAD~1", "--head", bad, "--spec", str(repo / SPEC))
    assert (code, out) == (2, "")
    assert re.search(
        rf"^{bad}:{re.escape(str(repo / SPEC))}/services/upload.yaml:\d+:\d+: "
        r"error: .*'metdata'.*\[unknown-dependency\]$",
        err,
        re.MULTILINE,
    )


def test_invalid_base_is_a_note_and_every_head_target_is_new(
    tmp_path: Path, example_mesh: Mesh, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = make_repo(tmp_path / "repo")
    _replace(repo / SPEC / "services/upload.yaml", "service: metadata", "service: metdata")
    commit(repo, "broken")
    _replace(repo / SPEC / "services/upload.yaml", "service: metdata", "service: metadata")
    commit(repo, "fixed")
    code, out, _ = run(
        capsys, "--base", "HEAD~1", "--head", "HEAD", "--spec", str(repo / SPEC), "--format", "json"
    )
    report = json.loads(out)
    assert code == 0
    assert "invalid" in report["notes"][0] and "every target is new" in report["notes"][0]
    assert [d["code"] for d in report["base_diagnostics"]] == ["unknown-dependency"]
    assert report["base_diagnostics"][0]["file"].startswith("HEAD~1:")
    assert {t["target"]: t["status"] for t in report["targets"]} == (
        {w.id: "added" for w in example_mesh.workloads}
        | {r.id: "added" for r in external_readers(example_mesh)}
    )
    code, out, _ = run(
        capsys, "--base", "HEAD~1", "--head", "HEAD", "--spec", str(repo / SPEC), "--format", "markdown"
    )
    assert "[!WARNING]" in out and "unknown-dependency" in out


def test_no_spec_at_base_is_a_note(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "README").write_text("empty\n")
    commit(repo, "before the spec")
    shutil.copytree(EXAMPLE, repo / SPEC)
    # its pins name this repository's commits, which the new one lacks: the head's rollout cannot be built
    code, _, err = run(capsys, "--base", "HEAD", "--spec", str(repo / SPEC))
    assert code == 2 and err.count("[rollout-pin-unknown]") == 4, err
    (repo / SPEC / "rollout.yaml").unlink()
    code, out, _ = run(capsys, "--base", "HEAD", "--spec", str(repo / SPEC), "--format", "json")
    assert code == 0 and "no spec at HEAD" in json.loads(out)["notes"][0]


def test_unknown_revision_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = make_repo(tmp_path / "repo")
    code, out, err = run(capsys, "--base", "origin/nope", "--spec", str(repo / SPEC))
    assert (code, out) == (2, "")
    assert "unknown revision 'origin/nope'" in err


def test_markdown_is_cut_below_the_limit_with_a_note(history: dict) -> None:
    result = diff_revisions(history["repo"] / SPEC, history["admin-port"].base, history["admin-port"].head)
    full = format_markdown(result)
    assert len(full) < GITHUB_COMMENT_LIMIT and "were cut" not in full
    budget = len(full) // 3
    cut = format_markdown(result, budget=budget)
    shown = len(re.findall(r"</code>: changed, <b>envoy-restart</b>", cut))
    assert 0 < shown < len(result.targets)
    assert len(cut) < budget + 1000
    assert re.search(rf"Details of {len(result.targets) - shown} targets(, \d+ shared files?)? were cut", cut)
    assert f"| **total** | | **{len(result.targets)}** |" in cut  # the table still counts everything
