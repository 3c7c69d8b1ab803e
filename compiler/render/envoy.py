"""Envoy documents of a workload: a static bootstrap, and the LDS, CDS and SDS responses it hot-reloads."""

from __future__ import annotations

from typing import Any

from compiler.emit import content_digest
from compiler.ir.model import Egress, Ingress, Mesh, Policy, Workload
from compiler.render.documents import ENVOY_CDS, ENVOY_LDS, ENVOY_SDS

TYPE = "type.googleapis.com/"
LISTENER = TYPE + "envoy.config.listener.v3.Listener"
CLUSTER = TYPE + "envoy.config.cluster.v3.Cluster"
SECRET = TYPE + "envoy.extensions.transport_sockets.tls.v3.Secret"
HCM = TYPE + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
TCP_PROXY = TYPE + "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
HTTP_RBAC = TYPE + "envoy.extensions.filters.http.rbac.v3.RBAC"
NETWORK_RBAC = TYPE + "envoy.extensions.filters.network.rbac.v3.RBAC"
ROUTER = TYPE + "envoy.extensions.filters.http.router.v3.Router"
DOWNSTREAM_TLS = TYPE + "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
UPSTREAM_TLS = TYPE + "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
HTTP_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
HTTP_OPTIONS = TYPE + HTTP_OPTIONS_KEY

LOCAL_APP = "local_app"
INGRESS = "ingress"
WORKLOAD_CERT = "workload-cert"
LOCAL_APP_CONNECT_TIMEOUT = "1s"  # the app is on loopback; a slow connect there means it is down


def duration(ms: int) -> str:
    """Milliseconds as a protobuf Duration JSON string: 2000 -> "2s", 600 -> "0.6s"."""
    seconds, rest = divmod(ms, 1000)
    return f"{seconds}s" if not rest else f"{seconds}.{rest:03d}".rstrip("0") + "s"


def egress_listener_name(service: str) -> str:
    """The name of the egress listener that reaches one dependency."""
    return f"egress-{service}"


def document_path(mesh: Mesh, name: str) -> str:
    """Where a sidecar document lives on the host or in the pod."""
    return f"{mesh.sidecar.config_dir}/{name}"


def eds_path(mesh: Mesh, service: str) -> str:
    """The EDS file Synapse writes for a dependency and its CDS cluster reads."""
    return f"{eds_dir(mesh)}/{service}.json"


def eds_dir(mesh: Mesh) -> str:
    """The directory of every EDS file (an emptyDir in pods)."""
    return f"{mesh.sidecar.runtime_dir}/eds"


def discovery_response(type_url: str, resources: list[dict[str, Any]]) -> dict[str, Any]:
    """A DiscoveryResponse file; version_info is a hash of its resources, so it is deterministic."""
    return {"version_info": content_hash(resources), "type_url": type_url, "resources": resources}


def content_hash(data: Any) -> str:
    """16 hex digits of the data's sha256 over canonical JSON (`emit.content_digest`)."""
    return content_digest(data)[:16]


# ---------------------------------------------------------------- bootstrap


def bootstrap(mesh: Mesh, workload: Workload) -> dict[str, Any]:
    """The static bootstrap: who this Envoy is, its admin port, and where LDS/CDS live."""
    return {
        "node": {
            "id": workload.id,
            "cluster": workload.service,
            "locality": {"region": workload.region, "zone": workload.datacenter},
        },
        "admin": {"address": _socket("127.0.0.1", mesh.sidecar.admin_port)},
        "dynamic_resources": {
            "lds_config": _envoy_file_source(mesh, ENVOY_LDS),
            "cds_config": _envoy_file_source(mesh, ENVOY_CDS),
        },
    }


def _file_source(path: str, watched: str) -> dict[str, Any]:
    """A ConfigSource reading a file, reloaded when anything is moved into `watched` (ConfigMap swap)."""
    return {
        "resource_api_version": "V3",
        "path_config_source": {"path": path, "watched_directory": {"path": watched}},
    }


