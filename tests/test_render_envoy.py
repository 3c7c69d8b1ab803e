"""Envoy rendering rules: protocols, retries, TLS, authorization, shared documents, determinism."""

from __future__ import annotations

import hashlib
import sys
from typing import Any

import pytest

from compiler.pipeline import compile_dir
from compiler.render import ENVOY_BOOTSTRAP, ENVOY_CDS, ENVOY_LDS, ENVOY_SDS, NERVE, SYNAPSE, envoy, synapse
from compiler.render.envoy import (
    HCM,
    HTTP_OPTIONS_KEY,
    HTTP_RBAC,
    NETWORK_RBAC,
    TCP_PROXY,
    allowed_principals,
    content_hash,
    duration,
)
from tests.conftest import run_under_seeds

UPLOAD = "k8s/kube-sjc-a/upload/upload"


def docs(build: Any, wid: str) -> Any:
    return build.sidecars[wid].documents


def listener(build: Any, wid: str, name: str) -> dict[str, Any]:
    return next(r for r in docs(build, wid)[ENVOY_LDS]["resources"] if r["name"] == name)


def cluster(build: Any, wid: str, name: str) -> dict[str, Any]:
    return next(r for r in docs(build, wid)[ENVOY_CDS]["resources"] if r["name"] == name)


