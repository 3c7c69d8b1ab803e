"""`meshc drift` on Kubernetes: live dumps built by tests/live_k8s.py's documented rules, plus hand-made drift.

Exit codes and error lines are checked through the real command line; the comparison itself is
also called in-process where that says more (which item, which path).
"""

from __future__ import annotations

import copy
import datetime
import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import EXAMPLE, meshc_in_process, run_under_seeds
from live_k8s import LAST_APPLIED, dump_json, dump_yaml, find, last_applied, live_objects, orphan
from test_kubernetes_schemas import Schemas, schemas  # noqa: F401 - the fixture: Kubernetes 1.32 strict schemas + CRDs

from compiler.backends.kubernetes.layout import OWNER_ANNOTATION
from compiler.drift.detect import assemble_report
from compiler.drift.kube_dump import DumpError, parse_dump
from compiler.drift.kubernetes import ExpectedObject, _load_output, check_cluster, expected_objects
from compiler.drift.model import (
    ACKNOWLEDGED,
    CONVERGED,
    EXTRA,
    MISSING,
    MODIFIED,
    NOT_CHECKED,
    ORPHAN,
    DriftReport,
)
from compiler.drift.report import format_markdown, format_text, report_data
from compiler.pipeline import Build, compile_dir
from compiler.rollout import output as rollout_output

CLUSTERS = ("gke-usc1-a", "kube-iad-a", "kube-sjc-a")
SJC = "kube-sjc-a"


def meshc(*args: str, today: str = "2026-11-30") -> subprocess.CompletedProcess[str]:
    """`meshc drift EXAMPLE ARGS` in this process (run_under_seeds runs the hash-seed children)."""
    result = meshc_in_process("drift", EXAMPLE, *args, env={"MESHC_TODAY": today})
    assert "Traceback" not in result.stdout + result.stderr
    return result


@pytest.fixture(autouse=True)
def rollout_compiled_once(
    monkeypatch: pytest.MonkeyPatch, example_truth: tuple[dict[str, bytes], dict[str, Any]]
) -> None:
    """Every `meshc drift EXAMPLE` here compiles the example's rollout into the same truth (what it compares with);
    the session's `example_truth`, made by that very function once, stands in for the repeats."""
    compile_rollout = rollout_output.output_truth

    def output_truth(spec: Path) -> tuple[dict[str, bytes], dict[str, Any]]:
        return (
            (dict(example_truth[0]), dict(example_truth[1]))
            if Path(spec) == EXAMPLE
            else compile_rollout(spec)
        )

    monkeypatch.setattr(rollout_output, "output_truth", output_truth)


@pytest.fixture(scope="module")
def tree(example_build: Build) -> dict[str, bytes]:
    return example_build.tree()


@pytest.fixture()
def dumps(tree: dict[str, bytes], tmp_path: Path) -> Callable[..., list[str]]:
    """Write a dump per cluster (YAML; JSON for kube-iad-a) after `edit` changed sjc's objects; --kubernetes args."""

    def write(edit: Callable[[list[dict[str, Any]]], None] | None = None) -> list[str]:
        args = []
        for cluster in CLUSTERS:
            objects = live_objects(tree, cluster)
            if cluster == SJC and edit is not None:
                edit(objects)
            as_json = cluster == "kube-iad-a"
            path = tmp_path / f"{cluster}.{'json' if as_json else 'yaml'}"
            path.write_text(dump_json(objects) if as_json else dump_yaml(objects))
            args += ["--kubernetes", f"{cluster}={path}"]
        return args

    return write


Expected = dict[str, list[ExpectedObject]]


@pytest.fixture(scope="module")
def expected(tree: dict[str, bytes]) -> Expected:
    """Each cluster's expected objects, read from the built tree once: the comparisons only read them."""
    return expected_objects(tree)


def check(expected: Expected, objects: list[dict[str, Any]], cluster: str = SJC) -> DriftReport:
    dump = parse_dump("live.yaml", dump_yaml(objects).encode())
    return assemble_report([check_cluster("box", cluster, expected[cluster], dump)], [])


def items(report: DriftReport) -> list[tuple[str, str, str, Any, Any]]:
    return [(i.kind, i.subject, i.path, i.expected, i.live) for s in report.subjects for i in s.items]


# ---------------------------------------------------------------- zero false positives


def test_dump_of_exactly_what_meshc_wrote_is_converged(
    dumps: Callable[..., list[str]], tmp_path: Path
) -> None:
    # --partial: the example mesh has VMs too, and no PuppetDB is given here (tests/test_drift_wire.py gives both)
    result = meshc(*dumps(), "--format", "json", "--partial")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    data = json.loads(result.stdout)
    assert data["failing"] is False and data["subjects"] == []
    assert [(s["scope"], s["state"]) for s in data["scopes"]] == [(c, CONVERGED) for c in CLUSTERS] + [
        ("puppetdb", NOT_CHECKED)
    ]
    assert all(
        s["counts"] == {"converged": s["counts"]["converged"]} and s["counts"]["converged"] > 40
        for s in data["scopes"]
        if s["platform"] == "kubernetes"
    )
    # the fixture really carries every server-set field and default the comparison must ignore
    text = (tmp_path / f"{SJC}.yaml").read_text()
    for needle in (
        "uid:",
        "resourceVersion:",
        "generation:",
        "creationTimestamp:",
        "managedFields:",
        LAST_APPLIED,
        "clusterIPs:",
        "ipFamilies:",
        "ipFamilyPolicy:",
        "internalTrafficPolicy:",
        "sessionAffinity: None",
        "type: ClusterIP",
        "apiGroup: ''",
        "imagePullSecrets:",
        "secrets:",
        "finalizers:",
        "notAfter:",
        "kubernetes.io/metadata.name",
        "kubernetes.io/service-account.uid",
        "cert-manager.io/certificate-name",
    ):
        assert needle in text, needle
    assert '"clusterIPs"' in (tmp_path / "kube-iad-a.json").read_text()


