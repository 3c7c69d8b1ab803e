"""The semantic differ on hand-made data: value paths, name matching, targets, restart classes, groups."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
import yaml

from compiler.diff import (
    ADDED,
    CHANGED,
    REMOVED,
    Change,
    NotCanonical,
    diff_builds,
    diff_canonical_yaml,
    diff_file,
    diff_values,
    group,
    kube_deletions,
    load_canonical_yaml,
    object_heads,
    parse_file,
    stream_documents,
)
from compiler.emit import Artifact, dump_json, dump_yaml
from compiler.ir.lower import lower
from compiler.pipeline import Build, validate_only
from compiler.render import ENVOY_BOOTSTRAP, ENVOY_CDS, ENVOY_LDS, NERVE, SYNAPSE, SidecarConfig
from compiler.render.restart import RestartClass
from compiler.spec.load import read_tree
from tests.conftest import EXAMPLE


def test_paths_name_named_list_items_not_their_index() -> None:
    old = {
        "clusters": [
            {"name": "auth"},
            {"name": "metadata", "circuit_breakers": {"thresholds": [{"max_requests": 1024}]}},
        ]
    }
    new = {
        "clusters": [
            {"name": "audit"},
            {"name": "auth"},
            {"name": "metadata", "circuit_breakers": {"thresholds": [{"max_requests": 2048}]}},
        ]
    }
    assert diff_values(old, new) == (
        Change(
            path="clusters[metadata].circuit_breakers.thresholds[0].max_requests",
            kind=CHANGED,
            old=1024,
            new=2048,
        ),
        Change(path="clusters[audit]", kind=ADDED, new={"name": "audit"}),
    )


@pytest.mark.parametrize(
    ("items", "label"),
    [
        ([{"service": "a", "timeout": "1s"}, {"service": "b", "timeout": "15s"}], "service=b"),
        ([{"cluster_name": "a", "timeout": "1s"}, {"cluster_name": "b", "timeout": "15s"}], "cluster_name=b"),
        (
            [
                {"kind": "Service", "metadata": {"name": "b", "namespace": "n"}, "timeout": "1s"},
                {"kind": "ConfigMap", "metadata": {"name": "b", "namespace": "n"}, "timeout": "15s"},
            ],
            "ConfigMap/n/b",
        ),
        (
            [
                {"@type": "type.googleapis.com/x.A", "timeout": "1s"},
                {"@type": "type.googleapis.com/x.B", "timeout": "15s"},
            ],
            "@type=type.googleapis.com/x.B",
        ),
    ],
)
def test_lists_match_by_their_naming_key(items: list, label: str) -> None:
    changed = [dict(items[1], timeout="2s"), dict(items[0])]  # reordered too: order must not matter
    assert diff_values({"l": items}, {"l": changed}) == (
        Change(path=f"l[{label}].timeout", kind=CHANGED, old="15s", new="2s"),
    )


def test_duplicate_names_fall_back_to_index() -> None:
    old = [{"name": "x", "v": 1}, {"name": "x", "v": 2}]
    new = [{"name": "x", "v": 1}, {"name": "x", "v": 3}, {"name": "y"}]
    assert diff_values(old, new) == (
        Change(path="[1].v", kind=CHANGED, old=2, new=3),
        Change(path="[2]", kind=ADDED, new={"name": "y"}),
    )


def test_unnamed_items_are_aligned_by_content_so_an_insertion_is_one_change() -> None:
    old = {"routes": [{"match": {"prefix": "/a"}}, {"match": {"prefix": "/c"}}]}
    new = {"routes": [{"match": {"prefix": "/a"}}, {"match": {"prefix": "/b"}}, {"match": {"prefix": "/c"}}]}
    assert diff_values(old, new) == (Change(path="routes[1]", kind=ADDED, new={"match": {"prefix": "/b"}}),)
    thresholds = {"thresholds": [{"priority": "DEFAULT", "max_requests": 1024}]}
    assert diff_values(thresholds, {"thresholds": [{"priority": "DEFAULT", "max_requests": 2048}]}) == (
        Change(path="thresholds[0].max_requests", kind=CHANGED, old=1024, new=2048),
    )


def _principal(name: str) -> dict:
    return {"authenticated": {"principal_name": {"exact": f"spiffe://box.mesh/ns/{name}/sa/{name}"}}}


def test_principals_are_matched_by_value_not_by_position() -> None:
    """An RBAC policy's principals are alternatives of an OR: adding a client is one added principal,
    and replacing one client by another is a removal and an addition, never `principals[0]….exact: a → b`."""
    path = "policies.mesh-clients.principals"
    old = {"policies": {"mesh-clients": {"principals": [_principal("a"), _principal("c"), _principal("d")]}}}
    new = {
        "policies": {
            "mesh-clients": {
                "principals": [_principal("a"), _principal("b"), _principal("c"), _principal("d")]
            }
        }
    }
    assert diff_values(old, new) == (Change(path=path, kind=ADDED, new=_principal("b")),)
    swapped = {
        "policies": {"mesh-clients": {"principals": [_principal("b"), _principal("c"), _principal("d")]}}
    }
    assert diff_values(old, swapped) == (
        Change(path=path, kind=REMOVED, old=_principal("a")),
        Change(path=path, kind=ADDED, new=_principal("b")),
    )
    reordered = {
        "policies": {"mesh-clients": {"principals": [_principal("c"), _principal("a"), _principal("d")]}}
    }
    assert [c.kind for c in diff_values(old, reordered)] == [CHANGED]
    peers = {
        "from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}, {"namespaceSelector": {"matchLabels": {"n": "a"}}}]
    }
    assert diff_values({"from": peers["from"][1:]}, peers) == (
        Change(path="from", kind=ADDED, new={"ipBlock": {"cidr": "10.0.0.0/8"}}),
    )


def test_lists_of_unique_scalars_are_sets_but_reordering_is_reported() -> None:
    old = {"allowed": ["spiffe://a", "spiffe://b"]}
    assert diff_values(old, {"allowed": ["spiffe://c", "spiffe://a"]}) == (
        Change(path="allowed", kind=REMOVED, old="spiffe://b"),
        Change(path="allowed", kind=ADDED, new="spiffe://c"),
    )
    assert diff_values({"failover": ["iad", "sjc"]}, {"failover": ["sjc", "iad"]}) == (
        Change(path="failover", kind=CHANGED, old=["iad", "sjc"], new=["sjc", "iad"]),
    )


def test_json_text_inside_a_string_is_diffed_structurally() -> None:
    old = {"data": {"lds.json": json.dumps({"resources": [{"name": "egress", "port": 1}]})}}
    new = {"data": {"lds.json": json.dumps({"resources": [{"name": "egress", "port": 2}]})}}
    assert diff_values(old, new) == (
        Change(path='data["lds.json"].resources[egress].port', kind=CHANGED, old=1, new=2),
    )


def test_type_changes_are_changes_and_keys_that_are_not_names_are_quoted() -> None:
    assert diff_values({"a": "1"}, {"a": 1}) == (Change(path="a", kind=CHANGED, old="1", new=1),)
    assert diff_values({"mesh::x": {}}, {"mesh::x": {"k.y": None}}) == (
        Change(path='["mesh::x"]["k.y"]', kind=ADDED, new=None),
    )
    assert diff_values(1, 2) == (Change(path=".", kind=CHANGED, old=1, new=2),)
    assert diff_values({"a": [1, {"b": 1}]}, {"a": [1, {"b": 1}]}) == ()


def test_output_files_parse_by_extension() -> None:
    assert parse_file("x.json", b'{"a": 1}') == ({"a": 1},)
    assert parse_file("x.yaml", b"a: 1\n---\nb: 2\n") == ([{"a": 1}, {"b": 2}],)
    assert parse_file("x.yaml", b"a: [\n") is None
    assert parse_file("init.pp", b"class mesh {}") is None


# ---------------------------------------------------------------- builds made by hand


@pytest.fixture(scope="module")
def base_build() -> Build:
    """The example spec and IR, with small hand-made sidecars and artifacts for three workloads."""
    spec = validate_only(read_tree(EXAMPLE), "mesh-spec")
    mesh = lower(spec)
    chosen = [
        w
        for w in mesh.workloads
        if w.id in ("vm/auth/sjc", "vm/auth/iad", "k8s/kube-sjc-a/metadata/metadata")
    ]
    sidecars = {w.id: SidecarConfig(workload=w, documents=_documents(w.platform)) for w in chosen}
    artifacts = (
        Artifact(path="puppet/manifests/init.pp", data=b"class mesh {\n  # one\n}\n"),
        Artifact(
            path="puppet/data/vm/auth/sjc.yaml", data=dump_yaml({"mesh::port": 18080}), target="vm/auth/sjc"
        ),
        Artifact(
            path="kubernetes/kube-sjc-a/metadata/cm.yaml",
            target="k8s/kube-sjc-a/metadata/metadata",
            data=dump_yaml({"kind": "ConfigMap", "data": {"lds.json": dump_json(_lds(1024)).decode()}}),
        ),
    )
    return Build(spec=spec, mesh=mesh, sidecars=sidecars, artifacts=artifacts)


def _lds(max_requests: int) -> dict:
    return {
        "resources": [
            {"name": "egress-a", "max_requests": max_requests},
            {"name": "egress-b", "max_requests": 1},
        ]
    }


def _documents(platform: str, **changes: object) -> dict:
    docs = {
        ENVOY_BOOTSTRAP: {"admin": {"port": 9901}},
        ENVOY_LDS: _lds(1024),
        ENVOY_CDS: {"resources": []},
        SYNAPSE: {"services": {}},
    }
    if platform == "vm":
        docs[NERVE] = {"services": {}}
    return {**docs, **changes}


def _with(build: Build, sidecars: dict | None = None, artifacts: tuple | None = None) -> Build:
    return Build(
        spec=build.spec,
        mesh=build.mesh,
        sidecars=sidecars if sidecars is not None else build.sidecars,
        artifacts=artifacts if artifacts is not None else build.artifacts,
    )


def test_identical_builds_have_no_diff(base_build: Build) -> None:
    result = diff_builds(base_build, base_build)
    assert (result.targets, result.shared, result.spec, result.changed, result.restarts) == (
        (),
        (),
        (),
        False,
        0,
    )


def test_each_document_costs_its_restart_class(base_build: Build) -> None:
    sidecars = dict(base_build.sidecars)
    auth_sjc, auth_iad, metadata = (
        sidecars[t].workload for t in ("vm/auth/sjc", "vm/auth/iad", "k8s/kube-sjc-a/metadata/metadata")
    )
    sidecars["vm/auth/sjc"] = SidecarConfig(
        workload=auth_sjc, documents=_documents("vm", **{ENVOY_BOOTSTRAP: {"admin": {"port": 9902}}})
    )
    # a Synapse process setting (not `services`, which the fork reloads live)
    sidecars["vm/auth/iad"] = SidecarConfig(
        workload=auth_iad,
        documents=_documents("vm", **{SYNAPSE: {"services": {}, "file_output": {"output_directory": "/x"}}}),
    )
    sidecars["k8s/kube-sjc-a/metadata/metadata"] = SidecarConfig(
        workload=metadata, documents=_documents("kubernetes", **{ENVOY_LDS: _lds(2048)})
    )
    result = diff_builds(base_build, _with(base_build, sidecars=sidecars))
    assert {t.target: t.restart for t in result.targets} == {
        "vm/auth/sjc": RestartClass.ENVOY_RESTART,
        "vm/auth/iad": RestartClass.SIDECAR_RESTART,
        "k8s/kube-sjc-a/metadata/metadata": RestartClass.HOT_RELOAD,
    }
    assert result.restarts == 2
    lds = result.targets[0].documents[0]
    assert (result.targets[0].target, lds.name, lds.restart) == (
        "k8s/kube-sjc-a/metadata/metadata",
        ENVOY_LDS,
        RestartClass.HOT_RELOAD,
    )
    assert lds.changes == (Change(path="resources[egress-a].max_requests", kind=CHANGED, old=1024, new=2048),)
    assert [
        (g.platform, g.datacenter, g.targets, g.envoy_restart, g.sidecar_restart, g.hot_reload)
        for g in result.groups
    ] == [
        ("kubernetes", "sjc", ("k8s/kube-sjc-a/metadata/metadata",), 0, 0, 1),
        ("vm", "iad", ("vm/auth/iad",), 0, 1, 0),
        ("vm", "sjc", ("vm/auth/sjc",), 1, 0, 0),
    ]


def test_file_changes_that_repeat_a_document_change_are_counted_not_listed(base_build: Build) -> None:
    metadata = base_build.sidecars["k8s/kube-sjc-a/metadata/metadata"].workload
    sidecars = {
        **base_build.sidecars,
        metadata.id: SidecarConfig(
            workload=metadata, documents=_documents("kubernetes", **{ENVOY_LDS: _lds(2048)})
        ),
    }
    configmap = {
        "kind": "ConfigMap",
        "metadata": {"annotations": {"hash": "b"}},
        "data": {"lds.json": dump_json(_lds(2048)).decode()},
    }
    artifacts = tuple(
        a if "cm.yaml" not in a.path else Artifact(path=a.path, target=a.target, data=dump_yaml(configmap))
        for a in base_build.artifacts
    )
    (target,) = diff_builds(base_build, _with(base_build, sidecars=sidecars, artifacts=artifacts)).targets
    (file,) = target.files
    assert (file.mirrored, file.changes) == (
        1,
        (Change(path="metadata", kind=ADDED, new={"annotations": {"hash": "b"}}),),
    )


def test_files_added_removed_and_text_files_and_targets_that_come_and_go(base_build: Build) -> None:
    auth_iad = base_build.sidecars["vm/auth/iad"].workload
    sidecars = {k: v for k, v in base_build.sidecars.items() if k != "vm/auth/sjc"}
    artifacts = (
        Artifact(path="puppet/manifests/init.pp", data=b"class mesh {\n  # two\n}\n"),
        Artifact(
            path="kubernetes/kube-sjc-a/metadata/cm.yaml",
            target="k8s/kube-sjc-a/metadata/metadata",
            data=base_build.artifacts[2].data,
        ),
        Artifact(
            path="puppet/data/vm/auth/iad.yaml", data=dump_yaml({"mesh::port": 18080}), target=auth_iad.id
        ),
    )
    result = diff_builds(base_build, _with(base_build, sidecars=sidecars, artifacts=artifacts))
    assert [(t.target, t.status, t.restart) for t in result.targets] == [
        ("vm/auth/iad", CHANGED, RestartClass.NONE),  # only an output file: apply, nothing restarts
        ("vm/auth/sjc", REMOVED, RestartClass.NONE),  # a stop restarts nothing that keeps running: "removed"
    ]
    assert [(f.name, f.status) for f in result.targets[0].files] == [("puppet/data/vm/auth/iad.yaml", ADDED)]
    assert [(d.name, d.status, d.restart) for d in result.targets[1].documents] == [
        (n, REMOVED, RestartClass.NONE) for n in sorted(_documents("vm"))
    ]
    (shared,) = result.shared
    assert (shared.name, shared.changes, shared.text[2:]) == (
        "puppet/manifests/init.pp",
        (),
        ("@@ -1,3 +1,3 @@", " class mesh {", "-  # one", "+  # two", " }"),
    )


def test_nothing_at_the_base_makes_every_target_new(base_build: Build) -> None:
    result = diff_builds(None, base_build, notes=("no base",))
    assert {t.target for t in result.targets} == set(base_build.sidecars)
    assert {t.status for t in result.targets} == {ADDED}
    assert [s.status for s in result.spec] == [ADDED] * len(base_build.spec.documents)
    assert result.notes == ("no base",)


def test_group_counts_every_restart_class(base_build: Build) -> None:
    result = diff_builds(None, base_build)
    assert group(result.targets) == result.groups
    assert sum(len(g.targets) for g in result.groups) == len(result.targets)
    assert all(
        len(g.targets)
        == g.added
        + g.removed
        + g.no_restart
        + g.hot_reload
        + g.sidecar_restart
        + g.envoy_restart
        + g.pod_roll
        for g in result.groups
    )
    assert all(g.added == len(g.targets) for g in result.groups)  # nothing at the base: every target is new


# ---------------------------------------------------------------- the canonical YAML reader


def _random_value(rnd: random.Random, depth: int = 0) -> object:
    alphabet = "ab_.-/:# \n\"'|>{}[]09yYnN\u2028\x85\x7f\ufeffé"

    def text() -> str:
        if rnd.random() < 0.25:
            return rnd.choice(
                [
                    "yes",
                    "no",
                    "on",
                    "null",
                    "true",
                    "1",
                    "0.5",
                    "x",
                    "-1",
                    "a b",
                    "",
                    "|",
                    "- a",
                    "a: b",
                    "#x",
                    "a\nb\n\n",
                ]
            )
        return "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 12)))

    roll = rnd.random()
    if depth < 4 and roll < 0.25:
        return {text(): _random_value(rnd, depth + 1) for _ in range(rnd.randint(0, 4))}
    if depth < 4 and roll < 0.45:
        return [_random_value(rnd, depth + 1) for _ in range(rnd.randint(0, 4))]
    return rnd.choice(
        [
            None,
            True,
            False,
            rnd.randint(-1000, 10**20),
            rnd.random() * 10 ** rnd.randint(-8, 8),
            text(),
            text(),
        ]
    )


def test_canonical_reader_reads_what_pyyaml_reads() -> None:
    rnd = random.Random(20261126)
    compared = 0
    for _ in range(3000):
        text = dump_yaml(_random_value(rnd)).decode()
        try:
            expected = yaml.load(text, Loader=yaml.CSafeLoader)
        except yaml.YAMLError:
            continue  # not ours to read then (emit's fuzz tests own what PyYAML accepts)
        assert repr(load_canonical_yaml(text)) == repr(expected), text
        compared += 1
    assert compared > 2900


def test_canonical_reader_reads_every_yaml_output_file(example_build: Build) -> None:
    read = 0
    for artifact in example_build.artifacts:
        if artifact.path.endswith(".yaml"):
            expected = _yaml_data(artifact.data)
            # the Kubernetes files: one document per object
            documents = stream_documents(artifact.data.decode())
            try:
                got = (
                    load_canonical_yaml(artifact.data.decode())
                    if documents is None
                    else [load_canonical_yaml(d) for d in documents]
                )
            except NotCanonical:
                continue
            assert repr(got) == repr(expected), artifact.path
            read += 1
    assert read >= len([a for a in example_build.artifacts if a.path.endswith(".yaml")]) - 3


@pytest.mark.parametrize(
    "text",
    [
        "a: 1\n# comment\nb: 2\n",
        "a: {b: 1}\n",
        "---\na: 1\n",
        "a:\n   b: 1\n",
        "a: 1 # note\n",
        "a: yes\n",
        "- - x\n",
        "a: 1",
    ],
)
def test_anything_else_is_not_canonical_and_parse_file_falls_back(text: str) -> None:
    with pytest.raises(NotCanonical):
        load_canonical_yaml(text)
    if text.endswith("\n"):
        assert parse_file("x.yaml", text.encode()) == (_yaml_data(text.encode()),)


def _yaml_data(data: bytes) -> Any:
    """What PyYAML reads: a document's data, or the documents of a stream opened by `---` (Kubernetes files)."""
    documents = list(yaml.load_all(data, Loader=yaml.CSafeLoader))
    return documents if data.startswith(b"---\n") else documents[0]