def filter_configs(listener_doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [f["typed_config"] for f in listener_doc["filter_chains"][0]["filters"]]


@pytest.mark.parametrize(
    "ms, text",
    [(2000, "2s"), (600, "0.6s"), (250, "0.25s"), (1, "0.001s"), (0, "0s"), (60_000, "60s"), (1500, "1.5s")],
)
def test_duration(ms: int, text: str) -> None:
    assert duration(ms) == text


def test_bootstrap(example_build: Any) -> None:
    bootstrap = docs(example_build, "vm/encryption/sjc")[ENVOY_BOOTSTRAP]
    assert bootstrap["node"] == {
        "id": "vm/encryption/sjc",
        "cluster": "encryption",
        "locality": {"region": "us-west", "zone": "sjc"},
    }
    assert bootstrap["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 9901}
    lds = bootstrap["dynamic_resources"]["lds_config"]
    assert lds == {
        "resource_api_version": "V3",
        "path_config_source": {
            "path": "/etc/mesh/envoy/lds.json",
            "watched_directory": {"path": "/etc/mesh/envoy"},
        },
    }


def test_egress_route_has_timeout_and_retries_from_the_edge_policy(example_build: Any) -> None:
    # upload.yaml: encryption timeout 2s, retries {attempts: 3, per_try_timeout: 600ms}; retry_on from mesh defaults
    [hcm] = filter_configs(listener(example_build, UPLOAD, "egress-encryption"))
    route = hcm["route_config"]["virtual_hosts"][0]["routes"][0]["route"]
    assert route == {
        "cluster": "encryption",
        "timeout": "2s",
        "retry_policy": {
            "retry_on": "connect-failure,reset,5xx",
            "num_retries": 2,
            "per_try_timeout": "0.6s",
        },
    }
    assert listener(example_build, UPLOAD, "egress-encryption")["address"]["socket_address"] == {
        "address": "127.0.0.1",
        "port_value": 7105,
    }


def test_ingress_is_mtls_and_admits_only_declared_clients(example_build: Any) -> None:
    ingress = listener(example_build, "vm/encryption/sjc", "ingress")
    assert ingress["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": 18080}
    tls = ingress["filter_chains"][0]["transport_socket"]["typed_config"]
    assert tls["require_client_certificate"] is True
    assert tls["common_tls_context"]["validation_context"] == {
        "trusted_ca": {"filename": "/etc/mesh/tls/ca.crt"}
    }
    # encryption's clients are upload (namespaces upload and, in kube-sjc-a, upload) and download (VMs)
    assert allowed_principals(docs(example_build, "vm/encryption/sjc")[ENVOY_LDS]) == [
        "spiffe://box.mesh/ns/download/sa/download",
        "spiffe://box.mesh/ns/upload/sa/upload",
    ]
    [hcm] = filter_configs(ingress)
    assert [f["typed_config"]["@type"] for f in hcm["http_filters"]][0] == HTTP_RBAC
    assert hcm["route_config"]["virtual_hosts"][0]["routes"][0]["route"] == {
        "cluster": "local_app",
        "timeout": "0s",
    }


def test_service_without_clients_admits_nobody(example_build: Any) -> None:
    # edge has no declared clients: an RBAC ALLOW with no policy denies every request
    [hcm] = filter_configs(listener(example_build, "vm/edge/sjc", "ingress"))
    assert hcm["http_filters"][0]["typed_config"]["rules"] == {"action": "ALLOW"}


def test_tcp_service_gets_tcp_proxy_and_network_rbac(example_build: Any) -> None:
    rbac, proxy = filter_configs(listener(example_build, "vm/event-bus/sjc", "ingress"))
    assert rbac["@type"] == NETWORK_RBAC and rbac["rules"]["policies"]["mesh-clients"]["principals"]
    assert proxy == {"@type": TCP_PROXY, "stat_prefix": "ingress", "cluster": "local_app"}
    [egress] = filter_configs(listener(example_build, UPLOAD, "egress-event-bus"))
    assert egress == {
        "@type": TCP_PROXY,
        "stat_prefix": "egress-event-bus",
        "cluster": "event-bus",
        "max_connect_attempts": 2,
    }


def test_http_egress_uses_the_http_connection_manager(example_build: Any) -> None:
    [hcm] = filter_configs(listener(example_build, UPLOAD, "egress-metadata"))
    assert hcm["@type"] == HCM


def test_grpc_gets_http2_upstream(example_build: Any) -> None:
    h2 = {"explicit_http_config": {"http2_protocol_options": {}}}
    encryption = cluster(example_build, UPLOAD, "encryption")["typed_extension_protocol_options"][
        HTTP_OPTIONS_KEY
    ]
    assert {k: v for k, v in encryption.items() if k != "@type"} == h2
    local = cluster(example_build, "vm/encryption/sjc", "local_app")["typed_extension_protocol_options"][
        HTTP_OPTIONS_KEY
    ]
    assert {k: v for k, v in local.items() if k != "@type"} == h2
    assert "typed_extension_protocol_options" not in cluster(example_build, UPLOAD, "metadata")
    assert "typed_extension_protocol_options" not in cluster(example_build, UPLOAD, "local_app")


def test_dependency_cluster(example_build: Any) -> None:
    storage = cluster(example_build, UPLOAD, "storage-gateway")
    assert storage["type"] == "EDS"
    assert storage["eds_cluster_config"] == {
        "service_name": "storage-gateway",
        "eds_config": {
            "resource_api_version": "V3",
            "path_config_source": {
                "path": "/var/run/mesh/eds/storage-gateway.json",
                "watched_directory": {"path": "/var/run/mesh/eds"},
            },
        },
    }
    # upload.yaml overrides max_requests and max_pending_requests of this edge only
    assert storage["circuit_breakers"]["thresholds"] == [
        {
            "priority": "DEFAULT",
            "max_connections": 1024,
            "max_pending_requests": 4096,
            "max_requests": 4096,
            "max_retries": 3,
        }
    ]
    assert storage["outlier_detection"] == {
        "consecutive_5xx": 5,
        "interval": "10s",
        "base_ejection_time": "30s",
        "max_ejection_percent": 50,
    }
    assert storage["common_lb_config"] == {"locality_weighted_lb_config": {}}
    assert storage["connect_timeout"] == "1s"


def test_upstream_tls_expects_every_identity_of_the_dependency(example_build: Any) -> None:
    tls = cluster(example_build, "vm/download/sjc", "storage-gateway")["transport_socket"]["typed_config"]
    sans = tls["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"]
    # storage-gateway runs on VMs (namespace = service) and in gke-usc1-a namespace `storage`
    assert sans == [
        {"san_type": "URI", "matcher": {"exact": "spiffe://box.mesh/ns/storage/sa/storage-gateway"}},
        {"san_type": "URI", "matcher": {"exact": "spiffe://box.mesh/ns/storage-gateway/sa/storage-gateway"}},
    ]


def test_certificate_comes_from_sds_so_renewal_hot_reloads(example_build: Any) -> None:
    tls = cluster(example_build, UPLOAD, "metadata")["transport_socket"]["typed_config"]["common_tls_context"]
    assert "tls_certificates" not in tls
    [secret] = tls["tls_certificate_sds_secret_configs"]
    assert secret["sds_config"]["path_config_source"]["path"] == "/etc/mesh/envoy/sds.json"
    certificate = docs(example_build, UPLOAD)[ENVOY_SDS]["resources"][0]["tls_certificate"]
    assert certificate["certificate_chain"] == {"filename": "/etc/mesh/tls/tls.crt"}
    assert certificate["watched_directory"] == {"path": "/etc/mesh/tls"}


def test_content_hash_sees_content_not_identity() -> None:
    word = "".join(["egress-", "metadata"])  # built at run time: not interned, unlike the literal
    assert content_hash({"name": "egress-metadata", "ports": [1, 2]}) == content_hash(
        {"name": word, "ports": [1, 2]}
    )
    assert content_hash({"a": [1]}) != content_hash({"a": [True]}) != content_hash({"a": ["1"]})


def test_content_hash_is_sha256_of_canonical_json() -> None:
    # Not marshal: its bytes are not promised across Python versions, and version_info must not move with them.
    data = {"b": [1, "two", None, True, 2.5], "a": {"y": 1, "x": 2}}
    assert (
        content_hash(data)
        == hashlib.sha256(b'{"a":{"x":2,"y":1},"b":[1,"two",null,true,2.5]}').hexdigest()[:16]
    )
    # key order is no content
    assert content_hash(data) == content_hash({"a": {"x": 2, "y": 1}, "b": [1, "two", None, True, 2.5]})


def test_version_info_is_a_content_hash(example_build: Any) -> None:
    lds = [docs(example_build, w)[ENVOY_LDS] for w in ("vm/encryption/sjc", "vm/encryption/iad", UPLOAD)]
    assert lds[0]["version_info"] == lds[1]["version_info"] != lds[2]["version_info"]
    assert len(lds[0]["version_info"]) == 16


def test_documents_are_shared_between_workloads_of_one_service(example_build: Any) -> None:
    sjc, iad = docs(example_build, "vm/encryption/sjc"), docs(example_build, "vm/encryption/iad")
    assert sjc[ENVOY_LDS] is iad[ENVOY_LDS] and sjc[ENVOY_CDS] is iad[ENVOY_CDS]
    assert sjc[SYNAPSE] is not iad[SYNAPSE]  # failover order differs by datacenter
    assert sjc[ENVOY_BOOTSTRAP] != iad[ENVOY_BOOTSTRAP]


def test_clients_with_one_policy_share_a_dependency_s_listener_and_cluster(example_build: Any) -> None:
    """Per (dependency, policy object) one egress listener and one CDS cluster, whichever service calls it."""
    # (dependency, policy id) -> client service -> ids of its (egress listener, CDS cluster)
    found: dict[tuple[str, int], dict[str, tuple[int, int]]] = {}
    for sidecar in example_build.sidecars.values():
        lds, cds = sidecar.documents[ENVOY_LDS]["resources"], sidecar.documents[ENVOY_CDS]["resources"]
        for edge in sidecar.workload.egress:
            listener_id = next(id(r) for r in lds if r["name"] == envoy.egress_listener_name(edge.service))
            cluster_id = next(id(r) for r in cds if r["name"] == edge.service)
            clients = found.setdefault((edge.service, id(edge.policy)), {})
            clients[sidecar.workload.service] = (listener_id, cluster_id)
    assert any(len(clients) > 1 for clients in found.values()), "the example has no two clients of one policy"
    assert all(len(set(clients.values())) == 1 for clients in found.values())
    assert len({service for service, _ in found}) < len(found), (
        "the example has no dependency with two policies"
    )
    assert len({ids for clients in found.values() for ids in clients.values()}) == len(found)


def test_shared_documents_equal_a_fresh_rendering(example_build: Any) -> None:
    """The cache keys cover everything the renderers read: no workload gets another's document by mistake."""
    mesh = example_build.mesh
    ports = {w.service: w.ingress.mesh_port for w in mesh.workloads}
    for sidecar in example_build.sidecars.values():
        w = sidecar.workload
        assert sidecar.documents[ENVOY_LDS] == envoy.lds(mesh, w)
        assert sidecar.documents[ENVOY_CDS] == envoy.cds(mesh, w)
        assert sidecar.documents[SYNAPSE] == synapse.synapse(mesh, w, ports)


def test_shared_documents_equal_a_fresh_rendering_on_a_synthetic_mesh(tmp_path: Any) -> None:
    """The same on a generated mesh with mixed placements, localities and per-edge overrides."""
    from benchmarks.synth import generate

    build = compile_dir(generate(tmp_path / "mesh", 120, datacenters=4, clusters=8, deps=6, seed=7))
    test_shared_documents_equal_a_fresh_rendering(build)
    assert len({id(s.documents[ENVOY_LDS]) for s in build.sidecars.values()}) == 120


def test_document_sets_per_platform(example_build: Any) -> None:
    for sidecar in example_build.sidecars.values():
        expected = {ENVOY_BOOTSTRAP, ENVOY_LDS, ENVOY_CDS, ENVOY_SDS, SYNAPSE}
        assert set(sidecar.documents) == (
            expected | {NERVE} if sidecar.workload.platform == "vm" else expected
        )


_DUMP = """
import hashlib, pathlib
from compiler.emit import dump_json
from compiler.pipeline import compile_dir
b = compile_dir(pathlib.Path("mesh-spec"))
h = hashlib.sha256()
for wid, s in sorted(b.sidecars.items()):
    for name, doc in sorted(s.documents.items()):
        h.update(wid.encode() + name.encode() + dump_json(doc))
print(h.hexdigest())
"""


def test_rendering_is_identical_under_any_hash_seed() -> None:
    results = run_under_seeds(dict.fromkeys(("0", "1", "4242"), [sys.executable, "-c", _DUMP]))
    assert all(result.returncode == 0 for result in results.values()), results
    digests = {result.stdout for result in results.values()}
    assert len(digests) == 1
