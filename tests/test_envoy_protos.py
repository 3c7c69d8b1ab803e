"""Every Envoy document of the example mesh parses strictly as its v3 proto (xds-protos)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

# Every type an Any in our documents may name must be imported before parsing.
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.cluster.v3 import cluster_pb2  # noqa: F401
from envoy.config.listener.v3 import listener_pb2  # noqa: F401
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2  # noqa: F401
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2  # noqa: F401
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2  # noqa: F401
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2  # noqa: F401
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2  # noqa: F401
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2, json_format, symbol_database

from compiler.render import ENVOY_BOOTSTRAP, ENVOY_CDS, ENVOY_LDS, ENVOY_SDS
from compiler.render.envoy import CLUSTER, LISTENER, SECRET, WORKLOAD_CERT

pytestmark = pytest.mark.consumer  # every test here hands artifacts to Envoy's own protos (xds-protos)

PREFIX = "type.googleapis.com/"


def parse_bootstrap(doc: dict[str, Any]) -> bootstrap_pb2.Bootstrap:
    """Strict parse: unknown fields, bad enums and bad durations raise ParseError."""
    return json_format.ParseDict(doc, bootstrap_pb2.Bootstrap())


def parse_discovery_response(doc: dict[str, Any], type_url: str) -> list[Any]:
    """Parse a DiscoveryResponse, then unpack every resource into its own message, strictly."""
    response = json_format.ParseDict(doc, discovery_pb2.DiscoveryResponse())
    assert response.type_url == type_url
    messages = []
    for packed, raw in zip(response.resources, doc["resources"], strict=True):
        assert packed.type_url == type_url
        message = symbol_database.Default().GetSymbol(type_url.removeprefix(PREFIX))()
        assert packed.Unpack(message)
        # Re-parse the resource on its own, so nothing is dropped on the way through Any.
        json_format.ParseDict({k: v for k, v in raw.items() if k != "@type"}, type(message)())
        messages.append(message)
    return messages


def envoy_documents(build: Any, name: str) -> list[tuple[str, dict[str, Any]]]:
    return [(wid, sidecar.documents[name]) for wid, sidecar in sorted(build.sidecars.items())]


def test_every_bootstrap_parses(example_build: Any) -> None:
    for wid, doc in envoy_documents(example_build, ENVOY_BOOTSTRAP):
        bootstrap = parse_bootstrap(doc)
        assert bootstrap.node.id == wid
        assert bootstrap.dynamic_resources.lds_config.resource_api_version == 2  # V3


def test_every_lds_parses(example_build: Any) -> None:
    for wid, doc in envoy_documents(example_build, ENVOY_LDS):
        listeners = parse_discovery_response(doc, LISTENER)
        assert listeners[0].name == "ingress", wid
        assert len(listeners) == 1 + len(example_build.sidecars[wid].workload.egress)


def test_every_cds_parses(example_build: Any) -> None:
    for wid, doc in envoy_documents(example_build, ENVOY_CDS):
        clusters = parse_discovery_response(doc, CLUSTER)
        assert clusters[0].name == "local_app", wid
        assert [c.name for c in clusters[1:]] == [
            e.service for e in example_build.sidecars[wid].workload.egress
        ]


def test_every_sds_parses_and_names_the_secret_the_contexts_use(example_build: Any) -> None:
    for wid, doc in envoy_documents(example_build, ENVOY_SDS):
        [secret] = parse_discovery_response(doc, SECRET)
        assert secret.name == WORKLOAD_CERT, wid
        assert secret.tls_certificate.watched_directory.path == "/etc/mesh/tls"
    names = {
        config["name"]
        for sidecar in example_build.sidecars.values()
        for name in (ENVOY_LDS, ENVOY_CDS)
        for nested in _anys(sidecar.documents[name]["resources"])
        if "common_tls_context" in nested
        for config in nested["common_tls_context"]["tls_certificate_sds_secret_configs"]
    }
    assert names == {WORKLOAD_CERT}


def test_typed_configs_unpack_to_their_types(example_build: Any) -> None:
    """Walk every Any nested in the documents (filters, TLS, protocol options): each resolves and parses."""
    seen: set[str] = set()
    for sidecar in example_build.sidecars.values():
        for name in (ENVOY_LDS, ENVOY_CDS):
            for nested in _anys(sidecar.documents[name]["resources"]):
                type_name = nested["@type"].removeprefix(PREFIX)
                message = symbol_database.Default().GetSymbol(type_name)()
                json_format.ParseDict({k: v for k, v in nested.items() if k != "@type"}, message)
                seen.add(type_name)
    assert {
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        "envoy.extensions.filters.network.rbac.v3.RBAC",
        "envoy.extensions.filters.http.rbac.v3.RBAC",
        "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
    } <= seen


def _anys(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, list):
        return [found for item in value for found in _anys(item)]
    if isinstance(value, dict):
        own = [value] if "@type" in value else []
        return own + [found for item in value.values() for found in _anys(item)]
    return []


def _first_cds(build: Any) -> dict[str, Any]:
    return copy.deepcopy(build.sidecars["k8s/kube-sjc-a/upload/upload"].documents[ENVOY_CDS])


def test_unknown_field_in_bootstrap_is_rejected(example_build: Any) -> None:
    doc = copy.deepcopy(example_build.sidecars["vm/encryption/sjc"].documents[ENVOY_BOOTSTRAP])
    doc["admin"]["adress"] = doc["admin"].pop("address")
    with pytest.raises(json_format.ParseError, match="adress"):
        parse_bootstrap(doc)


def test_unknown_field_inside_a_resource_is_rejected(example_build: Any) -> None:
    doc = _first_cds(example_build)
    doc["resources"][1]["outlier_detection"]["consecutive_5xxx"] = 5
    with pytest.raises(json_format.ParseError, match="consecutive_5xxx"):
        parse_discovery_response(doc, CLUSTER)


def test_bad_duration_is_rejected(example_build: Any) -> None:
    doc = _first_cds(example_build)
    doc["resources"][1]["connect_timeout"] = "250ms"
    with pytest.raises(json_format.ParseError):
        parse_discovery_response(doc, CLUSTER)


def test_unresolvable_typed_config_is_rejected(example_build: Any) -> None:
    doc = copy.deepcopy(example_build.sidecars["vm/encryption/sjc"].documents[ENVOY_LDS])
    doc["resources"][0]["filter_chains"][0]["transport_socket"]["typed_config"]["@type"] = (
        PREFIX + "envoy.Nope"
    )
    with pytest.raises(json_format.ParseError):
        parse_discovery_response(doc, LISTENER)


def test_removed_v2_field_is_rejected(example_build: Any) -> None:
    doc = _first_cds(example_build)
    doc["resources"][1]["hosts"] = [{"socket_address": {"address": "10.0.0.1", "port_value": 1}}]
    with pytest.raises(json_format.ParseError, match="hosts"):
        parse_discovery_response(doc, CLUSTER)


def test_any_module_is_the_one_we_import() -> None:
    assert any_pb2.Any.DESCRIPTOR.full_name == "google.protobuf.Any"


def eds_file(entry: dict[str, Any], backends: dict[str, list[tuple[str, int]]]) -> dict[str, Any]:
    """The EDS file the Synapse fork writes for one service entry, as README "Synapse fork contract" defines it."""
    localities = sorted(entry["localities"].items(), key=lambda item: (item[1]["priority"], item[0]))
    endpoints = [
        {
            "locality": {"region": loc["region"], "zone": loc["zone"]},
            "priority": loc["priority"],
            "load_balancing_weight": max(1, len(backends.get(name, []))),
            "lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}
                for host, port in backends.get(name, [])
            ],
        }
        for name, loc in localities
    ]
    resource = {
        "@type": PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment",
        "cluster_name": entry["cluster_name"],
        "endpoints": endpoints,
    }
    return {"version_info": "0", "type_url": resource["@type"], "resources": [resource]}


def test_eds_file_of_the_fork_contract_parses_and_feeds_its_cluster(example_build: Any) -> None:
    from envoy.config.endpoint.v3 import endpoint_pb2  # noqa: F401 - registers ClusterLoadAssignment

    sidecar = example_build.sidecars["vm/download/sjc"]
    clusters = {c["name"]: c for c in sidecar.documents[ENVOY_CDS]["resources"]}
    for service, entry in sidecar.documents["synapse/synapse.json"]["services"].items():
        backends = {
            name: [("10.0.0.1", 18080), ("10.0.0.2", 18080)] for name in entry["envoy_eds"]["localities"]
        }
        [assignment] = parse_discovery_response(
            eds_file(entry["envoy_eds"], backends), PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
        )
        assert assignment.cluster_name == clusters[service]["eds_cluster_config"]["service_name"]
        assert sorted({e.priority for e in assignment.endpoints}) == list(
            range(max(e.priority for e in assignment.endpoints) + 1)
        )


def test_every_envoy_document_of_a_synthetic_mesh_parses(tmp_path: Any) -> None:
    from benchmarks.synth import generate
    from compiler.pipeline import compile_dir

    build = compile_dir(generate(tmp_path / "mesh", 80, datacenters=4, clusters=8, deps=6, seed=3))
    distinct = {id(doc): (name, doc) for s in build.sidecars.values() for name, doc in s.documents.items()}
    parsers = {
        ENVOY_BOOTSTRAP: parse_bootstrap,
        ENVOY_LDS: lambda d: parse_discovery_response(d, LISTENER),
        ENVOY_CDS: lambda d: parse_discovery_response(d, CLUSTER),
        ENVOY_SDS: lambda d: parse_discovery_response(d, SECRET),
    }
    parsed = 0
    for name, doc in distinct.values():
        if name in parsers:
            parsers[name](doc)
            parsed += 1
    assert parsed > 80 * 2


# Issue 9 item 10: `timeout: 999999999h` was schema-valid and rendered "3599999996400s", outside
# protobuf's Duration range (315,576,000,000 s). Durations are now at most 24h (certificates 87600h).
def encoded(files: dict[str, str]) -> dict[str, bytes]:
    return {name: text.encode() for name, text in files.items()}


MAXIMAL_DEFAULTS = (
    "defaults:\n  connect_timeout: 86400s\n  timeout: 24h\n"
    "  retries: {attempts: 1, per_try_timeout: 86400000ms}\n"
    "  outlier_detection: {interval: 1440m, base_ejection_time: 24h}\n"
    "  health_check: {interval: 24h, timeout: 24h}\n"
    # cert-manager wants renewBefore < duration: the longest renew_before is a minute under the duration
    "certificates: {issuer: {kind: ClusterIssuer, name: ca}, duration: 87600h, renew_before: 5255999m}\n"
)


def test_every_envoy_document_with_maximal_durations_parses() -> None:
    from compiler.pipeline import compile
    from tests.test_invalid_specs import BASE

    tcp = BASE["services/b.yaml"] + "protocol: tcp\n"
    build = compile(
        encoded({**BASE, "mesh.yaml": BASE["mesh.yaml"] + MAXIMAL_DEFAULTS, "services/b.yaml": tcp}), "spec"
    )
    parsers = {
        ENVOY_BOOTSTRAP: parse_bootstrap,
        ENVOY_LDS: lambda d: parse_discovery_response(d, LISTENER),
        ENVOY_CDS: lambda d: parse_discovery_response(d, CLUSTER),
        ENVOY_SDS: lambda d: parse_discovery_response(d, SECRET),
    }
    seen = []
    for sidecar in build.sidecars.values():
        for name, parse in parsers.items():
            parse(sidecar.documents[name])
            seen.append(name)
    assert len(seen) == 4 * len(build.sidecars) >= 12
    text = str([s.documents[ENVOY_CDS] for s in build.sidecars.values()]) + str(
        [s.documents[ENVOY_LDS] for s in build.sidecars.values()]
    )
    assert "'86400s'" in text  # the maximum reached the documents, it was not clamped on the way


@pytest.mark.parametrize("value", ["24h", "1440m", "86400s", "86400000ms", "1ms"])
def test_durations_up_to_24h_are_schema_valid(value: str) -> None:
    from compiler.pipeline import validate_only
    from tests.test_invalid_specs import BASE

    validate_only(
        encoded({**BASE, "mesh.yaml": BASE["mesh.yaml"] + f"defaults: {{connect_timeout: {value}}}\n"}),
        "spec",
    )


@pytest.mark.parametrize(
    "value", ["25h", "1441m", "86401s", "86400001ms", "999999999h", "0100s", "87601h", "0ms", "0s"]
)
def test_durations_out_of_range_are_invalid(value: str) -> None:
    from compiler.diagnostics import SpecError
    from compiler.pipeline import validate_only
    from tests.test_invalid_specs import BASE

    with pytest.raises(SpecError) as info:
        validate_only(
            encoded({**BASE, "mesh.yaml": BASE["mesh.yaml"] + f"defaults: {{connect_timeout: {value}}}\n"}),
            "spec",
        )
    [found] = info.value.diagnostics
    assert found.code == "invalid-duration" and "at most 24h" in found.message


@pytest.mark.parametrize(
    ("value", "valid"), [("87600h", True), ("315360000s", True), ("87601h", False), ("315360000001ms", False)]
)
def test_certificate_durations_are_bounded_at_ten_years(value: str, valid: bool) -> None:
    from compiler.diagnostics import SpecError
    from compiler.pipeline import validate_only
    from tests.test_invalid_specs import BASE

    files = {
        **BASE,
        "mesh.yaml": BASE["mesh.yaml"]
        + f"certificates: {{issuer: {{kind: ClusterIssuer, name: ca}}, duration: {value}}}\n",
    }
    if valid:
        validate_only(encoded(files), "spec")
    else:
        with pytest.raises(SpecError, match="error"):
            validate_only(encoded(files), "spec")