def test_text_is_coloured_only_when_asked_and_json_keeps_every_field(base_build: Build) -> None:
    from compiler.commands.diff_report import to_json
    from compiler.commands.diff_text import format_text

    result = diff_builds(None, base_build)
    assert "\033[" in format_text(result, color=True) and "\033[" not in format_text(result, color=False)
    data = to_json(result)
    assert data["summary"]["targets"] == len(result.targets) == len(data["targets"])
    assert set(data["targets"][0]) == {
        "target",
        "service",
        "platform",
        "datacenter",
        "cluster",
        "namespace",
        "status",
        "restart",
        "restart_sensitive",
        "sensitive_restart",
        "credentials",
        "documents",
        "files",
    }
    assert json.loads(json.dumps(data)) == data


def _mutate(value: object, rnd: random.Random) -> object:
    if isinstance(value, dict) and value and rnd.random() < 0.8:
        copy = dict(value)
        key = rnd.choice(list(copy))
        roll = rnd.random()
        if roll < 0.15:
            del copy[key]
        elif roll < 0.3:
            copy[f"new-{rnd.randint(0, 9)}"] = _random_value(rnd, 3)
        else:
            copy[key] = _mutate(copy[key], rnd)
        return copy
    if isinstance(value, list) and value and rnd.random() < 0.8:
        copy = list(value)
        index = rnd.randrange(len(copy))
        copy[index] = _mutate(copy[index], rnd)
        return copy
    return _random_value(rnd, 2)


