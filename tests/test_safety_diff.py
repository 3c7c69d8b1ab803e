"""Issue 9, the review flow: symlinked spec directories, oversized blobs, and a diff that tells the whole cost."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tracemalloc
from pathlib import Path

import pytest

from compiler.cli import main
from compiler.emit import dump_yaml
from compiler.gitsource import RevisionError, locate, read_revision
from compiler.pipeline import Build
from compiler.render import NERVE
from compiler.spec.document import MAX_FILE_BYTES
from compiler.spec.load import read_tree
from tests.conftest import EXAMPLE, require_tool
from tests.test_gitsource import commit, git, make_repo

SPEC = "mesh-spec"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["diff", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{path.name} no longer holds {old!r}"
    path.write_text(text.replace(old, new, 1))


# ---------------------------------------------------------------- item 9: symlinked spec directory


def _linked_repo(root: Path) -> tuple[Path, str]:
    """A repo whose spec directory `mesh-spec` is a committed symlink to specs/v1, then re-pointed to
    a new specs/v2 that changes one timeout; returns the repo and the first commit."""
    repo = make_repo(root, spec_dir="specs/v1")
    (repo / SPEC).symlink_to("specs/v1")
    base = commit(repo, "spec dir is a link")
    shutil.copytree(repo / "specs/v1", repo / "specs/v2")
    _replace(repo / "specs/v2/services/upload.yaml", "timeout: 2s", "timeout: 3s")
    (repo / SPEC).unlink()
    (repo / SPEC).symlink_to("specs/v2")
    return repo, base


def test_a_symlinked_spec_dir_is_resolved_in_each_revisions_own_tree(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo, base = _linked_repo(tmp_path / "repo")
    for head in (None, commit(repo, "re-point the link")):  # the working tree, then the same state committed
        code, out, err = run(
            capsys,
            "--base",
            base,
            *(["--head", head] if head else []),
            "--spec",
            str(repo / SPEC),
            "--format",
            "json",
        )
        report = json.loads(out)
        assert code == 0, err
        assert report["notes"] == []
        assert {t["status"] for t in report["targets"]} == {"changed"}
        assert {t["target"].rsplit("/", 1)[-1] for t in report["targets"]} == {"upload"}
        assert [(s["file"], s["status"]) for s in report["spec"]] == [("services/upload.yaml", "changed")]


def test_a_link_to_the_spec_dir_that_is_not_committed_reads_its_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = make_repo(tmp_path / "repo")
    (repo / "current").symlink_to(SPEC)  # in the working tree only: no revision has it
    _replace(repo / SPEC / "services/upload.yaml", "timeout: 2s", "timeout: 3s")
    code, out, err = run(capsys, "--base", "HEAD", "--spec", str(repo / "current"), "--format", "json")
    report = json.loads(out)
    assert (code, report["notes"]) == (0, []), err
    assert {t["target"].rsplit("/", 1)[-1] for t in report["targets"]} == {"upload"}


def test_a_spec_dir_symlink_leaving_the_repository_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outside = tmp_path / "elsewhere"
    shutil.copytree(EXAMPLE, outside)
    repo = make_repo(tmp_path / "repo", spec_dir="specs")
    (repo / SPEC).symlink_to(outside)
    head = commit(repo, "link out")
    code, out, err = run(capsys, "--base", head, "--spec", str(repo / SPEC))
    assert (code, out) == (2, "")
    assert err.count("\n") == 1
    assert f"meshc: error: 'mesh-spec' is a symlink to '{outside}' at revision '{head}'" in err
    assert "outside the repository" in err


def test_a_spec_dir_symlink_loop_is_a_clear_error(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", spec_dir="specs")
    (repo / "a").symlink_to("b")
    (repo / "b").symlink_to("a")
    commit(repo, "loop")
    with pytest.raises(RevisionError, match=r"'(a|b)' is part of a symlink loop at revision 'HEAD'"):
        read_revision(locate(repo / "a"), "HEAD")


def test_a_symlink_above_the_repository_does_not_change_the_spec_path(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    (tmp_path / "via").symlink_to(repo)
    assert locate(tmp_path / "via" / SPEC).relative == SPEC
    assert read_revision(locate(tmp_path / "via" / SPEC), "HEAD") == read_tree(EXAMPLE)


# ---------------------------------------------------------------- item 9: oversized blobs are never read


def test_an_oversized_blob_is_reported_at_its_file_without_being_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = make_repo(tmp_path / "repo")
    size = 48 * MAX_FILE_BYTES  # 48 MiB of one byte: git stores it compressed to a few KiB
    big = repo / SPEC / "services/big.yaml"
    with big.open("wb") as handle:
        for _ in range(48):
            handle.write(b"#" * MAX_FILE_BYTES)
    head = commit(repo, "a huge service file")
    big.unlink()  # the working tree no longer has it: only the blob at `head` exists
    tracemalloc.start()
    try:
        files = read_revision(locate(repo / SPEC), head)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(files["services/big.yaml"]) == MAX_FILE_BYTES + 1 < size
    assert peak < 4 * MAX_FILE_BYTES, f"reading the revision allocated {peak} bytes for a {size}-byte blob"
    code, out, err = run(capsys, "--base", "HEAD~1", "--head", head, "--spec", str(repo / SPEC))
    assert (code, out) == (2, "")
    assert re.fullmatch(
        rf"{head}:{re.escape(str(repo / SPEC))}/services/big.yaml:1:1: error: file is larger than 1024 KiB; "
        r"split it or trim it  \[file-too-large\]\nFound 1 error in 1 file\n",
        err,
    ), err


# ---------------------------------------------------------------- items 14, 15, 17: the whole cost, in every format


def _diff_all_formats(
    capsys: pytest.CaptureFixture[str], repo: Path, base: str, head: str
) -> tuple[dict, str, str]:
    """The JSON report (parsed), the text and the Markdown report of one diff through the CLI."""
    outputs = []
    for fmt in ("json", "text", "markdown"):
        code, out, err = run(
            capsys, "--base", base, "--head", head, "--spec", str(repo / SPEC), "--format", fmt
        )
        assert code == 0, err
        outputs.append(out)
    return json.loads(outputs[0]), outputs[1], outputs[2]


def _target_line(text: str, target: str) -> str:
    found = re.findall(rf"^  {re.escape(target)}: (.*)$", text, re.MULTILINE)
    assert len(found) == 1, (target, found)
    return found[0]


def _summary(markdown: str, target: str) -> str:
    found = re.findall(rf"<details><summary><code>{re.escape(target)}</code>: (.*?)</summary>", markdown)
    assert len(found) == 1, (target, found)
    return found[0]


def test_restart_sensitive_services_are_flagged_in_the_headline_and_per_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = make_repo(tmp_path / "repo")
    base = git(repo, "rev-parse", "HEAD").strip()
    # Nerve's check port: Nerve restarts
    _replace(repo / SPEC / "services/key-manager.yaml", "port: 8080", "port: 8081")
    # a Nerve restart of a service that is not sensitive
    _replace(repo / SPEC / "services/encryption.yaml", "rise: 2", "rise: 4")
    head = commit(repo, "restart key-manager's and encryption's Nerve")
    report, text, markdown = _diff_all_formats(capsys, repo, base, head)
    sensitive = {"vm/key-manager/sjc", "vm/key-manager/iad"}
    assert report["summary"]["restarts"] == 4 and report["summary"]["restart_sensitive"] == 2
    assert report["sensitive_services"] == ["key-manager"]
    assert {t["target"] for t in report["targets"] if t["sensitive_restart"]} == sensitive
    assert {t["target"] for t in report["targets"] if t["restart_sensitive"]} == sensitive
    assert (
        "4 need a restart (0 pod roll, 0 Envoy restart, 4 sidecar restart), 2 of them restart-sensitive: key-manager"
        in text
    )
    assert "warning: restart-sensitive service(s) restart: key-manager" in text
    for target in sensitive:
        assert _target_line(text, target) == "changed, sidecar-restart (restart-sensitive)"
        assert "restart-sensitive" in _summary(markdown, target)
    assert _target_line(text, "vm/encryption/sjc") == "changed, sidecar-restart"
    assert "restart-sensitive" not in _summary(markdown, "vm/encryption/sjc")
    assert (
        "4 need a restart (0 pod roll, 0 Envoy restart, 4 sidecar restart), 2 of them restart-sensitive: key-manager**"
        in markdown
    )
    assert "> [!CAUTION]\n> Restart-sensitive: this change restarts sidecars of `key-manager`" in markdown


def test_a_hot_reload_of_a_restart_sensitive_service_is_not_flagged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = make_repo(tmp_path / "repo")
    base = git(repo, "rev-parse", "HEAD").strip()
    # a new client of key-manager: key-manager's LDS admits one more identity, a hot reload
    _replace(
        repo / SPEC / "services/auth.yaml", "dependencies:\n", "dependencies:\n  - service: key-manager\n"
    )
    head = commit(repo, "auth calls key-manager")
    report, text, markdown = _diff_all_formats(capsys, repo, base, head)
    assert {t["target"]: t["restart"] for t in report["targets"] if t["service"] == "key-manager"} == {
        "vm/key-manager/sjc": "hot-reload",
        "vm/key-manager/iad": "hot-reload",
    }
    assert report["summary"]["restart_sensitive"] == 0 and report["sensitive_services"] == []
    # The flags, not the words: the example's last wave is *named* restart-sensitive, and the diff names waves.
    assert "warning: restart-sensitive" not in text and "(restart-sensitive)" not in text
    assert "[!CAUTION]" not in markdown and "⚠️" not in markdown


def test_a_new_cluster_to_watch_needs_credentials_on_vms_and_rolls_pods(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """permissions (VMs in sjc, pods in kube-iad-a) starts calling storage-gateway, whose pods run only in
    gke-usc1-a: both of its workloads now watch a cluster they never read before."""
    repo = make_repo(tmp_path / "repo")
    base = git(repo, "rev-parse", "HEAD").strip()
    _replace(
        repo / SPEC / "services/permissions.yaml",
        "dependencies:\n",
        "dependencies:\n  - service: storage-gateway\n",
    )
    head = commit(repo, "permissions calls storage-gateway")
    report, text, markdown = _diff_all_formats(capsys, repo, base, head)
    targets = {t["target"]: t for t in report["targets"]}
    vm, pod = targets["vm/permissions/sjc"], targets["k8s/kube-iad-a/permissions/permissions"]
    # VM: Puppet writes the new mesh::discovery_credentials entry and notifies nothing; Synapse reads it live
    assert (vm["restart"], [c["cluster"] for c in vm["credentials"]]) == ("hot-reload", ["gke-usc1-a"])
    assert vm["credentials"][0]["directory"] == "/etc/mesh/discovery/gke-usc1-a"
    assert "mesh::discovery_credentials['gke-usc1-a']" in vm["credentials"][0]["action"]
    # pod: a new Secret volume in the Deployment, so the pods roll
    assert (pod["restart"], [c["cluster"] for c in pod["credentials"]]) == ("pod-roll", ["gke-usc1-a"])
    assert report["summary"]["pod_roll"] == 1 and report["summary"]["credentials"] == 2
    assert report["summary"]["restarts"] == 1  # the pod roll; the VM restarts nothing
    assert "1 needs a restart (1 pod roll, 0 Envoy restart, 0 sidecar restart)" in text
    assert _target_line(text, "vm/permissions/sjc") == "changed, hot-reload"
    assert _target_line(text, "k8s/kube-iad-a/permissions/permissions") == "changed, pod-roll"
    assert (
        "    needs discovery credentials for gke-usc1-a: add mesh::discovery_credentials['gke-usc1-a'] (the token of "
        "meshc-discovery/permissions-token in gke-usc1-a)"
    ) in text
    assert (
        "    rolls its pods: the Deployment must mount Secret mesh-discovery-gke-usc1-a (the site's copy of "
        "the token of "
        "meshc-discovery/permissions-token in gke-usc1-a) at /etc/mesh/discovery/gke-usc1-a"
    ) in text
    assert _summary(markdown, "k8s/kube-iad-a/permissions/permissions").startswith("changed, <b>pod-roll</b>")
    assert "> [!IMPORTANT]\n> 2 targets watch a cluster they did not watch before" in markdown
    # 7 targets: the two clients, storage-gateway's four (one more client admitted), permissions' new
    # reader in gke-usc1-a
    assert "| **total** | | **7** | **1** | **0** | **1** | **0** | **0** | **5** | **0** |" in markdown


def test_a_pod_newly_watching_its_own_cluster_mounts_the_projected_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = make_repo(tmp_path / "repo")
    base = git(repo, "rev-parse", "HEAD").strip()
    _replace(
        repo / SPEC / "services/permissions.yaml", "dependencies:\n", "dependencies:\n  - service: metadata\n"
    )
    head = commit(repo, "permissions calls metadata")
    report, text, _ = _diff_all_formats(capsys, repo, base, head)
    pod = next(t for t in report["targets"] if t["target"] == "k8s/kube-iad-a/permissions/permissions")
    assert pod["restart"] == "pod-roll"
    own = next(c for c in pod["credentials"] if c["cluster"] == "kube-iad-a")
    assert own["action"] == (
        "rolls its pods: the Deployment must mount a projected ServiceAccount token with kube-root-ca.crt "
        "at /etc/mesh/discovery/kube-iad-a (its own cluster, kube-iad-a)"
    )


def test_a_dependency_in_a_cluster_already_watched_stays_a_hot_reload(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = make_repo(tmp_path / "repo")
    base = git(repo, "rev-parse", "HEAD").strip()
    # upload's pods already watch all three clusters: search (pods in gke-usc1-a) needs no new credentials
    _replace(
        repo / SPEC / "services/upload.yaml",
        "  - service: feature-flags\n",
        "  - service: feature-flags\n  - service: search\n",
    )
    head = commit(repo, "upload calls search")
    report, text, _ = _diff_all_formats(capsys, repo, base, head)
    assert {
        t["restart"]
        for t in report["targets"]
        if t["service"] == "upload" and "/meshc-discovery/" not in t["target"]
    } == {"hot-reload"}
    assert report["summary"]["credentials"] == 0 and report["summary"]["restarts"] == 0
    assert "credentials" not in text.replace("0 need", "")


def test_removed_services_read_removed_and_their_kubernetes_objects_get_delete_commands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from compiler.pipeline import compile_dir

    repo = make_repo(tmp_path / "repo")
    base = git(repo, "rev-parse", "HEAD").strip()
    before = compile_dir(repo / SPEC).tree()
    (repo / SPEC / "services/notification.yaml").unlink()  # pods in kube-iad-a only
    # search stops reading kube-sjc-a and kube-iad-a
    _replace(repo / SPEC / "services/search.yaml", "  - service: metadata\n", "")
    # edge becomes a new reader of search
    _replace(repo / SPEC / "services/edge.yaml", "dependencies:\n", "dependencies:\n  - service: search\n")
    head = commit(repo, "remove notification; search stops calling metadata")
    after = compile_dir(repo / SPEC).tree()
    report, text, markdown = _diff_all_formats(capsys, repo, base, head)
    statuses = {t["target"]: (t["status"], t["restart"]) for t in report["targets"]}
    assert statuses["k8s/kube-iad-a/notification/notification"] == ("removed", "none")
    assert statuses["k8s/kube-sjc-a/meshc-discovery/search"] == ("removed", "none")
    assert statuses["k8s/gke-usc1-a/meshc-discovery/edge"] == ("added", "none")
    assert _target_line(text, "k8s/kube-iad-a/notification/notification") == "removed"
    assert _target_line(text, "k8s/gke-usc1-a/meshc-discovery/edge") == "new"
    assert _summary(markdown, "k8s/kube-iad-a/notification/notification").startswith("removed")
    assert not re.search(r"^  \S+: .*envoy-restart", text, re.MULTILINE)
    # exactly the Kubernetes objects the head no longer writes in any file, cluster by cluster, in the reverse of
    # kube-applier's order (files by path, then each file's documents in order), read here with PyYAML
    objects_before, objects_after = _kube_objects(before), _kube_objects(after)
    gone = [(key, where) for key, where in objects_before.items() if key not in objects_after]
    assert gone, "the change must remove Kubernetes objects"
    assert any(where[0] in after for _, where in gone), (
        "and some from files the head still writes (a dropped grant)"
    )
    expected = [
        (key[1], key[2], key[3], key[4], where[0])
        for key, where in sorted(gone, key=lambda g: (g[0][0], g[1]), reverse=True)
    ]
    # clusters in order; stable: reverse apply order inside each
    expected = sorted(expected, key=lambda e: e[-1].split("/")[1])
    assert [
        (d["api_version"].rpartition("/")[0], d["kind"], d["namespace"], d["name"], d["file"])
        for d in report["deletions"]
    ] == expected
    commands = [d["command"] for d in report["deletions"]]
    assert "kubectl --context kube-iad-a delete -n notification service/notification" in commands
    assert (
        "kubectl --context kube-iad-a delete -n notification certificate.cert-manager.io/notification-mesh-tls"
        in commands
    )
    assert "kubectl --context kube-sjc-a delete -n meshc-discovery secret/search-token" in commands
    assert any(
        c.startswith("kubectl --context kube-sjc-a delete -n metadata rolebinding.rbac.authorization.k8s.io/")
        for c in commands
    )
    assert commands.index(
        "kubectl --context kube-iad-a delete -n notification service/notification"
    ) < commands.index(
        "kubectl --context kube-iad-a delete -n notification serviceaccount/notification"
    )  # reverse of apply order
    namespace = next(d for d in report["deletions"] if d["kind"] == "Namespace")
    assert (namespace["name"], namespace["cascades"], namespace["command"]) == (
        "notification",
        True,
        "kubectl --context kube-iad-a delete namespace/notification",
    )
    inside = [i for i, d in enumerate(report["deletions"]) if d["namespace"] == "notification"]
    # a Namespace goes after what it holds
    assert inside and max(inside) < commands.index(namespace["command"])
    lines = [
        line[2:]
        for line in text.splitlines()
        if line.startswith("  kubectl ") or line.startswith("  # kubectl ")
    ]
    assert [line.lstrip("# ").split("   #")[0] for line in lines] == commands
    assert f"  # {namespace['command']}   # only once nothing else lives in namespace notification" in text
    block = markdown[markdown.index("```sh\n") + 6 :]
    assert block[: block.index("```")].splitlines() == lines


def _kube_objects(tree: dict[str, bytes]) -> dict[tuple[str, str, str, str | None, str], tuple[str, int]]:
    """(cluster, API group, kind, namespace, name) -> (file, position in it) of every Kubernetes object of a tree."""
    import yaml

    found = {}
    for path, data in tree.items():
        if path.startswith("kubernetes/"):
            for index, obj in enumerate(yaml.safe_load_all(data)):
                meta = obj["metadata"]
                key = (
                    path.split("/")[1],
                    obj["apiVersion"].rpartition("/")[0],
                    obj["kind"],
                    meta.get("namespace"),
                    meta["name"],
                )
                assert key not in found, f"{key} is in {found.get(key)} and {path}"
                found[key] = (path, index)
    return found


# ---------------------------------------------------------------- site.pp: output/puppet/ as a Puppet environment


def _puppet_apply_environment(
    envs: Path, work: Path, facts: dict[str, str], certname: str
) -> subprocess.CompletedProcess[str]:
    """`puppet apply` of the environment's own site.pp, exactly as a server that deploys output/puppet/ as
    environment `production` compiles it: its modules/ and hiera.yaml come from the environment itself."""
    from tests.test_puppet_real import STDLIB_MODULES, settings

    (work / "vardir/facts.d").mkdir(parents=True, exist_ok=True)
    # external facts, as provisioning sets them
    (work / "vardir/facts.d/mesh.yaml").write_bytes(dump_yaml(facts))
    return subprocess.run(
        [
            "puppet",
            "apply",
            "--detailed-exitcodes",
            "--color=false",
            *settings(work),
            "--environmentpath",
            str(envs),
            "--environment",
            "production",
            "--basemodulepath",
            STDLIB_MODULES,
            "--certname",
            certname,
            str(envs / "production/manifests/site.pp"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.consumer
def test_site_pp_includes_mesh_on_mesh_nodes_only(example_build: Build, tmp_path: Path) -> None:
    puppet = require_tool("puppet")
    env = tmp_path / "envs/production"
    for path, data in example_build.tree().items():
        if path.startswith("puppet/"):
            (env / path.removeprefix("puppet/")).parent.mkdir(parents=True, exist_ok=True)
            (env / path.removeprefix("puppet/")).write_bytes(data)
    validate = subprocess.run(
        [puppet, "parser", "validate", str(env / "manifests/site.pp")], capture_output=True, text=True
    )
    assert validate.returncode == 0, validate.stderr
    root = tmp_path / "root"
    # The site's own level (meshc writes no datacenter files): keep the class's writes and restarts inside the test.
    (env / "data/datacenters").mkdir(parents=True)
    (env / "data/datacenters/sjc.yaml").write_bytes(
        dump_yaml(
            {
                "mesh::root": str(root),
                "mesh::manage_services": False,
                **{
                    f"mesh::{p}_restart_command": "/bin/true"
                    for p in ("envoy", "envoy_hot", "nerve", "synapse")
                },
            }
        )
    )
    (root / "etc").mkdir(parents=True)
    (root / "var/run").mkdir(parents=True)
    # a node without mesh facts: site.pp gives it nothing, and nothing is written
    plain = _puppet_apply_environment(
        tmp_path / "envs", tmp_path / "plain", {"role": "db"}, "db-1.sjc.example"
    )
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert not list(root.rglob("*.json"))
    # a mesh VM: site.pp includes mesh, hiera (the environment's layer) finds its pool, the class writes its documents
    node = _puppet_apply_environment(
        tmp_path / "envs",
        tmp_path / "mesh",
        {"mesh_service": "encryption", "mesh_datacenter": "sjc"},
        "encryption-1.sjc.example",
    )
    assert node.returncode == 2, node.stdout + node.stderr  # 2: changes applied, no failure
    documents = example_build.sidecars["vm/encryption/sjc"].documents
    # Dot files are the module's own records (the .meshc-applied.json receipt), not sidecar documents.
    written = {
        p.relative_to(root / "etc/mesh").as_posix(): json.loads(p.read_bytes())
        for p in (root / "etc/mesh").rglob("*.json")
        if not p.name.startswith(".")
    }
    assert set(written) == set(documents)
    assert (root / "etc/mesh/.meshc-applied.json").is_file()
    assert all(written[name] == documents[name] for name in documents if name != NERVE)
    assert written[NERVE]["instance_id"] == "encryption-1.sjc.example"


# ---------------------------------------------------------------- README examples are real output, cuts marked

README = Path(__file__).resolve().parent.parent / "README.md"


def _readme_block(first_line: str) -> list[str]:
    """The lines of the README code block that starts with `first_line` (the command), command excluded."""
    text = README.read_text()
    start = text.index(f"```\n{first_line}\n") + len(f"```\n{first_line}\n")
    return text[start : text.index("\n```\n", start)].split("\n")


def _assert_excerpt(shown: list[str], real: list[str]) -> None:
    """Every shown line is a real line, in order; lines are skipped only where a `…` line marks the cut."""
    position, cut = 0, False
    for line in shown:
        if line.lstrip().startswith("…"):
            cut = True
            continue
        assert line in real[position:], f"not in the real output (or out of order): {line!r}"
        found = real.index(line, position)
        assert cut or found == position, f"unmarked cut before {line!r}: {real[position:found]}"
        position, cut = found + 1, False
    assert cut or position == len(real), f"unmarked cut at the end: {real[position:]}"


def test_readme_explain_example_is_the_real_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "upload", "--spec", str(EXAMPLE)]) == 0
    _assert_excerpt(_readme_block("$ meshc explain upload"), capsys.readouterr().out.rstrip("\n").split("\n"))


def test_readme_diff_example_is_the_real_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = make_repo(tmp_path / "repo")
    _replace(
        repo / SPEC / "services/permissions.yaml",
        "dependencies:\n",
        "dependencies:\n  - service: storage-gateway\n",
    )
    code, out, err = run(capsys, "--base", "HEAD", "--spec", str(repo / SPEC))
    assert code == 0, err
    _assert_excerpt(_readme_block("$ meshc diff --base HEAD"), out.rstrip("\n").split("\n"))


def test_readme_says_what_meshc_writes_for_rbac_and_how_validate_reports() -> None:
    text = README.read_text()
    assert "Roles" not in text  # meshc writes one ClusterRole per cluster and RoleBindings, no Role
    assert "print every error at once" not in text  # errors are printed per phase: the first phase that fails
    assert "print every error of the first phase that fails" in text