def test_normalization_durations_api_versions_order_and_empty_values(
    tree: dict[str, bytes], expected: Expected
) -> None:
    objects = live_objects(tree, "gke-usc1-a")
    cert = find(objects, "Certificate", "storage", "storage-gateway-mesh-tls")
    cert["spec"].update(duration="720h0m0s", renewBefore="14400m")  # Go's spelling of 720h and 240h
    cert["spec"]["usages"].reverse()
    cert["apiVersion"] = "cert-manager.io/v1beta1"  # whatever version `get` returns
    role = find(objects, "ClusterRole", None, "meshc-discovery-reader")
    role["rules"].reverse()
    role["rules"][0]["verbs"].reverse()
    policy = find(objects, "NetworkPolicy", "storage", "storage-gateway-mesh")
    policy["spec"]["ingress"][0]["from"].reverse()
    policy["metadata"]["annotations"] = dict(reversed(policy["metadata"]["annotations"].items()))
    # empty equals absent
    find(objects, "ConfigMap", "storage", "storage-gateway-mesh-envoy")["binaryData"] = {}
    assert items(check(expected, objects, "gke-usc1-a")) == []
    cert["spec"]["duration"] = "721h"
    assert items(check(expected, objects, "gke-usc1-a")) == [
        (MODIFIED, "Certificate/storage/storage-gateway-mesh-tls", "spec.duration", "720h", "721h")
    ]


def test_labels_and_annotations_of_other_tools_are_not_drift_but_meshc_keys_are(
    tree: dict[str, bytes],
    expected: Expected,
) -> None:
    objects = live_objects(tree, SJC)
    account = find(objects, "ServiceAccount", "upload", "upload")
    account["metadata"]["labels"]["istio.io/rev"] = "canary"
    account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] = "arn:aws:iam::1:role/x"
    assert items(check(expected, objects)) == []
    other = find(objects, "Service", "upload", "upload")
    # `annotations: null` is what a dump may hold: every meshc annotation is gone
    other["metadata"]["annotations"] = None
    assert {(i[0], i[2]) for i in items(check(expected, objects))} == {
        (MODIFIED, f"metadata.annotations[{key}]") for key in ("meshc.dev/workload", OWNER_ANNOTATION)
    }
    other["metadata"]["annotations"] = find(live_objects(tree, SJC), "Service", "upload", "upload")[
        "metadata"
    ]["annotations"]
    account["metadata"]["annotations"]["meshc.dev/restart-hash"] = "0"
    account["metadata"]["labels"]["app.kubernetes.io/name"] = "download"
    assert sorted(items(check(expected, objects))) == [
        (EXTRA, "ServiceAccount/upload/upload", "metadata.annotations[meshc.dev/restart-hash]", None, "0"),
        (
            MODIFIED,
            "ServiceAccount/upload/upload",
            "metadata.labels[app.kubernetes.io/name]",
            "upload",
            "download",
        ),
    ]


# ---------------------------------------------------------------- drift kinds


def test_missing_object_exits_1(dumps: Callable[..., list[str]]) -> None:
    def edit(objects: list[dict[str, Any]]) -> None:
        objects.remove(find(objects, "Certificate", "upload", "upload-mesh-tls"))

    result = meshc(*dumps(edit), "--format", "json")
    assert result.returncode == 1
    data = json.loads(result.stdout)
    [subject] = data["subjects"]
    assert (subject["subject"], subject["target"], subject["state"]) == (
        "Certificate/upload/upload-mesh-tls",
        "k8s/kube-sjc-a/upload/upload",
        "drifted",
    )
    assert [(i["kind"], i["id"]) for i in subject["items"]] == [
        (MISSING, "kubernetes/kube-sjc-a/Certificate/upload/upload-mesh-tls#missing")
    ]
    assert (
        subject["items"][0]["detail"]
        == "not in the dump; kube-applier applies kubernetes/kube-sjc-a/upload/upload.yaml"
    )
    target = next(t for t in data["targets"] if t["target"] == "k8s/kube-sjc-a/upload/upload")
    assert target["state"] == "drifted" and target["converged"] == target["subjects"] - 1


def test_a_kind_left_out_of_the_dump_is_unknown_not_missing(
    tree: dict[str, bytes], expected: Expected
) -> None:
    # `kubectl get` without certificates
    objects = [o for o in live_objects(tree, SJC) if o["kind"] != "Certificate"]
    report = check(expected, objects)
    unknown = [s for s in report.subjects if s.state != CONVERGED]
    assert unknown and {(s.subject.split("/")[0], s.state) for s in unknown} == {("Certificate", "unknown")}
    assert "was certificates.cert-manager.io in the `kubectl get`?" in unknown[0].items[0].detail
    assert report.failing and report.scopes[0].counts["unknown"] == len(unknown)