def test_diffing_canonical_yaml_text_equals_diffing_the_data() -> None:
    rnd = random.Random(7)
    for _ in range(3000):
        old = {"a": _random_value(rnd, 1), "b": {"c": _random_value(rnd, 2), "d": [_random_value(rnd, 3)]}}
        new = _mutate(old, rnd)
        old_text, new_text = dump_yaml(old).decode(), dump_yaml(new).decode()
        assert diff_canonical_yaml(old_text, new_text) == diff_values(
            load_canonical_yaml(old_text), load_canonical_yaml(new_text)
        )


def test_diffing_output_files_as_text_equals_diffing_their_data(example_build: Build) -> None:
    from compiler.pipeline import compile

    files = read_tree(EXAMPLE)
    files["mesh.yaml"] = files["mesh.yaml"].replace(b"admin_port: 9901", b"admin_port: 9902")
    files["services/upload.yaml"] = files["services/upload.yaml"].replace(b"timeout: 2s", b"timeout: 3s")
    changed = {a.path: a.data for a in compile(files, "mesh-spec").artifacts}
    compared = candidates = 0
    for artifact in example_build.artifacts:
        after = changed.get(artifact.path)
        if artifact.path.endswith(".yaml") and after is not None and after != artifact.data:
            candidates += 1
            try:
                fast = diff_canonical_yaml(artifact.data.decode(), after.decode())
            except NotCanonical:
                continue
            assert fast == diff_values(_yaml_data(artifact.data), _yaml_data(after)), artifact.path
            compared += 1
    # every Kubernetes workload file changes (the bootstrap's admin port), and the fast path reads them all
    assert (
        compared == candidates >= len([w for w in example_build.mesh.workloads if w.platform == "kubernetes"])
    )