def _envoy_file_source(mesh: Mesh, name: str) -> dict[str, Any]:
    """A document of the Envoy config directory, reloaded by the ConfigMap symlink swap or an atomic rename."""
    return _file_source(document_path(mesh, name), f"{mesh.sidecar.config_dir}/envoy")


def _socket(address: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": address, "port_value": port}}


# ---------------------------------------------------------------- TLS


def sds(mesh: Mesh) -> dict[str, Any]:
    """The SDS file: the workload certificate, re-read when the TLS directory is swapped (renewal)."""
    tls = f"{mesh.sidecar.config_dir}/tls"
    certificate = {
        "certificate_chain": {"filename": f"{tls}/tls.crt"},
        "private_key": {"filename": f"{tls}/tls.key"},
        # cert-manager's Secret mount and the VM PKI both replace the directory's contents atomically.
        "watched_directory": {"path": tls},
    }
    return discovery_response(
        SECRET, [{"@type": SECRET, "name": WORKLOAD_CERT, "tls_certificate": certificate}]
    )


def _common_tls(mesh: Mesh, validation: dict[str, Any]) -> dict[str, Any]:
    """Present the workload certificate (from SDS, so renewal needs no restart) and validate the peer."""
    secret = {"name": WORKLOAD_CERT, "sds_config": _envoy_file_source(mesh, ENVOY_SDS)}
    return {"tls_certificate_sds_secret_configs": [secret], "validation_context": validation}


def _trusted_ca(mesh: Mesh) -> dict[str, Any]:
    return {"filename": f"{mesh.sidecar.config_dir}/tls/ca.crt"}


def _downstream_tls(mesh: Mesh) -> dict[str, Any]:
    """mTLS on ingress: a client must present a certificate of the mesh CA (who may call is RBAC's job)."""
    context = {
        "@type": DOWNSTREAM_TLS,
        "require_client_certificate": True,
        "common_tls_context": _common_tls(mesh, {"trusted_ca": _trusted_ca(mesh)}),
    }
    return {"name": "envoy.transport_sockets.tls", "typed_config": context}


def _upstream_tls(mesh: Mesh, identities: tuple[str, ...]) -> dict[str, Any]:
    """mTLS to a dependency: present our certificate, accept only the dependency's SPIFFE identities."""
    sans = [{"san_type": "URI", "matcher": {"exact": identity}} for identity in identities]
    validation = {"trusted_ca": _trusted_ca(mesh), "match_typed_subject_alt_names": sans}
    context = {"@type": UPSTREAM_TLS, "common_tls_context": _common_tls(mesh, validation)}
    return {"name": "envoy.transport_sockets.tls", "typed_config": context}


# ---------------------------------------------------------------- LDS


def lds(mesh: Mesh, workload: Workload) -> dict[str, Any]:
    """The LDS file: the mTLS ingress listener, then one egress listener per dependency."""
    return lds_document(mesh, workload.ingress, [egress_listener(edge) for edge in workload.egress])


def lds_document(mesh: Mesh, ingress: Ingress, egress: list[dict[str, Any]]) -> dict[str, Any]:
    """The LDS file around egress listeners already rendered (the renderer shares them between services)."""
    return discovery_response(LISTENER, [ingress_listener(mesh, ingress), *egress])


def ingress_listener(mesh: Mesh, ingress: Ingress) -> dict[str, Any]:
    """The listener on mesh_port: mTLS, then only declared clients' identities reach the app."""
    if ingress.protocol == "tcp":
        filters = [_network_rbac(ingress.allowed_clients), _tcp_proxy(INGRESS, LOCAL_APP)]
    else:
        filters = [
            _hcm(
                INGRESS,
                _route_config(INGRESS, LOCAL_APP, {"timeout": "0s"}),
                _http_rbac(ingress.allowed_clients),
            )
        ]
    return {
        "@type": LISTENER,
        "name": INGRESS,
        "address": _socket("0.0.0.0", ingress.mesh_port),
        "filter_chains": [{"filters": filters, "transport_socket": _downstream_tls(mesh)}],
    }


def egress_listener(edge: Egress) -> dict[str, Any]:
    """The loopback listener on the dependency's local_port, with its timeout and retries."""
    name = egress_listener_name(edge.service)
    if edge.protocol == "tcp":
        filters = [_tcp_proxy(name, edge.service, max_connect_attempts=edge.policy.retries.attempts)]
    else:
        filters = [_hcm(name, _route_config(edge.service, edge.service, _route_policy(edge.policy)))]
    return {
        "@type": LISTENER,
        "name": name,
        "address": _socket("127.0.0.1", edge.local_port),
        "filter_chains": [{"filters": filters}],
    }


def _route_policy(policy: Policy) -> dict[str, Any]:
    retries = policy.retries
    return {
        "timeout": duration(policy.timeout_ms),
        "retry_policy": {
            "retry_on": ",".join(retries.retry_on),
            "num_retries": retries.attempts - 1,  # attempts counts the first try
            "per_try_timeout": duration(retries.per_try_timeout_ms),
        },
    }


def _route_config(name: str, cluster: str, action: dict[str, Any]) -> dict[str, Any]:
    route = {"match": {"prefix": "/"}, "route": {"cluster": cluster, **action}}
    return {"name": name, "virtual_hosts": [{"name": name, "domains": ["*"], "routes": [route]}]}


def _hcm(stat_prefix: str, route_config: dict[str, Any], *filters: dict[str, Any]) -> dict[str, Any]:
    config = {
        "@type": HCM,
        "stat_prefix": stat_prefix,
        "codec_type": "AUTO",
        "route_config": route_config,
        "http_filters": [*filters, {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}],
    }
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": config}


def _tcp_proxy(stat_prefix: str, cluster: str, max_connect_attempts: int | None = None) -> dict[str, Any]:
    config: dict[str, Any] = {"@type": TCP_PROXY, "stat_prefix": stat_prefix, "cluster": cluster}
    if max_connect_attempts is not None:
        config["max_connect_attempts"] = max_connect_attempts
    return {"name": "envoy.filters.network.tcp_proxy", "typed_config": config}


def _rbac_rules(allowed: tuple[str, ...]) -> dict[str, Any]:
    """ALLOW only the listed URI SANs; with no client at all, no policy, so every request is denied."""
    if not allowed:
        return {"action": "ALLOW"}
    principals = [{"authenticated": {"principal_name": {"exact": identity}}} for identity in allowed]
    return {
        "action": "ALLOW",
        "policies": {"mesh-clients": {"permissions": [{"any": True}], "principals": principals}},
    }


def _http_rbac(allowed: tuple[str, ...]) -> dict[str, Any]:
    return {
        "name": "envoy.filters.http.rbac",
        "typed_config": {"@type": HTTP_RBAC, "rules": _rbac_rules(allowed)},
    }


def _network_rbac(allowed: tuple[str, ...]) -> dict[str, Any]:
    config = {"@type": NETWORK_RBAC, "stat_prefix": INGRESS, "rules": _rbac_rules(allowed)}
    return {"name": "envoy.filters.network.rbac", "typed_config": config}


def allowed_principals(lds_doc: dict[str, Any]) -> list[str]:
    """The client identities the ingress listener of an LDS document admits (for invariants and tests)."""
    found = []
    for listener in lds_doc["resources"]:
        if listener["name"] != INGRESS:
            continue
        for chain in listener["filter_chains"]:
            for rules in _rbac_configs(chain["filters"]):
                for policy in rules.get("policies", {}).values():
                    found += [p["authenticated"]["principal_name"]["exact"] for p in policy["principals"]]
    return found


def _rbac_configs(filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    configs = []
    for item in filters:
        config = item["typed_config"]
        if config["@type"] == NETWORK_RBAC:
            configs.append(config["rules"])
        elif config["@type"] == HCM:
            configs += [
                f["typed_config"]["rules"]
                for f in config["http_filters"]
                if f["typed_config"]["@type"] == HTTP_RBAC
            ]
    return configs


# ---------------------------------------------------------------- CDS


def cds(mesh: Mesh, workload: Workload) -> dict[str, Any]:
    """The CDS file: the local app, then one EDS cluster per dependency."""
    return cds_document(workload.ingress, [dependency_cluster(mesh, edge) for edge in workload.egress])


def cds_document(ingress: Ingress, dependencies: list[dict[str, Any]]) -> dict[str, Any]:
    """The CDS file around dependency clusters already rendered (the renderer shares them between services)."""
    return discovery_response(CLUSTER, [local_app_cluster(ingress), *dependencies])


def local_app_cluster(ingress: Ingress) -> dict[str, Any]:
    """The app itself, on 127.0.0.1:port; a gRPC app speaks HTTP/2."""
    endpoint = {"endpoint": {"address": _socket("127.0.0.1", ingress.app_port)}}
    cluster = {
        "@type": CLUSTER,
        "name": LOCAL_APP,
        "type": "STATIC",
        "connect_timeout": LOCAL_APP_CONNECT_TIMEOUT,
        "load_assignment": {"cluster_name": LOCAL_APP, "endpoints": [{"lb_endpoints": [endpoint]}]},
    }
    return cluster | _protocol_options(ingress.protocol)


def dependency_cluster(mesh: Mesh, edge: Egress) -> dict[str, Any]:
    """An EDS cluster fed by the file Synapse writes, failing over by priority across localities."""
    policy = edge.policy
    cluster = {
        "@type": CLUSTER,
        "name": edge.service,
        "type": "EDS",
        "connect_timeout": duration(policy.connect_timeout_ms),
        "eds_cluster_config": {
            "service_name": edge.service,
            "eds_config": _file_source(eds_path(mesh, edge.service), eds_dir(mesh)),
        },
        "circuit_breakers": {"thresholds": [_thresholds(policy)]},
        "outlier_detection": _outlier_detection(policy),
        "common_lb_config": {"locality_weighted_lb_config": {}},
        "transport_socket": _upstream_tls(mesh, edge.server_identities),
    }
    return cluster | _protocol_options(edge.protocol)


def eds_config_path(cluster: dict[str, Any]) -> str | None:
    """The EDS file a CDS cluster reads, or None for a cluster that is not EDS."""
    if cluster.get("type") != "EDS":
        return None
    path: str = cluster["eds_cluster_config"]["eds_config"]["path_config_source"]["path"]
    return path


def _thresholds(policy: Policy) -> dict[str, Any]:
    breaker = policy.circuit_breaker
    return {
        "priority": "DEFAULT",
        "max_connections": breaker.max_connections,
        "max_pending_requests": breaker.max_pending_requests,
        "max_requests": breaker.max_requests,
        "max_retries": breaker.max_retries,
    }


def _outlier_detection(policy: Policy) -> dict[str, Any]:
    outlier = policy.outlier_detection
    return {
        "consecutive_5xx": outlier.consecutive_5xx,
        "interval": duration(outlier.interval_ms),
        "base_ejection_time": duration(outlier.base_ejection_time_ms),
        "max_ejection_percent": outlier.max_ejection_percent,
    }


def _protocol_options(protocol: str) -> dict[str, Any]:
    """gRPC needs HTTP/2 to the upstream; http and tcp keep Envoy's defaults."""
    if protocol != "grpc":
        return {}
    options = {"@type": HTTP_OPTIONS, "explicit_http_config": {"http2_protocol_options": {}}}
    return {"typed_extension_protocol_options": {HTTP_OPTIONS_KEY: options}}