def test_modified_field_tells_a_hand_edit_from_an_apply_not_done(
    tree: dict[str, bytes], expected: Expected
) -> None:
    objects = live_objects(tree, SJC)
    service = find(objects, "Service", "upload", "upload")
    service["spec"]["ports"][0]["port"] = 18081
    report = check(expected, objects)
    assert items(report) == [(MODIFIED, "Service/upload/upload", "spec.ports[mesh].port", 18080, 18081)]
    assert (
        "hand edit"
        in report.subjects[[s.subject for s in report.subjects].index("Service/upload/upload")]
        .items[0]
        .detail
    )
    applied = json.loads(service["metadata"]["annotations"][LAST_APPLIED])
    applied["spec"]["ports"][0]["port"] = 18081  # kube-applier last applied an older rendering
    service["metadata"]["annotations"][LAST_APPLIED] = last_applied(applied)
    [item] = [i for s in check(expected, objects).subjects for i in s.items]
    assert "has not applied this rendering yet" in item.detail


def test_modified_sidecar_document_is_reported_inside_the_json(
    tree: dict[str, bytes], expected: Expected
) -> None:
    objects = live_objects(tree, SJC)
    config = find(objects, "ConfigMap", "upload", "upload-mesh-synapse")
    document = json.loads(config["data"]["synapse.json"])
    document["file_output"]["output_directory"] = "/tmp/synapse"
    config["data"]["synapse.json"] = json.dumps(document)  # reformatted too: only the value counts
    assert items(check(expected, objects)) == [
        (
            MODIFIED,
            "ConfigMap/upload/upload-mesh-synapse",
            "data[synapse.json].file_output.output_directory",
            "/var/run/mesh/synapse",
            "/tmp/synapse",
        )
    ]


def test_extra_config_map_key_and_extra_fields_are_reported(
    tree: dict[str, bytes], expected: Expected
) -> None:
    objects = live_objects(tree, SJC)
    find(objects, "ConfigMap", "upload", "upload-mesh-envoy")["data"]["debug.json"] = "{}"
    find(objects, "Certificate", "upload", "upload-mesh-tls")["spec"]["dnsNames"] = ["upload.example.com"]
    find(objects, "ServiceAccount", "upload", "upload")["automountServiceAccountToken"] = False
    assert sorted(items(check(expected, objects))) == [
        (EXTRA, "Certificate/upload/upload-mesh-tls", "spec.dnsNames", None, ["upload.example.com"]),
        (EXTRA, "ConfigMap/upload/upload-mesh-envoy", "data[debug.json]", None, "{}"),
        (EXTRA, "ServiceAccount/upload/upload", "automountServiceAccountToken", None, False),
    ]


def test_extra_rbac_subject_is_drift(tree: dict[str, bytes], expected: Expected) -> None:
    objects = live_objects(tree, SJC)
    binding = next(o for o in objects if o["kind"] == "RoleBinding")
    binding["subjects"].append({"kind": "ServiceAccount", "name": "intruder", "namespace": "default"})
    assert items(check(expected, objects)) == [
        (
            EXTRA,
            f"RoleBinding/{binding['metadata']['namespace']}/{binding['metadata']['name']}",
            "subjects[intruder]",
            None,
            {"kind": "ServiceAccount", "name": "intruder", "namespace": "default"},
        )
    ]


def test_yaml_values_json_cannot_hold_are_reported_not_crashed_on(
    dumps: Callable[..., list[str]], tmp_path: Path
) -> None:
    args = dumps()
    path = tmp_path / f"{SJC}.yaml"
    text = path.read_text()
    anchor = "  spec:\n    clusterIP: None\n"
    assert anchor in text
    path.write_text(
        text.replace(
            anchor,
            anchor
            + "    when: 2026-01-01T00:00:00Z\n    blob: !!binary aGk=\n    odd: {1: x}\n    tags: !!set {a, b}\n",
            1,
        )
    )
    result = meshc(*args, "--format", "json")
    assert result.returncode == 1, result.stderr
    [subject] = json.loads(result.stdout)["subjects"]
    assert sorted((i["kind"], i["path"]) for i in subject["items"]) == [
        (EXTRA, f"spec.{k}") for k in ("blob", "odd", "tags", "when")
    ]
    assert meshc(*args).returncode == 1


# ---------------------------------------------------------------- ownership and orphans


def test_orphans_with_the_annotation_get_delete_commands_in_reverse_apply_order(
    dumps: Callable[..., list[str]],
) -> None:
    def edit(objects: list[dict[str, Any]]) -> None:
        # a former workload: its objects were applied from kubernetes/kube-sjc-a/legacy/legacy.yaml
        legacy = f"k8s/{SJC}/legacy/legacy"
        objects += [
            orphan("box", SJC, "Namespace", "v1", None, "legacy"),
            orphan("box", SJC, "ServiceAccount", "v1", "legacy", "legacy", workload=legacy),
            orphan(
                "box",
                SJC,
                "ConfigMap",
                "v1",
                "legacy",
                "legacy-mesh-envoy",
                workload=legacy,
                data={"lds.json": "{}"},
            ),
            orphan(
                "box", SJC, "Certificate", "cert-manager.io/v1", "legacy", "legacy-mesh-tls", workload=legacy
            ),
            orphan(
                "box",
                SJC,
                "RoleBinding",
                "rbac.authorization.k8s.io/v1",
                "upload",
                "meshc-discovery.legacy.legacy",
                workload=legacy,
            ),
        ]

    result = meshc(*dumps(edit))
    assert result.returncode == 1
    commands = [
        line.strip()
        for line in result.stdout.splitlines()
        if line.strip().startswith(("kubectl ", "# kubectl "))
    ]
    # the reverse of the apply order: that file's documents backwards (its grant came after its
    # ServiceAccount), then the Namespace, whose file 00-cluster.yaml sorts before every namespace directory
    assert commands == [
        "kubectl --context kube-sjc-a delete -n legacy certificate.cert-manager.io/legacy-mesh-tls",
        "kubectl --context kube-sjc-a delete -n legacy configmap/legacy-mesh-envoy",
        "kubectl --context kube-sjc-a delete -n upload "
        "rolebinding.rbac.authorization.k8s.io/meshc-discovery.legacy.legacy",
        "kubectl --context kube-sjc-a delete -n legacy serviceaccount/legacy",
        "# kubectl --context kube-sjc-a delete namespace/legacy   # only once nothing else lives in namespace legacy: "
        "it takes everything in it along",
    ]
    assert "3 of 4 scope(s) checked" in result.stdout and "5 orphan" in result.stdout