def test_external_reader_targets_are_placed_in_their_clusters_datacenter(example_build: Build) -> None:
    """A VM client that starts watching a cluster changes its reader grant (`k8s/<C>/meshc-discovery/<S>`)."""
    from compiler.pipeline import compile, spec_files

    files = spec_files(EXAMPLE)
    files["services/download.yaml"] += b"  - service: permissions\n"
    result = diff_builds(example_build, compile(files, "mesh-spec"))
    reader = next(t for t in result.targets if t.target == "k8s/kube-iad-a/meshc-discovery/download")
    assert (reader.platform, reader.cluster, reader.datacenter, reader.namespace) == (
        "kubernetes",
        "kube-iad-a",
        "iad",
        "meshc-discovery",
    )
    assert reader.restart is RestartClass.NONE
    assert all(g.datacenter != "?" for g in result.groups)


# ---------------------------------------------------------------- Kubernetes files: streams of objects


def _obj(
    kind: str, namespace: str | None, name: str, api: str = "v1", workload: str = "k8s/c/ns/svc", **body: Any
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        **({"namespace": namespace} if namespace else {}),
        "annotations": {"meshc.dev/workload": workload},
    }
    return {"apiVersion": api, "kind": kind, "metadata": meta, **body}


def _stream(*objects: dict[str, Any]) -> bytes:
    return b"".join(b"---\n" + dump_yaml(obj) for obj in objects)


