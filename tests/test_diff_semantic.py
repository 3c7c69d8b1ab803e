"""The semantic differ on hand-made data: value paths, name matching, targets, restart classes, groups."""

from __future__ import annotations

import json
import random
from typing import Any

import orjson
import pytest
import yaml

from compiler.commands.diff_report import MAX_NOW_ROWS, now_lines
from compiler.diagnostics import InternalError
from compiler.diff.files import diff_file, diff_output_file, output_file, parse_file
from compiler.diff.kube import kube_deletions, kube_objects
from compiler.diff.records import ADDED, CHANGED, REMOVED, Change, MeshDiff, RolloutNow
from compiler.diff.revisions import diff_builds, group
from compiler.diff.values import diff_values
from compiler.emit import Artifact, dump_json, dump_yaml
from compiler.ir.lower import lower
from compiler.pipeline import Build, validate_only
from compiler.render import ENVOY_BOOTSTRAP, ENVOY_CDS, ENVOY_LDS, NERVE, SYNAPSE, SidecarConfig
from compiler.render.restart import RestartClass
from compiler.rollout.changes import TargetChange
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
        _yaml_artifact("puppet/data/vm/auth/sjc.yaml", {"mesh::port": 18080}, "vm/auth/sjc"),
        _yaml_artifact(
            "kubernetes/kube-sjc-a/metadata/cm.yaml",
            {"kind": "ConfigMap", "data": {"lds.json": dump_json(_lds(1024)).decode()}},
            "k8s/kube-sjc-a/metadata/metadata",
        ),
    )
    return Build(spec=spec, mesh=mesh, sidecars=sidecars, artifacts=artifacts)


def _yaml_artifact(path: str, value: Any, target: str | None = None) -> Artifact:
    """A YAML output file as a backend makes one: its value beside its bytes."""
    return Artifact(path=path, data=dump_yaml(value), target=target, value=value)


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
        a if "cm.yaml" not in a.path else _yaml_artifact(a.path, configmap, a.target)
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
        base_build.artifacts[2],
        _yaml_artifact("puppet/data/vm/auth/iad.yaml", {"mesh::port": 18080}, auth_iad.id),
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


def test_a_change_equality_misses_is_still_a_change(base_build: Build) -> None:
    """Files are compared by the sha256 of their bytes, so 1 -> 1.0 (equal to Python's ==) is still found."""
    artifacts = tuple(
        _yaml_artifact(a.path, {"mesh::port": 18080.0}, a.target) if a.path.endswith("sjc.yaml") else a
        for a in base_build.artifacts
    )
    (target,) = diff_builds(base_build, _with(base_build, artifacts=artifacts)).targets
    assert [(f.name, f.changes) for f in target.files] == [
        (
            "puppet/data/vm/auth/sjc.yaml",
            (Change(path='["mesh::port"]', kind=CHANGED, old=18080, new=18080.0),),
        )
    ]
    # and so are files read from disk (`meshc check`), whose bytes differ too
    assert diff_file("x.json", b'{"a": [true]}\n', b'{"a": [1]}\n').changes == (
        Change(path="a[0]", kind=CHANGED, old=True, new=1),
    )


def test_a_diff_keeps_the_data_of_data_files_not_their_bytes(example_build: Build) -> None:
    """Two builds are held at once: a data file is kept as its value and the sha256 of its bytes, a template as its
    bytes (for a line diff)."""
    import hashlib

    from compiler.diff.targets import compiled

    kept = {f.path: f for f in compiled(example_build).files}
    for artifact in example_build.artifacts:
        file = kept[artifact.path]
        assert file.digest == hashlib.sha256(artifact.data).digest(), artifact.path
        assert (file.value, file.text) == (
            (artifact.value, b"") if artifact.value is not None else (None, artifact.data)
        ), artifact.path


def test_a_build_that_only_writes_its_tree_drops_the_values(example_build: Build) -> None:
    """`meshc build` (values=False) holds no values at its peak; its files are the very same."""
    from compiler.pipeline import compile_dir

    build = compile_dir(EXAMPLE, values=False)
    assert [(a.path, a.data, a.target) for a in build.artifacts] == [
        (a.path, a.data, a.target) for a in example_build.artifacts
    ]
    assert all(a.value is None for a in build.artifacts)
    assert any(a.value is not None for a in example_build.artifacts)


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


# ---------------------------------------------------------------- values beside bytes: the data a parser reads


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