def test_copied_label_or_annotation_is_not_ownership(tree: dict[str, bytes], expected: Expected) -> None:
    objects = live_objects(tree, SJC)
    # cert-manager's issued Secrets already carry meshc's labels (secretTemplate): no orphans from them
    assert any(
        o["kind"] == "Secret"
        and o["metadata"].get("labels", {}).get("app.kubernetes.io/managed-by") == "meshc"
        and OWNER_ANNOTATION not in o["metadata"].get("annotations", {})
        for o in objects
    )
    copied = copy.deepcopy(find(objects, "ConfigMap", "upload", "upload-mesh-envoy"))
    copied["metadata"]["name"] = (
        "upload-mesh-envoy-backup"  # `kubectl get -o yaml | sed | kubectl apply`: annotation names the original
    )
    labelled = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "data": {},
        "metadata": {
            "name": "team-notes",
            "namespace": "upload",
            "labels": {"app.kubernetes.io/managed-by": "meshc", "meshc.dev/mesh": "box"},
        },
    }
    other_mesh = orphan("other", SJC, "ConfigMap", "v1", "upload", "theirs")
    objects += [copied, labelled, other_mesh]
    assert items(check(expected, objects)) == []
    objects.append(orphan("box", SJC, "ConfigMap", "v1", "upload", "ours"))
    assert items(check(expected, objects)) == [(ORPHAN, "ConfigMap/upload/ours", "", None, None)]
    # a crafted dump: names are not trusted
    objects.append(orphan("box", SJC, "ConfigMap", "v1", "upload", "x; rm -rf ~"))
    objects[-1]["metadata"]["labels"] = None
    commands = [s.delete_command for s in check(expected, objects).subjects if s.delete_command]
    assert commands == [
        "kubectl --context kube-sjc-a delete -n upload 'configmap/x; rm -rf ~'",
        "kubectl --context kube-sjc-a delete -n upload configmap/ours",
    ]


# ---------------------------------------------------------------- evidence that is missing or bad


def test_clusters_without_a_dump_are_not_checked_and_fail_unless_partial(
    tree: dict[str, bytes], dumps: Callable[..., list[str]]
) -> None:
    args = dumps()[:2]  # gke-usc1-a only
    result = meshc(*args, "--format", "json")
    assert result.returncode == 1
    scopes = {s["scope"]: (s["state"], s["failing"]) for s in json.loads(result.stdout)["scopes"]}
    assert scopes == {
        "gke-usc1-a": (CONVERGED, False),
        "kube-iad-a": (NOT_CHECKED, True),
        SJC: (NOT_CHECKED, True),
        "puppetdb": (NOT_CHECKED, True),
    }
    partial = meshc(*args, "--partial")
    assert partial.returncode == 0, partial.stdout
    assert (
        "3 not checked (--partial)" in partial.stdout and "not checked: no evidence given" in partial.stdout
    )


