"""The Puppet backend without Puppet: layout, targets, escaping, YAML 1.1 safety, golden hiera tree."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
import yaml

from compiler.backends import BACKENDS
from compiler.backends.puppet import (
    HIERA_ESCAPE,
    HIERARCHY,
    READERS,
    _render,
    build_puppet,
    document_hash,
    hiera_escape,
    pool_data,
    restart_fingerprints,
    stream_puppet,
)
from compiler.backends.puppet import ROOT as PUPPET_ROOT
from compiler.diagnostics import InternalError
from compiler.emit import dump_json
from compiler.render import ENVOY_BOOTSTRAP, ENVOY_CDS, ENVOY_LDS, NERVE, SYNAPSE, SidecarConfig
from compiler.render.restart import DOCUMENT_CLASS, RestartClass
from tests.conftest import ROOT, assert_same_tree

# The committed build is the one golden copy of the Puppet tree (see tests/test_kubernetes_golden.py).
GOLDEN = ROOT / "output" / PUPPET_ROOT


def unescape(value: Any) -> Any:
    """What hiera makes of an escaped value: `%{literal('%')}` is a literal `%`."""
    if isinstance(value, str):
        return value.replace(HIERA_ESCAPE, "%{")
    if isinstance(value, dict):
        return {unescape(k): unescape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unescape(v) for v in value]
    return value


def with_documents(sidecar: SidecarConfig, changes: dict[str, Any]) -> SidecarConfig:
    """A copy of a sidecar config with some documents replaced or added."""
    return SidecarConfig(workload=sidecar.workload, documents=dict(sidecar.documents) | changes)


def test_registered_as_puppet() -> None:
    assert BACKENDS["puppet"] is stream_puppet


def test_one_data_file_per_vm_pool_with_its_target(example_build: Any) -> None:
    artifacts = build_puppet(example_build.mesh, example_build.sidecars)
    targets = {a.path: a.target for a in artifacts}
    vm_pools = sorted(w.id for w in example_build.mesh.workloads if w.platform == "vm")
    data = {path: target for path, target in targets.items() if path.startswith("puppet/data/pools/")}
    assert sorted(data.values()) == vm_pools
    for path, target in data.items():
        _, service, datacenter = target.split("/")
        assert path == f"puppet/data/pools/{service}/{datacenter}.json"
    shared = {path for path, target in targets.items() if target is None}
    assert shared == {
        "puppet/hiera.yaml",
        "puppet/data/common.yaml",
        "puppet/modules/mesh/manifests/init.pp",
        "puppet/modules/mesh/functions/nerve_for_host.pp",
        "puppet/modules/mesh/functions/sort_keys.pp",
        "puppet/modules/mesh/metadata.json",
        "puppet/modules/mesh/lib/facter/mesh_applied.rb",
        "puppet/manifests/site.pp",
    }


def test_pool_data_read_back_is_the_rendered_config(example_build: Any) -> None:
    """Every pool's data (hiera json_data) must come back exactly, types included, once unescaped."""
    artifacts = build_puppet(example_build.mesh, example_build.sidecars)
    for artifact in artifacts:
        if artifact.target is None:
            continue
        data = unescape(json.loads(artifact.data))
        sidecar = example_build.sidecars[artifact.target]
        assert dump_json(data["mesh::sidecar"]) == dump_json(dict(sidecar.documents)), artifact.path
        assert data["mesh::workload"] == artifact.target
        assert data["mesh::restart_sensitive"] is sidecar.workload.restart_sensitive


def test_pool_files_are_canonical_json_of_the_pool(example_build: Any) -> None:
    """Pool files are built from cached per-document escapes; the bytes must be dump_json's all the same."""
    for artifact in build_puppet(example_build.mesh, example_build.sidecars):
        if artifact.target is None:
            continue
        sidecar = example_build.sidecars[artifact.target]
        data = {
            "mesh::wave": example_build.mesh.waves[artifact.target],
            "mesh::workload": artifact.target,
            "mesh::restart_sensitive": sidecar.workload.restart_sensitive,
            "mesh::sidecar": {
                name: hiera_escape(sidecar.documents[name]) for name in sorted(sidecar.documents)
            },
            "mesh::restart_fingerprints": restart_fingerprints(sidecar.documents),
            "mesh::document_hashes": {name: document_hash(doc) for name, doc in sidecar.documents.items()},
        }
        assert artifact.data == dump_json(data)