def test_every_structured_output_file_carries_the_data_its_bytes_hold(example_build: Build) -> None:
    """JSON files, hiera's common.yaml and every Kubernetes file (a tuple of its objects) carry their value; only
    files rendered from templates carry none. The value is exactly what a parser reads back: same types, same data."""
    without = set()
    for artifact in example_build.artifacts:
        if artifact.value is None:
            without.add(artifact.path)
            continue
        (parsed,) = parse_file(artifact.path, artifact.data) or pytest.fail(artifact.path)
        value = list(artifact.value) if isinstance(artifact.value, tuple) else artifact.value
        assert isinstance(artifact.value, tuple) == artifact.path.startswith("kubernetes/"), artifact.path
        # diff_values tells lists from tuples, canonical JSON tells true from 1 and 1 from 1.0
        assert diff_values(value, parsed) == (), artifact.path
        assert orjson.dumps(value, option=orjson.OPT_SORT_KEYS) == orjson.dumps(
            parsed, option=orjson.OPT_SORT_KEYS
        ), artifact.path
    assert {"puppet/hiera.yaml", "puppet/manifests/site.pp"} <= without
    assert all(not path.endswith((".json", ".yaml")) for path in without - {"puppet/hiera.yaml"}), without


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
def test_files_read_from_disk_parse_as_pyyaml_reads_them_whatever_their_form(text: str) -> None:
    """`meshc check` reads hand-edited files: comments, flow collections, other indentation, `---`."""
    assert parse_file("x.yaml", text.encode()) == (_yaml_data(text.encode()),)


def _yaml_data(data: bytes) -> Any:
    """What PyYAML reads: one document's data, or the list of documents of a stream opened by `---` (as meshc's
    Kubernetes files)."""
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


def test_diffing_values_equals_diffing_what_a_parser_reads_from_the_bytes() -> None:
    """In a YAML file the changes come in the keys' order; in a JSON file, whose keys meshc sorts, sorted."""
    rnd = random.Random(7)
    compared = 0
    for _ in range(3000):
        old = {"a": _random_value(rnd, 1), "b": {"c": _random_value(rnd, 2), "d": [_random_value(rnd, 3)]}}
        new = _mutate(old, rnd)
        if new is None:
            continue  # an artifact's value None means a file without data (a template), compared as text
        for path, dump in (("x.yaml", dump_yaml), ("x.json", dump_json)):
            try:
                before, after = dump(old), dump(new)
            except TypeError:  # orjson: an integer beyond 64 bits is no JSON meshc writes
                continue
            if parse_file(path, before) is None or parse_file(path, after) is None:
                continue  # not ours to read then (emit's fuzz tests own what PyYAML accepts)
            got = diff_output_file(
                output_file(Artifact(path=path, data=before, value=old)),
                output_file(Artifact(path=path, data=after, value=new)),
            )
            assert got == diff_file(path, before, after), (path, before, after)
            compared += 1
    assert compared > 4000  # of 6,000: the rest hold integers beyond 64 bits (no JSON) or are no YAML


def test_diffing_output_files_on_their_values_equals_diffing_their_bytes(example_build: Build) -> None:
    from compiler.pipeline import compile

    files = read_tree(EXAMPLE)
    files["mesh.yaml"] = files["mesh.yaml"].replace(b"admin_port: 9901", b"admin_port: 9902")
    files["services/upload.yaml"] = files["services/upload.yaml"].replace(b"timeout: 2s", b"timeout: 3s")
    changed = {a.path: a for a in compile(files, "mesh-spec").artifacts}
    compared = set()
    for artifact in example_build.artifacts:
        after = changed.get(artifact.path)
        if after is not None and after.data != artifact.data and after.value is not None:
            expected = diff_file(artifact.path, artifact.data, after.data)
            assert expected.changes, artifact.path
            assert diff_output_file(output_file(artifact), output_file(after)) == expected, artifact.path
            compared.add(artifact.path.rsplit(".", 1)[-1])
    # every Kubernetes workload file and every pool's hiera data change (the bootstrap's admin port)
    assert compared == {"yaml", "json"}


def test_external_reader_targets_are_placed_in_their_clusters_datacenter(example_build: Build) -> None:
    """A VM client that starts watching a cluster changes that cluster's reader grant
    (`k8s/<C>/meshc-discovery/<S>`)."""
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


def _kube_file(path: str, *objects: dict[str, Any], target: str | None = None) -> Artifact:
    """A Kubernetes file as the backend makes one: the tuple of its objects beside their bytes."""
    return Artifact(path=path, data=_stream(*objects), target=target, value=objects)


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
    # and as a build's two files holding those objects, diffed on the objects themselves
    files = [
        Artifact(path="kubernetes/c/ns/svc.yaml", data=data, value=tuple(yaml.safe_load_all(data)))
        for data in (old, new)
    ]
    assert diff_output_file(*map(output_file, files)).changes == changes


def test_a_stream_against_a_single_document_is_still_diffed_as_data() -> None:
    one = dump_yaml(_obj("ServiceAccount", "ns", "svc"))
    changes = diff_file("x.yaml", one, _stream(_obj("ServiceAccount", "ns", "svc")))
    assert [(c.kind, c.path) for c in changes.changes] == [(CHANGED, ".")]


def test_kube_objects_are_the_documents_with_a_kind_and_a_name() -> None:
    """A token Secret has `type` before `metadata`; a document that is no object is skipped."""
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/service-account-token",
        "metadata": {"name": "s-token", "namespace": "meshc-discovery"},
    }
    big = _obj("ConfigMap", "ns", "big", data={"k": "x\n" * 5000})
    assert kube_objects(output_file(_kube_file("f.yaml", secret, big))) == [secret, big]
    not_objects = _kube_file("f.yaml", {"a": 1}, [1], {"kind": "X", "metadata": {"name": 1}})  # type: ignore[arg-type]
    assert kube_objects(output_file(not_objects)) == []  # type: ignore[arg-type]


