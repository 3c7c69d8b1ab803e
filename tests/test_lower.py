"""Lowering to the IR: workloads, identities, authorization, effective policies, registrations."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import write_spec

from compiler.ir.lower import lower
from compiler.ir.model import CircuitBreaker, HealthCheck, Mesh, OutlierDetection, Policy, Retries, Workload
from compiler.pipeline import validate_only
from compiler.spec.load import spec_files

MESH = """\
mesh: m
trust_domain: m.mesh
datacenters:
  sjc: {region: us-west, zookeeper: [zk1.sjc:2181, zk2.sjc:2181], failover: [iad]}
  iad: {region: us-east, zookeeper: [zk1.iad:2181], failover: [sjc]}
clusters:
  kube-sjc: {datacenter: sjc, api_server: https://kube-sjc.example:6443}
  kube-iad: {datacenter: iad, api_server: https://kube-iad.example:6443}
defaults:
  timeout: 10s
  retries: {attempts: 2, per_try_timeout: 4s}
  circuit_breaker: {max_requests: 2048}
  health_check: {http: /health, interval: 3s}
"""

SERVICES = {
    # VM-only, called by web and worker
    "db": """\
service: db
owner: data
port: 5432
mesh_port: 15432
local_port: 7001
protocol: tcp
restart_sensitive: true
deploy: {vm: {datacenters: [sjc, iad]}}
""",
    # mixed, with a custom namespace in one cluster
    "web": """\
service: web
owner: frontend
port: 8080
mesh_port: 18080
local_port: 7002
health_check: {http: /ready, rise: 5}
deploy:
  vm: {datacenters: [iad]}
  kubernetes:
    - {cluster: kube-sjc}
    - {cluster: kube-iad, namespace: frontend}
dependencies:
  - service: db  # tcp: no timeout or per-try timeout (tcp-http-policy), connection attempts and breakers apply
    connect_timeout: 2s
    retries: {attempts: 4}
    circuit_breaker: {max_connections: 10}
  - service: api
""",
    # Kubernetes-only, no overrides
    "api": """\
service: api
owner: platform
port: 8080
mesh_port: 18080
local_port: 7003
protocol: grpc
deploy: {kubernetes: [{cluster: kube-iad}]}
dependencies:
  - service: db
""",
    "worker": """\
service: worker
owner: data
port: 9000
mesh_port: 19000
local_port: 7004
deploy: {vm: {datacenters: [sjc]}}
dependencies:
  - service: db
""",
}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Mesh:
    files = {"mesh.yaml": MESH, **{f"services/{name}.yaml": text for name, text in SERVICES.items()}}
    root = write_spec(tmp_path_factory.mktemp("lower") / "spec", files)
    return lower(validate_only(spec_files(root), "spec"))


def workload(mesh: Mesh, wid: str) -> Workload:
    return next(w for w in mesh.workloads if w.id == wid)


def test_workload_ids_sorted(mesh: Mesh) -> None:
    assert [w.id for w in mesh.workloads] == [
        "k8s/kube-iad/api/api",
        "k8s/kube-iad/frontend/web",
        "k8s/kube-sjc/web/web",
        "vm/db/iad",
        "vm/db/sjc",
        "vm/web/iad",
        "vm/worker/sjc",
    ]


def test_workload_placement_fields(mesh: Mesh) -> None:
    web = workload(mesh, "k8s/kube-iad/frontend/web")
    assert (web.platform, web.service, web.datacenter, web.region, web.cluster, web.namespace, web.owner) == (
        "kubernetes",
        "web",
        "iad",
        "us-east",
        "kube-iad",
        "frontend",
        "frontend",
    )
    pool = workload(mesh, "vm/db/sjc")
    assert (
        pool.platform,
        pool.datacenter,
        pool.region,
        pool.cluster,
        pool.namespace,
        pool.restart_sensitive,
    ) == ("vm", "sjc", "us-west", None, "db", True)


def test_spans_point_at_the_spec(mesh: Mesh) -> None:
    assert str(workload(mesh, "vm/db/sjc").span) == "spec/services/db.yaml:1:10"
    assert str(workload(mesh, "k8s/kube-iad/frontend/web").span) == "spec/services/web.yaml:11:7"
    assert str(workload(mesh, "vm/web/iad").egress[0].span) == "spec/services/web.yaml:13:14"


def test_identities(mesh: Mesh) -> None:
    assert workload(mesh, "vm/db/sjc").identity == "spiffe://m.mesh/ns/db/sa/db"
    # VM pools: namespace = service
    assert workload(mesh, "vm/web/iad").identity == "spiffe://m.mesh/ns/web/sa/web"
    # a deployment has the same identity as its VMs
    assert workload(mesh, "k8s/kube-sjc/web/web").identity == "spiffe://m.mesh/ns/web/sa/web"
    assert workload(mesh, "k8s/kube-iad/frontend/web").identity == "spiffe://m.mesh/ns/frontend/sa/web"


def test_allowed_clients_are_every_service_depending_on_it(mesh: Mesh) -> None:
    ingress = workload(mesh, "vm/db/iad").ingress
    assert ingress.client_services == ("api", "web", "worker")
    assert ingress.allowed_clients == (
        "spiffe://m.mesh/ns/api/sa/api",
        "spiffe://m.mesh/ns/frontend/sa/web",  # every namespace a client runs in
        "spiffe://m.mesh/ns/web/sa/web",
        "spiffe://m.mesh/ns/worker/sa/worker",
    )
    assert (ingress.mesh_port, ingress.app_port, ingress.protocol) == (15432, 5432, "tcp")
    # the same ingress on every workload of the service
    assert {w.ingress for w in mesh.workloads_of("db")} == {ingress}


def test_nobody_calls_worker(mesh: Mesh) -> None:
    ingress = workload(mesh, "vm/worker/sjc").ingress
    assert ingress.client_services == () and ingress.allowed_clients == ()


def test_egress_per_dependency(mesh: Mesh) -> None:
    egress = workload(mesh, "k8s/kube-sjc/web/web").egress
    assert [(e.service, e.local_port, e.protocol, e.locality) for e in egress] == [
        ("db", 7001, "tcp", "failover"),
        ("api", 7003, "grpc", "failover"),
    ]
    assert egress[0].server_identities == ("spiffe://m.mesh/ns/db/sa/db",)
    assert egress[1].server_identities == ("spiffe://m.mesh/ns/api/sa/api",)


DEFAULT_POLICY = Policy(
    connect_timeout_ms=1000,  # built in
    timeout_ms=10_000,  # mesh.yaml defaults
    retries=Retries(attempts=2, per_try_timeout_ms=4000, retry_on=("connect-failure", "reset", "5xx")),
    circuit_breaker=CircuitBreaker(
        max_connections=1024, max_pending_requests=1024, max_requests=2048, max_retries=3
    ),
    outlier_detection=OutlierDetection(
        consecutive_5xx=5, interval_ms=10_000, base_ejection_time_ms=30_000, max_ejection_percent=50
    ),
)


def test_policy_is_defaults_when_the_edge_overrides_nothing(mesh: Mesh) -> None:
    assert workload(mesh, "k8s/kube-iad/api/api").egress[0].policy == DEFAULT_POLICY
    assert workload(mesh, "vm/web/iad").egress[1].policy == DEFAULT_POLICY


def test_policy_overrides_are_laid_over_the_defaults_key_by_key(mesh: Mesh) -> None:
    policy = workload(mesh, "vm/web/iad").egress[0].policy
    assert policy == Policy(
        connect_timeout_ms=2000,
        timeout_ms=10_000,
        # per-try and `on` kept
        retries=Retries(attempts=4, per_try_timeout_ms=4000, retry_on=("connect-failure", "reset", "5xx")),
        circuit_breaker=CircuitBreaker(
            max_connections=10, max_pending_requests=1024, max_requests=2048, max_retries=3
        ),
        outlier_detection=DEFAULT_POLICY.outlier_detection,
    )


def test_registration_only_for_vms(mesh: Mesh) -> None:
    assert all((w.registration is None) == (w.platform == "kubernetes") for w in mesh.workloads)
    registration = workload(mesh, "vm/db/sjc").registration
    assert registration is not None
    assert registration.zk_hosts == ("zk1.sjc:2181", "zk2.sjc:2181")
    assert registration.zk_path == "/nerve/services/db/services"
    assert registration.port == 15432
    assert dict(registration.labels) == {"datacenter": "sjc", "region": "us-west"}


def test_health_checks(mesh: Mesh) -> None:
    # tcp service without its own path: a TCP check, timings from the mesh defaults
    assert workload(mesh, "vm/db/iad").registration.health_check == HealthCheck(
        kind="tcp", path=None, interval_ms=3000, timeout_ms=1000, rise=3, fall=2
    )
    # the service's own keys over the mesh defaults
    assert workload(mesh, "vm/web/iad").registration.health_check == HealthCheck(
        kind="http", path="/ready", interval_ms=3000, timeout_ms=1000, rise=5, fall=2
    )


def test_grpc_services_check_tcp_unless_they_name_a_path(tmp_path: Path) -> None:
    """Nerve's http check speaks HTTP/1.1, which a gRPC server refuses: the mesh default path (`/health`) would
    keep every host of a grpc service unregistered, so it checks TCP; a path the service names itself is kept."""
    grpc = "service: {name}\nowner: o\nport: 8080\nmesh_port: 18080\nlocal_port: {port}\nprotocol: grpc\n"
    grpc += "deploy: {{vm: {{datacenters: [sjc]}}}}\n"
    files = {
        "mesh.yaml": MESH,
        "services/plain.yaml": grpc.format(name="plain", port=7001),
        "services/gateway.yaml": grpc.format(name="gateway", port=7002) + "health_check: {http: /healthz}\n",
    }
    mesh = lower(validate_only(spec_files(write_spec(tmp_path / "spec", files)), "spec"))
    checks = {w.id: w.registration.health_check for w in mesh.workloads if w.registration is not None}
    assert (checks["vm/plain/sjc"].kind, checks["vm/plain/sjc"].path) == ("tcp", None)
    assert (checks["vm/gateway/sjc"].kind, checks["vm/gateway/sjc"].path) == ("http", "/healthz")
    assert checks["vm/plain/sjc"].interval_ms == 3000, "the mesh default's timings still apply"


def test_mesh_settings_carried(mesh: Mesh) -> None:
    assert (mesh.name, mesh.trust_domain) == ("m", "m.mesh")
    assert (mesh.sidecar.admin_port, mesh.sidecar.config_dir, mesh.sidecar.runtime_dir) == (
        9901,
        "/etc/mesh",
        "/var/run/mesh",
    )
    assert (mesh.issuer.kind, mesh.issuer.name) == ("ClusterIssuer", "mesh-ca")
    assert list(mesh.datacenters) == ["sjc", "iad"] and list(mesh.clusters) == ["kube-sjc", "kube-iad"]


def test_ir_is_frozen(mesh: Mesh) -> None:
    with pytest.raises(AttributeError):
        mesh.workloads[0].id = "x"  # type: ignore[misc]


def test_example_mesh_lowers(example_build) -> None:
    mesh = example_build.mesh
    ids = [w.id for w in mesh.workloads]
    assert ids == sorted(ids) and len(ids) == len(set(ids))
    upload = mesh.workloads_of("upload")
    assert {w.id for w in upload} == {"k8s/kube-sjc-a/upload/upload", "k8s/kube-iad-a/upload/upload"}
    encryption = mesh.workloads_of("encryption")[0]
    assert "spiffe://box.mesh/ns/upload/sa/upload" in encryption.ingress.allowed_clients
    edge = next(e for e in upload[0].egress if e.service == "encryption")
    assert (edge.policy.timeout_ms, edge.policy.retries.attempts, edge.policy.retries.per_try_timeout_ms) == (
        2000,
        3,
        600,
    )