def test_document_hashes_are_sha256_of_the_unescaped_compact_sorted_document(example_build: Any) -> None:
    """Contract 5: hash what meshc rendered (hiera returns it unescaped), not the escaped data or the filled Nerve."""
    sidecar = example_build.sidecars["vm/encryption/sjc"]
    document = {"b": "check port %{port}", "a": [1, "é"]}
    data = json.loads(pool_data(with_documents(sidecar, {SYNAPSE: document})))
    expected = hashlib.sha256('{"a":[1,"é"],"b":"check port %{port}"}'.encode()).hexdigest()
    assert data["mesh::document_hashes"][SYNAPSE] == expected
    assert (
        data["mesh::document_hashes"][NERVE]
        == hashlib.sha256(
            json.dumps(
                sidecar.documents[NERVE], sort_keys=True, separators=(",", ":"), ensure_ascii=False
            ).encode()
        ).hexdigest()
    )
    assert sorted(data["mesh::document_hashes"]) == sorted(sidecar.documents)


def test_hiera_interpolation_is_escaped_in_strings_and_keys() -> None:
    document = {"server_options": "check port %{port}", "%{key}": ["a%{b}c", "100%", "%%{x}"], "n": 1}
    assert hiera_escape(document) == {
        "%{literal('%')}{key}": ["a%{literal('%')}{b}c", "100%", "%%{literal('%')}{x}"],
        "n": 1,
        "server_options": "check port %{literal('%')}{port}",
    }
    assert document["server_options"] == "check port %{port}", "the shared document must not be mutated"


def test_yaml_11_traps_stay_strings(example_build: Any) -> None:
    sidecar = example_build.sidecars["vm/encryption/sjc"]
    traps = {
        "no": "no",
        "on": "On",
        "version": "1.10",
        "octal": "017",
        "date": "2001-01-01",
        "tilde": "~",
        "sexagesimal": "1:30",
    }
    text = pool_data(with_documents(sidecar, {SYNAPSE: traps})).decode()
    for value in traps.values():
        assert f'"{value}"' in text
    # JSON is YAML too: a YAML 1.1 reader fed the pool file must not retype anything either.
    assert unescape(yaml.safe_load(text))["mesh::sidecar"][SYNAPSE] == traps
    assert unescape(json.loads(text))["mesh::sidecar"][SYNAPSE] == traps


def test_lookup_options_merge_sidecar_per_document(example_build: Any) -> None:
    common = next(a for a in build_puppet(example_build.mesh, {}) if a.path == "puppet/data/common.yaml")
    data = yaml.safe_load(common.data)
    assert data["lookup_options"] == {
        "mesh::sidecar": {"merge": "hash"},
        "mesh::restart_fingerprints": {"merge": "hash"},
        "mesh::document_hashes": {"merge": "hash"},
    }
    assert data["mesh::config_dir"] == example_build.mesh.sidecar.config_dir


def test_hierarchy_goes_from_node_to_pool_to_datacenter_to_common(example_build: Any) -> None:
    hiera = next(a for a in build_puppet(example_build.mesh, {}) if a.path == "puppet/hiera.yaml")
    config = yaml.safe_load(hiera.data)
    assert config["version"] == 5
    assert (
        [level["path"] for level in config["hierarchy"]]
        == [level.path for level in HIERARCHY]
        == [
            "nodes/%{trusted.certname}.json",
            "pools/%{facts.mesh_service}/%{facts.mesh_datacenter}.json",
            "datacenters/%{facts.mesh_datacenter}.yaml",
            "common.yaml",
        ]
    )
    pool_level = config["hierarchy"][1]
    assert pool_level["data_hash"] == "json_data", "pool files are JSON and need hiera's json backend"