RB = "rbac.authorization.k8s.io/v1"


def test_a_stream_of_objects_is_diffed_object_by_object() -> None:
    """Unchanged documents give nothing; a document added or removed is one change named `[kind/namespace/name]`."""
    old = _stream(
        _obj("ServiceAccount", "ns", "svc"),
        _obj("RoleBinding", "a", "grant", RB, roleRef={"name": "r"}),
        _obj(
            "ConfigMap",
            "ns",
            "svc-mesh-envoy",
            data={"lds.json": '{"resources": [{"name": "l", "port": 1}]}'},
        ),
    )
    new = _stream(
        _obj("ServiceAccount", "ns", "svc"),
        _obj("RoleBinding", "b", "grant", RB, roleRef={"name": "r"}),
        _obj(
            "ConfigMap",
            "ns",
            "svc-mesh-envoy",
            data={"lds.json": '{"resources": [{"name": "l", "port": 2}]}'},
        ),
    )
    changes = diff_file("kubernetes/c/ns/svc.yaml", old, new).changes
    assert [(c.kind, c.path) for c in changes] == [
        (REMOVED, "[RoleBinding/a/grant]"),
        (CHANGED, '[ConfigMap/ns/svc-mesh-envoy].data["lds.json"].resources[l].port'),
        (ADDED, "[RoleBinding/b/grant]"),
    ]
    assert changes[0].old == yaml.safe_load(
        dump_yaml(_obj("RoleBinding", "a", "grant", RB, roleRef={"name": "r"}))
    )
    # the same changes as PyYAML's documents diffed as a list of named objects
    assert changes == diff_values(list(yaml.safe_load_all(old)), list(yaml.safe_load_all(new)))
    assert diff_file("kubernetes/c/ns/svc.yaml", old, old).changes == ()


