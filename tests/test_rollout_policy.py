"""The wave policy of mesh.yaml: schema, semantic checks with positions, first-match assignment, wave in hiera."""

from __future__ import annotations

import json

import pytest

from compiler.commands.explain import explain
from compiler.diagnostics import SpecError
from compiler.pipeline import Build, compile, spec_files
from tests.conftest import EXAMPLE

POLICY = """
rollout:
  waves:
    - name: canary
      match: {datacenters: [gcp-usc1]}
    - name: hosts
      hosts_per_pool: 2
    - name: west
      match: {datacenters: [sjc], restart_sensitive: false}
    - name: rest
"""


def with_policy(policy: str) -> dict[str, bytes]:
    """The example spec with its wave policy (the last section of mesh.yaml) replaced by `policy`."""
    files = spec_files(EXAMPLE)
    files["mesh.yaml"] = files["mesh.yaml"].split(b"\nrollout:\n", 1)[0] + b"\n" + policy.encode()
    return files


def build(policy: str) -> Build:
    return compile(with_policy(policy), "mesh-spec")


def errors(policy: str) -> list[str]:
    with pytest.raises(SpecError) as caught:
        build(policy)
    return [d.format() for d in caught.value.diagnostics]


def mesh_line(policy: str, needle: str) -> int:
    text = with_policy(policy)["mesh.yaml"].decode()
    return text[: text.index(needle)].count("\n") + 1


def test_every_target_gets_the_first_wave_that_matches() -> None:
    mesh = build(POLICY).mesh
    assert set(mesh.waves) == {w.id for w in mesh.workloads}
    for workload in mesh.workloads:
        if workload.datacenter == "gcp-usc1":
            expected = "canary"
        elif workload.datacenter == "sjc" and not workload.restart_sensitive:
            expected = "west"
        else:
            expected = "rest"
        assert mesh.waves[workload.id] == expected, workload.id
    assert "hosts" not in mesh.waves.values(), "a canary-host wave takes hosts, never whole targets"
    assert {
        w.restart_sensitive for w in mesh.workloads if w.datacenter == "sjc" and mesh.waves[w.id] == "rest"
    } == {True}


def test_no_policy_no_waves() -> None:
    assert build("").mesh.waves == {}


def test_the_example_has_a_wave_for_every_target(example_build: Build) -> None:
    assert set(example_build.mesh.waves) == {w.id for w in example_build.mesh.workloads}
    assert {example_build.mesh.waves[w.id] for w in example_build.mesh.workloads if w.restart_sensitive} == {
        "restart-sensitive"
    }


def test_pool_data_carries_its_wave_only_with_a_policy() -> None:
    with_waves = {a.path: a for a in build(POLICY).artifacts}
    without = {a.path: a for a in build("").artifacts}
    pool = "puppet/data/pools/encryption/sjc.json"
    assert json.loads(with_waves[pool].data)["mesh::wave"] == "west"
    assert "mesh::wave" not in json.loads(without[pool].data)
    assert (
        json.loads(with_waves["puppet/data/pools/storage-gateway/gcp-usc1.json"].data)["mesh::wave"]
        == "canary"
    )


def test_explain_shows_each_workloads_wave() -> None:
    report = explain(build(POLICY).mesh, "encryption")
    assert {w["id"]: w["wave"] for w in report["workloads"]} == {"vm/encryption/sjc": "west"} | {
        w["id"]: (
            "canary" if w["datacenter"] == "gcp-usc1" else "west" if w["datacenter"] == "sjc" else "rest"
        )
        for w in report["workloads"]
        if w["id"] != "vm/encryption/sjc"
    }


def test_a_policy_that_leaves_a_target_out_is_an_error() -> None:
    policy = (
        "rollout:\n  waves:\n"
        "    - name: canary\n      match: {datacenters: [gcp-usc1]}\n"
        "    - name: west\n      match: {datacenters: [sjc]}\n"
    )
    found = errors(policy)
    assert len(found) == 1
    line = mesh_line(policy, "name: west")
    assert found[0].startswith(f"mesh-spec/mesh.yaml:{line}:13: error: no wave takes ")
    assert "k8s/kube-iad-a/" in found[0] and found[0].endswith(
        "the last wave 'west' must match every target left (drop its match)  [rollout-uncovered]"
    )


def test_the_last_wave_cannot_be_a_canary_host_wave() -> None:
    policy = "rollout:\n  waves:\n    - name: canary\n      hosts_per_pool: 1\n"
    assert errors(policy) == [
        f"mesh-spec/mesh.yaml:{mesh_line(policy, 'hosts_per_pool')}:23: error: the last wave 'canary' takes canary "
        "hosts only; add a last wave without hosts_per_pool that takes every target left  [rollout-uncovered]"
    ]


def test_unknown_names_in_a_match_and_duplicate_waves() -> None:
    policy = (
        "rollout:\n  waves:\n    - name: canary\n"
        "      match: {datacenters: [gcp-usc2], clusters: [kube-sjc-b], services: [uplod]}\n"
        "    - name: canary\n"
    )
    line = mesh_line(policy, "match: {datacenters")
    col = {name: policy.splitlines()[3].index(name) + 1 for name in ("gcp-usc2", "kube-sjc-b", "uplod")}
    assert errors(policy) == [
        f"mesh-spec/mesh.yaml:{line}:{col['gcp-usc2']}: error: wave 'canary' matches unknown datacenter "
        "'gcp-usc2' (did you mean 'gcp-usc1'?)  [rollout-unknown-name]",
        f"mesh-spec/mesh.yaml:{line}:{col['kube-sjc-b']}: error: wave 'canary' matches unknown cluster "
        "'kube-sjc-b' (did you mean 'kube-sjc-a'?)  [rollout-unknown-name]",
        f"mesh-spec/mesh.yaml:{line}:{col['uplod']}: error: "
        "wave 'canary' matches unknown service 'uplod' (did you mean 'upload'?)  [rollout-unknown-name]",
        f"mesh-spec/mesh.yaml:{line + 1}:13: error: wave 'canary' is already defined as wave 1; "
        "rename one  [rollout-duplicate-wave]",
    ]


def test_schema_rejects_unknown_match_keys_and_platforms() -> None:
    policy = "rollout:\n  waves:\n    - name: a\n      match: {platform: bare-metal, zone: x}\n"
    found = errors(policy)
    assert any("[unknown-key]" in f and "'zone'" in f for f in found), found
    assert any("'bare-metal' is not one of vm, kubernetes" in f for f in found), found