MALFORMED_DUMPS: list[tuple[bytes, str]] = [
    (
        b"apiVersion: v1\nitems:\n- kind: ConfigMap\n  metadata: {name: x\n",
        r"live\.yaml:\d+:\d+: error: invalid YAML: ",
    ),
    (
        b'{"apiVersion": "v1", "kind": "List", "items": [{"kind": "Conf',
        r"live\.yaml:1:\d+: error: invalid JSON: ",
    ),
    (
        b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
        r"live\.yaml:1:1: error: not a kubectl List \(found 'ConfigMap'\)",
    ),
    (b"- 1\n- 2\n", r"live\.yaml:1:1: error: not a kubectl List \(found 'list'\)"),
    (b"", r"live\.yaml: error: not a kubectl List \(found 'NoneType'\)"),
    (
        b"kind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {namespace: a}\n",
        r"live\.yaml:5:13: error: items\[0\] \(ConfigMap\): lacks metadata\.name",  # at the metadata that lacks it
    ),
    (
        b"kind: List\nitems:\n- metadata: {name: a}\n",
        r"live\.yaml:3:3: error: items\[0\]: lacks apiVersion or kind",
    ),
    (  # JSON has positions too (found again in the text: orjson keeps none)
        b'{"apiVersion": "v1", "kind": "List",\n "items": [\n  {"kind": "ConfigMap"}]}\n',
        r"live\.yaml:3:3: error: items\[0\]: lacks apiVersion or kind",
    ),
    (
        b"kind: List\nitems:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: a, labels: [x]}}\n",
        r"live\.yaml:3:65: error: .*metadata\.labels is not a map of strings",
    ),
    (
        b"kind: List\nitems:\n"
        b"- {apiVersion: v1, kind: Namespace, metadata: {name: a}}\n"
        b"- {apiVersion: v1, kind: Namespace, metadata: {name: a}}\n",
        r"live\.yaml:4:3: error: items\[1\]: Namespace/_/a appears twice",
    ),
    (
        b"kind: List\nitems: &a [*a]\n",
        r"live\.yaml:2:\d+: error: YAML anchors and aliases are not allowed",
    ),
    (
        b"kind: List\nitems:\n- &x {a: b}\n- *x\n",
        r"live\.yaml:3:\d+: error: YAML anchors and aliases are not allowed",
    ),
    (
        b"kind: List\nitems:\n- ? [a]\n  : b\n",
        r"live\.yaml:3:5: error: a mapping key that is not a scalar",
    ),
    # tags on collections are ignored (never run), tags on scalars go through the safe constructor
    (
        b"kind: List\nitems:\n- !!python/object:os.system {}\n",
        r"live\.yaml:3:3: error: items\[0\]: lacks apiVersion or kind",
    ),
    (
        b"kind: List\nitems:\n- {apiVersion: !!python/name:os.system '', kind: X}\n",
        r"live\.yaml:3:\d+: error: invalid YAML: could not determine a constructor",
    ),
    # scalars the safe constructor's int() or datetime() refuse: once `internal error: ValueError`, exit 3
    (
        b"kind: List\nitems:\n- {apiVersion: v1, kind: X, metadata: {name: a}, n: 1" + b"0" * 5000 + b"}\n",
        r"live\.yaml:3:53: error: cannot read 10{62}… as a YAML int; kubectl writes none like it",
    ),
    (
        b"kind: List\nitems:\n- {apiVersion: v1, kind: X, metadata: {name: a}, at: 2026-13-01}\n",
        r"live\.yaml:3:54: error: cannot read 2026-13-01 as a YAML timestamp",
    ),
    (b"kind: List\nitems: [\xff\xfe]\n", r"live\.yaml:2:9: error: byte 0xff is not UTF-8"),
    (
        b"kind: List\nitems: " + b"[" * 100_000,
        r"live\.yaml(:\d+:\d+)?: error: (invalid YAML|YAML nested too deeply)",
    ),
]


@pytest.mark.parametrize(("content", "message"), MALFORMED_DUMPS)
def test_malformed_dumps_are_one_line_errors(tmp_path: Path, content: bytes, message: str) -> None:
    """What `meshc drift` prints for each malformed dump (the command line prints the error as it is: below)."""
    path = tmp_path / "live.yaml"
    with pytest.raises(DumpError) as raised:
        parse_dump(str(path), content)
    [line] = str(raised.value).splitlines()
    assert line.startswith(str(path)) and line.endswith("[drift-dump]"), line
    assert re.search(message.replace("live\\.yaml", re.escape(str(path))), line), line


def test_a_dump_path_with_control_characters_is_escaped_in_its_error(tmp_path: Path) -> None:
    path = tmp_path / "live\tsjc\n.yaml"
    with pytest.raises(DumpError) as raised:
        parse_dump(str(path), b"- 1\n")
    assert str(raised.value).startswith(str(tmp_path) + "/live\\tsjc\\n.yaml:1:1: error: not a kubectl List")