def test_a_stream_against_a_single_document_is_still_diffed_as_data() -> None:
    one = dump_yaml(_obj("ServiceAccount", "ns", "svc"))
    changes = diff_file("x.yaml", one, _stream(_obj("ServiceAccount", "ns", "svc")))
    assert [(c.kind, c.path) for c in changes.changes] == [(CHANGED, ".")]


def test_object_heads_read_apiversion_kind_and_metadata_wherever_they_stand() -> None:
    """A token Secret has `type` before `metadata`; a document that is no object is skipped."""
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/service-account-token",
        "metadata": {"name": "s-token", "namespace": "meshc-discovery"},
    }
    data = _stream(secret, _obj("ConfigMap", "ns", "big", data={"k": "x\n" * 5000}))
    assert object_heads("f.yaml", data) == [
        {k: v for k, v in secret.items() if k != "type"},
        {k: v for k, v in _obj("ConfigMap", "ns", "big").items()},
    ]
    assert object_heads("f.yaml", b"---\na: 1\n---\n- 1\n") == []
    assert object_heads("f.yaml", b"---\nkind: X\nmetadata: {name: y}\n") == [
        {"kind": "X", "metadata": {"name": "y"}}
    ]  # PyYAML


def test_kubectl_deletes_come_from_the_objects_in_the_files_in_reverse_apply_order() -> None:
    """An object that moves to another file is kept; one dropped from a file that stays, or whose file goes, is
    deleted: a Namespace dropped from its cluster's file too."""
    svc, other = "k8s/c/ns/svc", "k8s/c/other/other"
    role = _obj("ClusterRole", None, "meshc-discovery-reader", RB)
    cluster_file = "kubernetes/c/00-cluster.yaml"  # every Namespace of the cluster, then the ClusterRole
    old = [
        Artifact(
            path=cluster_file,
            data=_stream(_obj("Namespace", None, "gone"), _obj("Namespace", None, "ns"), role),
        ),
        Artifact(
            path="kubernetes/c/ns/svc.yaml",
            target=svc,
            data=_stream(
                _obj("ServiceAccount", "ns", "svc"),
                _obj("RoleBinding", "gone", "g", RB),
                _obj("RoleBinding", "other", "moves", RB),
                _obj("ConfigMap", "ns", "svc-mesh-envoy"),
                _obj("Service", "ns", "svc"),
            ),
        ),
        Artifact(
            path="kubernetes/c/gone/gone.yaml",
            target="k8s/c/gone/gone",
            data=_stream(
                _obj("ServiceAccount", "gone", "gone", workload="k8s/c/gone/gone"),
                _obj("ConfigMap", "gone", "gone-cm", workload="k8s/c/gone/gone"),
            ),
        ),
        Artifact(
            path="kubernetes/c/other/other.yaml",
            target=other,
            data=_stream(_obj("ServiceAccount", "other", "other", workload=other)),
        ),
    ]
    new = [
        Artifact(path=cluster_file, data=_stream(_obj("Namespace", None, "ns"), role)),
        Artifact(
            path="kubernetes/c/ns/svc.yaml",
            target=svc,
            data=_stream(_obj("ServiceAccount", "ns", "svc"), _obj("Service", "ns", "svc")),
        ),
        Artifact(
            path="kubernetes/c/other/other.yaml",
            target=other,
            data=_stream(
                _obj("ServiceAccount", "other", "other", workload=other),
                _obj("RoleBinding", "other", "moves", RB, workload=other),
            ),
        ),
    ]
    deletes = [(d.kind, d.namespace, d.name, d.file) for d in kube_deletions(old, new)]
    assert deletes == [
        ("ConfigMap", "ns", "svc-mesh-envoy", "kubernetes/c/ns/svc.yaml"),
        ("RoleBinding", "gone", "g", "kubernetes/c/ns/svc.yaml"),
        ("ConfigMap", "gone", "gone-cm", "kubernetes/c/gone/gone.yaml"),
        ("ServiceAccount", "gone", "gone", "kubernetes/c/gone/gone.yaml"),
        ("Namespace", None, "gone", cluster_file),
    ]
    assert [d.cascades for d in kube_deletions(old, new)] == [False] * 4 + [True]