def test_a_kubernetes_file_without_its_objects_is_a_meshc_bug_not_an_empty_file() -> None:
    """Deletions are computed from the objects a build holds: a file without them would hide deletions."""
    old = [Artifact(path="kubernetes/c/ns/svc.yaml", data=_stream(_obj("ServiceAccount", "ns", "svc")))]
    with pytest.raises(
        InternalError, match="kubernetes/c/ns/svc.yaml: a Kubernetes file was rendered without"
    ):
        kube_deletions(old, [])


def test_kubectl_deletes_come_from_the_objects_in_the_files_in_reverse_apply_order() -> None:
    """An object that moves to another file is kept; one dropped from a file that stays, or whose file goes, is
    deleted: a Namespace dropped from its cluster's file too."""
    svc, other = "k8s/c/ns/svc", "k8s/c/other/other"
    role = _obj("ClusterRole", None, "meshc-discovery-reader", RB)
    cluster_file = "kubernetes/c/00-cluster.yaml"  # every Namespace of the cluster, then the ClusterRole
    old = [
        _kube_file(cluster_file, _obj("Namespace", None, "gone"), _obj("Namespace", None, "ns"), role),
        _kube_file(
            "kubernetes/c/ns/svc.yaml",
            _obj("ServiceAccount", "ns", "svc"),
            _obj("RoleBinding", "gone", "g", RB),
            _obj("RoleBinding", "other", "moves", RB),
            _obj("ConfigMap", "ns", "svc-mesh-envoy"),
            _obj("Service", "ns", "svc"),
            target=svc,
        ),
        _kube_file(
            "kubernetes/c/gone/gone.yaml",
            _obj("ServiceAccount", "gone", "gone", workload="k8s/c/gone/gone"),
            _obj("ConfigMap", "gone", "gone-cm", workload="k8s/c/gone/gone"),
            target="k8s/c/gone/gone",
        ),
        _kube_file(
            "kubernetes/c/other/other.yaml",
            _obj("ServiceAccount", "other", "other", workload=other),
            target=other,
        ),
    ]
    new = [
        _kube_file(cluster_file, _obj("Namespace", None, "ns"), role),
        _kube_file(
            "kubernetes/c/ns/svc.yaml",
            _obj("ServiceAccount", "ns", "svc"),
            _obj("Service", "ns", "svc"),
            target=svc,
        ),
        _kube_file(
            "kubernetes/c/other/other.yaml",
            _obj("ServiceAccount", "other", "other", workload=other),
            _obj("RoleBinding", "other", "moves", RB, workload=other),
            target=other,
        ),
    ]
    deletions = kube_deletions([output_file(a) for a in old], [output_file(a) for a in new])
    deletes = [(d.kind, d.namespace, d.name, d.file) for d in deletions]
    assert deletes == [
        ("ConfigMap", "ns", "svc-mesh-envoy", "kubernetes/c/ns/svc.yaml"),
        ("RoleBinding", "gone", "g", "kubernetes/c/ns/svc.yaml"),
        ("ConfigMap", "gone", "gone-cm", "kubernetes/c/gone/gone.yaml"),
        ("ServiceAccount", "gone", "gone", "kubernetes/c/gone/gone.yaml"),
        ("Namespace", None, "gone", cluster_file),
    ]
    assert [d.cascades for d in deletions] == [False] * 4 + [True]


@pytest.mark.parametrize("rows", [MAX_NOW_ROWS, MAX_NOW_ROWS + 7])
def test_markdown_says_how_many_rows_of_the_at_once_lists_it_left_out(rows: int) -> None:
    """Markdown cuts both lists of what changes at once (targets, other files) at MAX_NOW_ROWS and says how many
    more there are; text lists every one."""
    changes = tuple(
        TargetChange(
            target=f"vm/s{n:03}/dc",
            wave="w",
            status="changed",
            restart=RestartClass.HOT_RELOAD,
            restart_sensitive=False,
            reason="its wave moves",
        )
        for n in range(rows)
    )
    files = tuple((f"kubernetes/c/meshc-discovery/s{n:03}.yaml", "changed") for n in range(rows))
    diff = MeshDiff(base="b", head="h", now=RolloutNow(moves=(), changes=changes, files=files))
    markdown = now_lines(diff, markdown=True)
    more = f"… and {rows - MAX_NOW_ROWS} more (`meshc diff --format json` lists every one)"
    assert markdown.count(more) == (2 if rows > MAX_NOW_ROWS else 0)
    assert sum(line.startswith("- file ") for line in markdown) == MAX_NOW_ROWS
    text = now_lines(diff, markdown=False)
    assert sum(line.startswith("  file ") for line in text) == rows and not any(
        "more (" in line for line in text
    )