def test_hiera_yaml_says_the_datacenter_files_go_on_the_puppet_server_not_in_the_output(
    example_build: Any,
) -> None:
    # Its datacenter level invited a file into output/puppet/data/datacenters/, which the next build removed (to the
    # spare tree, deleted by the build after).
    hiera = next(a for a in build_puppet(example_build.mesh, {}) if a.path == "puppet/hiera.yaml")
    header = " ".join(line.lstrip("# ") for line in hiera.data.decode().split("\n---\n")[0].splitlines())
    assert 'The "Per datacenter" level is the site\'s' in header
    assert "Add them at deploy time on the Puppet server, in the deployed copy of this tree" in header
    assert "never in meshc's output directory" in header
    assert "the next `meshc build` removes a file put there" in header


def test_only_bootstrap_and_nerve_files_restart_a_process() -> None:
    assert READERS[ENVOY_BOOTSTRAP] == "envoy"
    assert READERS[NERVE] == "nerve"
    assert READERS[SYNAPSE] == "", "Synapse reloads its services: its restarts go through the fingerprint"
    assert READERS[ENVOY_LDS] == READERS[ENVOY_CDS] == ""
    assert {name for name, reader in READERS.items() if not reader} == {
        name for name, cost in DOCUMENT_CLASS.items() if cost == RestartClass.HOT_RELOAD
    } | {SYNAPSE}


def test_synapse_fingerprint_ignores_services_only(example_build: Any) -> None:
    documents = dict(example_build.sidecars["vm/encryption/sjc"].documents)
    before = restart_fingerprints(documents)
    assert set(before) == {"synapse"}
    documents[SYNAPSE] = {**documents[SYNAPSE], "services": {}}
    assert restart_fingerprints(documents) == before
    documents[SYNAPSE] = {**documents[SYNAPSE], "file_output": {"output_directory": "/x"}}
    assert restart_fingerprints(documents) != before


def test_module_restarts_follow_the_readers(example_build: Any) -> None:
    init = next(
        a for a in build_puppet(example_build.mesh, {}) if a.path.endswith("manifests/init.pp")
    ).data.decode()
    for name, reader in READERS.items():
        assert f"    '{name}' => '{reader}',\n" in init


def test_template_errors_name_the_template_and_line() -> None:
    """An undefined template variable is a meshc bug (InternalError, exit 3) naming the template's file and line."""
    with pytest.raises(InternalError) as error:
        _render("hiera.yaml.j2", mesh="box")  # no hierarchy
    assert str(error.value).endswith("compiler/templates/puppet/hiera.yaml.j2:19: 'hierarchy' is undefined")


def test_unknown_document_is_an_internal_error(example_build: Any) -> None:
    sidecar = with_documents(example_build.sidecars["vm/encryption/sjc"], {"envoy/rtds.json": {}})
    with pytest.raises(InternalError) as error:
        build_puppet(example_build.mesh, {"vm/encryption/sjc": sidecar})
    [line] = str(error.value).splitlines()
    assert "envoy/rtds.json" in line and line.endswith("[internal]")


def test_output_does_not_depend_on_document_key_order(example_build: Any) -> None:
    sidecar = example_build.sidecars["vm/encryption/sjc"]
    reordered = SidecarConfig(
        workload=sidecar.workload,
        documents={name: _reverse_keys(doc) for name, doc in reversed(list(sidecar.documents.items()))},
    )
    assert pool_data(reordered) == pool_data(sidecar)


def _reverse_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _reverse_keys(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reverse_keys(v) for v in value]
    return value


@pytest.mark.golden
def test_puppet_tree_matches_golden(example_output: dict[str, bytes]) -> None:
    """The Puppet environment `meshc build` renders is byte-exact the committed output/puppet/, the one golden copy."""
    actual = {
        path.removeprefix(f"{PUPPET_ROOT}/"): data
        for path, data in example_output.items()
        if path.startswith(f"{PUPPET_ROOT}/")
    }
    assert "hiera.yaml" in actual and any(path.startswith("data/pools/") for path in actual)
    assert_same_tree(actual, GOLDEN, refresh="`make golden`")