# Through the command line: a YAML error with its position, and a List check after parsing.
@pytest.mark.parametrize(("content", "message"), [MALFORMED_DUMPS[0], MALFORMED_DUMPS[3]])
def test_a_malformed_dump_exits_2_with_one_line(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "live.yaml"
    path.write_bytes(content)
    result = meshc("--kubernetes", f"{SJC}={path}")
    assert result.returncode == 2 and result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith(str(path)) and line.endswith("[drift-dump]"), line
    assert re.search(message.replace("live\\.yaml", re.escape(str(path))), line), line


def test_a_dump_over_the_size_cap_is_refused_without_reading_it(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("wb") as handle:
        handle.truncate((1 << 30) + 1)  # sparse: 1 GiB + 1 byte, nothing written
    result = meshc("--kubernetes", f"{SJC}={path}")
    assert result.returncode == 2
    assert (
        result.stderr
        == f"{path}: error: larger than 1024 MiB; is this a kubectl dump of one cluster?  [drift-dump]\n"
    )


def test_bad_cluster_arguments_exit_2(tmp_path: Path, dumps: Callable[..., list[str]]) -> None:
    args = dumps()
    unknown = meshc("--kubernetes", f"kube-sjc-b={tmp_path / 'x.yaml'}")
    assert unknown.returncode == 2
    assert (
        unknown.stderr.startswith("--kubernetes kube-sjc-b=")
        and "no cluster 'kube-sjc-b' (did you mean 'kube-sjc-a'?)" in unknown.stderr
    )
    twice = meshc(*args, "--kubernetes", f"{SJC}={tmp_path / f'{SJC}.yaml'}")
    assert twice.returncode == 2 and "given twice" in twice.stderr
    nothing = meshc()
    assert nothing.returncode == 2 and "nothing to check" in nothing.stderr
    absent = meshc("--kubernetes", f"{SJC}={tmp_path / 'absent.yaml'}")
    assert absent.returncode == 2 and absent.stderr.strip().endswith(
        "No such file or directory  [drift-dump]"
    )
    wrong = meshc("--kubernetes", f"kube-iad-a={tmp_path / f'{SJC}.yaml'}", "--partial")
    assert wrong.returncode == 2 and "belong to 'kube-sjc-a'" in wrong.stderr, wrong.stderr
    assert meshc("--kubernetes", "no-equals-sign").returncode == 2


# ---------------------------------------------------------------- acknowledgements


def write_acks(tmp_path: Path, entries: str) -> Path:
    path = tmp_path / "acks.yaml"
    path.write_text("acknowledgements:\n" + entries)
    return path


def extra_key(objects: list[dict[str, Any]]) -> None:
    find(objects, "ConfigMap", "upload", "upload-mesh-envoy")["data"]["debug.json"] = "{}"


def test_acknowledged_drift_passes_until_it_expires(tmp_path: Path, dumps: Callable[..., list[str]]) -> None:
    acks = write_acks(
        tmp_path,
        '  - match: "kubernetes/kube-sjc-a/ConfigMap/upload/*#extra:data[debug.json]"\n'
        "    reason: INC-4711 debug listener\n    expires: 2026-12-31\n"
        "  - match: kubernetes/nowhere/*\n    reason: stale\n    expires: 2027-01-01\n",
    )
    args = [*dumps(extra_key), "--partial", "--acknowledgements", str(acks), "--format", "json"]
    result = meshc(*args, today="2026-12-31")  # the expiry day itself still holds
    assert result.returncode == 0, result.stdout[-2000:]
    data = json.loads(result.stdout)
    [subject] = data["subjects"]
    assert (
        subject["state"] == ACKNOWLEDGED and subject["items"][0]["acknowledged"] == "INC-4711 debug listener"
    )
    assert [(a["used"], a["expired"]) for a in data["acknowledgements"]] == [(True, False), (False, False)]
    expired = meshc(*args, today="2027-01-01")
    assert expired.returncode == 1
    data = json.loads(expired.stdout)
    assert [(f["kind"], f["subject"]) for f in data["findings"]] == [
        ("expired-acknowledgement", f"{acks}:2:5")
    ]
    assert data["subjects"][0]["state"] == "drifted"
    text = meshc(*args[:-2], today="2027-01-01").stdout
    assert f"{acks}:2:5: error: acknowledgement" in text and "expired on 2026-12-31" in text


@pytest.mark.parametrize(
    ("entries", "position", "message"),
    [
        (
            "  - match: x\n    reason: y\n    expires: 2026-13-01\n",
            "4:14",
            "`expires` must be a date written YYYY-MM-DD",
        ),
        ("  - match: x\n    reason: y\n", "2:5", "exactly the keys match, reason, expires"),
        (
            "  - match: x\n    reason: ''\n    expires: 2026-12-01\n",
            "3:13",
            "`reason` must be a non-empty string",
        ),
        (
            "  - match: [x\n",
            "2:14",
            "invalid YAML",
        ),  # a syntax error at the end of a file points at its last line
    ],
)
def test_malformed_acknowledgements_exit_2_with_a_position(
    tmp_path: Path, dumps: Callable[..., list[str]], entries: str, position: str, message: str
) -> None:
    acks = write_acks(tmp_path, entries)
    result = meshc(*dumps(), "--acknowledgements", str(acks))
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert (
        line.startswith(f"{acks}:{position}") and message in line and line.endswith("[drift-acknowledgement]")
    ), line


def test_every_malformed_acknowledgement_is_named_in_one_run(
    tmp_path: Path, dumps: Callable[..., list[str]]
) -> None:
    """Three bad entries between good ones: three lines, each at its entry, exit 2 (one a run took three runs)."""
    good = "  - match: ok\n    reason: fine\n    expires: 2026-12-01\n"
    acks = write_acks(
        tmp_path,
        good
        + "  - match: ''\n    reason: y\n    expires: 2026-02-30\n"
        + good
        + "  - match: x\n    reason: y\n",
    )
    result = meshc(*dumps(), "--acknowledgements", str(acks))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"{acks}:5:12: error: `match` must be a non-empty string  [drift-acknowledgement]",
        f"{acks}:7:14: error: `expires` must be a date written YYYY-MM-DD, not '2026-02-30'  [drift-acknowledgement]",
        f"{acks}:11:5: error: an acknowledgement has exactly the keys match, reason, expires (found match, reason; "
        "add expires)  [drift-acknowledgement]",
    ]


@pytest.mark.parametrize(
    ("entry", "problems"),
    [
        pytest.param(  # the key problem does not hide the value's
            "{match: x, reason: y, expires: 2026-13-01, until: 2027-01-01}",
            [
                (
                    "2:5",
                    "an acknowledgement has exactly the keys match, reason, expires (found expires, match, "
                    "reason, until; remove until)",
                ),
                ("2:36", "`expires` must be a date written YYYY-MM-DD, not '2026-13-01'"),
            ],
            id="extra-key-and-bad-date",
        ),
        pytest.param(
            "{match: x, reason: y, expires: 99999999999999999999999999}",
            [("2:36", "`expires` must be a date written YYYY-MM-DD, not 99999999999999999999999999")],
            id="huge-number",
        ),
        pytest.param(
            "{match: x, reason: y, expires: [2026-12-01]}",
            [("2:36", "`expires` must be a date written YYYY-MM-DD, not a list")],
            id="list-date",
        ),
        pytest.param(
            "{match: x, reason: , expires: }",
            [
                ("2:16", "`reason` has no value; it needs a non-empty string"),
                ("2:26", "`expires` has no value; it needs a date written YYYY-MM-DD"),
            ],
            id="empty-values",
        ),
        pytest.param(
            "{match: 42, reason: y, expires: 2026-12-01}",
            [("2:13", "`match` must be a non-empty string, not a number; if you mean the text 42, quote it")],
            id="number-match",
        ),
        pytest.param(
            "just a string",
            [("2:5", "an acknowledgement has exactly the keys match, reason, expires (found a string)")],
            id="string-entry",
        ),
        pytest.param(
            "{}",
            [
                (
                    "2:5",
                    "an acknowledgement has exactly the keys match, reason, expires (found no keys; add match, "
                    "reason, expires)",
                )
            ],
            id="empty-entry",
        ),
    ],
)
def test_acknowledgement_problems_in_yaml_words(entry: str, problems: list[tuple[str, str]]) -> None:
    """Every problem of an entry, each in YAML's words (keys as written, a value's kind), never Python's."""
    from compiler.drift.acknowledge import AcknowledgementError, read_acknowledgements

    raw = f"acknowledgements:\n  - {entry}\n".encode()
    with pytest.raises(AcknowledgementError) as caught:
        read_acknowledgements("acks.yaml", raw, datetime.date(2026, 1, 1))
    assert list(caught.value.problems) == [(f"acks.yaml:{where}", message) for where, message in problems]


def test_spec_acknowledgements_file_is_read_by_default(tmp_path: Path, tree: dict[str, bytes]) -> None:
    import shutil

    spec = tmp_path / "spec"
    shutil.copytree(EXAMPLE, spec)
    (spec / "drift-acknowledgements.yaml").write_text("acknowledgements: []\n")
    from compiler.drift.detect import DriftRequest, detect_drift

    objects = live_objects(tree, SJC)
    dump = tmp_path / "sjc.yaml"
    dump.write_text(dump_yaml(objects))
    report = detect_drift(
        DriftRequest(spec=spec, kubernetes=((SJC, dump),), today=datetime.date(2026, 11, 30), partial=True)
    )
    assert not report.failing and report.acknowledgements == ()
    (spec / "drift-acknowledgements.yaml").write_text(
        "acknowledgements:\n  - {match: '*', reason: all, expires: 2026-11-01}\n"
    )
    report = detect_drift(
        DriftRequest(spec=spec, kubernetes=((SJC, dump),), today=datetime.date(2026, 11, 30), partial=True)
    )
    assert report.failing and [f.kind for f in report.findings] == ["expired-acknowledgement"]


# ---------------------------------------------------------------- formats and waves


def test_text_and_markdown_name_every_finding(tree: dict[str, bytes], expected: Expected) -> None:
    objects = live_objects(tree, SJC)
    extra_key(objects)
    objects.append(orphan("box", SJC, "ConfigMap", "v1", "upload", "old-config"))
    report = check(expected, objects)
    text, markdown = format_text(report), format_markdown(report)
    for output in (text, markdown):
        assert "ConfigMap/upload/upload-mesh-envoy" in output and "data[debug.json]" in output
        assert "kubectl --context kube-sjc-a delete -n upload configmap/old-config" in output
    assert (
        markdown.startswith("### meshc drift: NOT CONVERGED")
        and "| `kubernetes: kube-sjc-a` | **drifted** |" in markdown
    )


def test_markdown_is_cut_under_the_comment_limit_with_a_note(
    tree: dict[str, bytes], expected: Expected, monkeypatch: pytest.MonkeyPatch
) -> None:
    from compiler.drift import report as drift_report

    # every ConfigMap missing
    report = check(expected, [o for o in live_objects(tree, SJC) if o["kind"] != "ConfigMap"])
    missing = sum(s.state != CONVERGED for s in report.subjects)
    monkeypatch.setattr(drift_report, "MARKDOWN_BUDGET", 2_000)
    markdown = format_markdown(report)
    shown = markdown.count("<details>")
    assert 0 < shown < missing and f"_{missing - shown} subject(s) left out to fit a comment" in markdown
    assert "| `kubernetes: kube-sjc-a` | **drifted** |" in markdown  # the table still counts them all


def test_summaries_group_targets_by_wave_from_the_manifest(tree: dict[str, bytes]) -> None:
    manifest = json.loads(tree["MANIFEST.json"])
    targets = sorted(t for t in manifest["targets"] if t.startswith(f"k8s/{SJC}/"))
    manifest["rollout"] = {
        "targets": {
            t: {"wave": "canary" if t.endswith("/upload") else "rest", "revision": "abc"} for t in targets
        }
    }
    rolled = {**tree, "MANIFEST.json": json.dumps(manifest).encode()}
    objects = live_objects(tree, SJC)
    extra_key(objects)
    dump = parse_dump("live.yaml", dump_yaml(objects).encode())
    report = assemble_report([check_cluster("box", SJC, expected_objects(tree)[SJC], dump)], [], tree=rolled)
    waves = {w["wave"]: (w["converged"], w["targets"], w["state"]) for w in report_data(report)["waves"]}
    canary = sum(t.endswith("/upload") for t in targets)
    # canary: upload's workload (its ConfigMap drifted) and upload's discovery reader (converged)
    assert canary == 2 and waves == {
        "canary": (1, 2, "drifted"),
        "rest": (len(targets) - 2, len(targets) - 2, CONVERGED),
    }
    assert "canary" in format_text(report)


def test_json_report_is_stable(dumps: Callable[..., list[str]]) -> None:
    args = dumps(extra_key)
    command = [sys.executable, "-m", "compiler", "drift", EXAMPLE, *args, "--format", "json"]
    runs = run_under_seeds(dict.fromkeys(("0", "1"), command), env={"MESHC_TODAY": "2026-11-30"}, timeout=120)
    first, second = runs["0"], runs["1"]
    assert "Traceback" not in first.stderr + second.stderr
    assert first.stdout == second.stdout
    data = json.loads(first.stdout)
    assert set(data) == {
        "format",
        "failing",
        "partial",
        "today",
        "scopes",
        "waves",
        "targets",
        "subjects",
        "findings",
        "orphan_commands",
        "acknowledgements",
    }
    assert data["format"] == 1 and data["today"] == "2026-11-30"
    [item] = data["subjects"][0]["items"]
    assert set(item) == {
        "id",
        "kind",
        "platform",
        "scope",
        "subject",
        "target",
        "path",
        "expected",
        "live",
        "detail",
        "acknowledged",
    }


@pytest.mark.consumer
def test_live_fixtures_are_valid_kubernetes_objects(
    tree: dict[str, bytes],
    schemas: Schemas,  # noqa: F811 - the fixture imported above
) -> None:
    """Every field the fixture rules add is a real field of Kubernetes 1.32 (or the Certificate CRD), spelled right."""
    objects = [o for cluster in CLUSTERS for o in live_objects(tree, cluster)]
    failures = {
        f"{o['kind']}/{o['metadata'].get('namespace', '_')}/{o['metadata']['name']}": errors
        for o in objects
        if (errors := schemas.errors(o))
    }
    assert failures == {}
    assert {o["kind"] for o in objects} >= {
        "Namespace",
        "ServiceAccount",
        "Secret",
        "Service",
        "ConfigMap",
        "Certificate",
        "ClusterRole",
        "RoleBinding",
        "NetworkPolicy",
    }


def test_a_live_key_with_control_characters_is_reported_escaped(
    tree: dict[str, bytes], expected: Expected
) -> None:
    # A doctored dump's key reached the operator's terminal raw (ESC [2J clears the screen).
    objects = live_objects(tree, SJC)
    find(objects, "ConfigMap", "upload", "upload-mesh-envoy")["data"]["evil\x1b[2J"] = "x"
    assert sorted(items(check(expected, objects))) == [
        (EXTRA, "ConfigMap/upload/upload-mesh-envoy", "data[evil\\x1b[2J]", None, "x")
    ]


def test_the_objects_a_build_holds_are_what_its_kubernetes_files_say(
    example_build: Build, example_truth: tuple[dict[str, bytes], dict[str, Any]], tmp_path: Path
) -> None:
    """Drift compares the live objects with the objects the build serialized (Artifact.value), not with a parse of
    the bytes: the two must agree on every Kubernetes file, types included (the example's plain build and rollout
    build, and a 150-service synthetic mesh's: readers, workloads of every kind, NetworkPolicies)."""
    from benchmarks.synth import generate

    synthetic = compile_dir(generate(tmp_path / "spec", 150))
    rollout_tree, rollout_values = example_truth
    files = [(a.path, a.data, a.value) for build in (example_build, synthetic) for a in build.artifacts]
    files += [(path, rollout_tree[path], value) for path, value in rollout_values.items()]
    checked = 0
    for path, data, value in files:
        if path.startswith("kubernetes/"):
            parsed = _load_output(path, data)
            assert parsed == list(value), path
            assert orjson.dumps(parsed) == orjson.dumps(list(value)), path  # True is not 1
            checked += 1
    assert checked > 1000
    assert {p for p in rollout_tree if p.startswith("kubernetes/")} == {
        p for p in rollout_values if p.startswith("kubernetes/")
    }


@pytest.mark.parametrize("rollout", [True, False], ids=["rollout", "plain"])
def test_drift_reads_no_file_of_its_own_rendering(
    tmp_path: Path,
    example_output: dict[str, bytes],
    example_build: Build,
    monkeypatch: pytest.MonkeyPatch,
    rollout: bool,
) -> None:
    """The truth's objects come from the build (the rollout build's, with a rollout): drift parses the dumps, never
    its own files."""
    import shutil

    from compiler.drift import kubernetes

    spec = EXAMPLE
    tree = example_output
    if not rollout:
        spec = tmp_path / "plain-spec"
        shutil.copytree(EXAMPLE, spec, ignore=shutil.ignore_patterns("rollout.yaml"))
        tree = example_build.tree()
    cluster = "kube-sjc-a"
    dump = tmp_path / "sjc.json"
    dump.write_text(
        dump_json(live_objects(tree, cluster))
    )  # what kube-applier made of exactly this rendering

    def refuse(path: str, data: bytes) -> list[Any]:
        raise AssertionError(f"drift parsed its own rendering of {path}")

    monkeypatch.setattr(kubernetes, "_load_output", refuse)
    result = meshc_in_process("drift", str(spec), "--kubernetes", f"{cluster}={dump}", "--partial")
    assert result.returncode == 0, result.stdout + result.stderr
