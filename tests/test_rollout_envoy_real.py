"""Expand before contract, proven with a real Envoy: a new dependency whose server sits in a later wave.

audit-log (canary wave, gcp-usc1) starts calling auth (VM pools in sjc and iad: later waves, still on
the pinned revision). The naive per-wave selection gives auth/sjc the pinned revision's rendering,
whose RBAC does not know audit-log: the request is refused (403). meshc's rollout build gives it the
pinned revision rendered with the allow-list widened over every live revision: the request reaches the app.
"""

from __future__ import annotations

import http.client
import http.server
import json
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from compiler.emit import dump_json
from compiler.gitsource import locate, read_revision
from compiler.pipeline import compile
from compiler.render import ENVOY_BOOTSTRAP
from compiler.rollout.output import output_for
from tests.test_render_envoy_real import (
    Sidecar,
    _wait_live,
    envoy_binary,
    free_port,
    make_ca,
    make_leaf,
    mount_secret,
)
from tests.test_rollout_build import POLICY, ROLLOUT, SPEC, commit, make_repo, replace_in, set_policy

pytestmark = pytest.mark.consumer  # every test here hands artifacts to a real Envoy

AUTH = "vm/auth/sjc"
CLIENT_IDENTITY = "spiffe://box.mesh/ns/audit-log/sa/audit-log"


@pytest.fixture
def ports(example_ports: None) -> dict[str, int]:
    """Free ports for auth's admin, app and ingress; its egress listener keeps user-store's fixed local port."""
    return {"admin": free_port(), "app": free_port(), "mesh": free_port()}


@pytest.fixture
def app(ports: dict[str, int]) -> Iterator[int]:
    """auth's app: answers 200 to anything on its app port."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            body = b"auth app\n"
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", ports["app"]), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield ports["app"]
    server.shutdown()
    server.server_close()


def rollout_repo(root: Path, ports: dict[str, int]) -> tuple[Path, str, str]:
    """The example spec, sidecar paths under `root`, free ports for auth; rollout pinned at base; the new dependency."""
    repo = make_repo(root / "repo")
    spec = repo / SPEC
    mesh = spec / "mesh.yaml"
    for old, new in (
        ("admin_port: 9901", f"admin_port: {ports['admin']}"),
        ("config_dir: /etc/mesh", f"config_dir: {root}/etc"),
        ("runtime_dir: /var/run/mesh", f"runtime_dir: {root}/var"),
    ):
        replace_in(mesh, old, new)
    set_policy(spec, POLICY)
    replace_in(spec / "services/auth.yaml", "\nport: 8080", f"\nport: {ports['app']}")
    replace_in(spec / "services/auth.yaml", "mesh_port: 18080", f"mesh_port: {ports['mesh']}")
    base = commit(repo, "base")
    (spec / "rollout.yaml").write_text(ROLLOUT.format(west=base, rest=base))
    commit(repo, "rollout")
    (spec / "services/audit-log.yaml").write_text(
        (spec / "services/audit-log.yaml").read_text() + "  - service: auth\n"
    )
    return spec, base, commit(repo, "audit-log calls auth")


def run_server(root: Path, documents: dict[str, Any], ca: tuple[Path, Path], admin: int) -> Sidecar:
    """auth's sidecar in a real Envoy, with the given documents and a certificate for auth's identity."""
    for name, document in documents.items():
        (root / "etc" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "etc" / name).write_bytes(dump_json(document))
    crt, key = make_leaf(root / "issued", "auth", "spiffe://box.mesh/ns/auth/sa/auth", ca)
    mount_secret(
        root / "etc" / "tls",
        {"tls.crt": crt.read_bytes(), "tls.key": key.read_bytes(), "ca.crt": ca[0].read_bytes()},
        1,
    )
    log = root / "envoy.log"
    process = subprocess.Popen(
        [envoy_binary(), "-c", str(root / "etc" / ENVOY_BOOTSTRAP), "--disable-hot-restart", "-l", "warning"],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    sidecar = Sidecar(root=root, admin=admin, documents=documents, ca=ca, process=process)
    try:
        _wait_live(sidecar, log)
    except BaseException:
        process.terminate()
        process.wait(timeout=10)
        raise
    return sidecar


def call(sidecar: Sidecar, mesh_port: int, client: tuple[Path, Path]) -> tuple[int, str]:
    """A request to auth's ingress with audit-log's certificate, as audit-log's sidecar makes it."""
    context = ssl.create_default_context(cafile=str(sidecar.ca[0]))
    context.check_hostname = False
    context.load_cert_chain(str(client[0]), str(client[1]))
    connection = http.client.HTTPSConnection("127.0.0.1", mesh_port, context=context, timeout=5)
    try:
        connection.request("GET", "/")
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def test_naive_selection_refuses_the_new_client_and_every_state_meshc_writes_admits_it(
    tmp_path: Path, ports: dict[str, int], app: int
) -> None:
    envoy_binary()
    spec, base, head = rollout_repo(tmp_path, ports)
    # wave west's revision, as it was
    naive = compile(read_revision(locate(spec), base), SPEC).sidecars[AUTH].documents
    states = {"naive": dict(naive)}
    # the state now (auth/sjc in wave west, still at base), then after each promotion
    for name, west, rest in (("now", base, base), ("west promoted", head, base), ("done", head, head)):
        (spec / "rollout.yaml").write_text(ROLLOUT.format(west=west, rest=rest))
        tree = output_for(spec)
        assert json.loads(tree["MANIFEST.json"])["rollout"]["targets"][AUTH] == {
            "wave": "west",
            "revision": west,
        }
        states[name] = json.loads(tree["puppet/data/pools/auth/sjc.json"])["mesh::sidecar"]
        assert "%{" not in json.dumps(states[name]), "no hiera escapes to undo in these documents"
    # auth's own spec did not change: widened, base renders for auth exactly what the head renders
    assert states["now"] == states["west promoted"] == states["done"] != states["naive"]
    ca = make_ca(tmp_path / "ca")
    client = make_leaf(tmp_path / "client", "audit-log", CLIENT_IDENTITY, ca)
    results = {}
    for name, documents in (
        ("naive", states["naive"]),
        ("meshc", states["now"]),
    ):  # every meshc state has these documents
        sidecar = run_server(tmp_path, documents, ca, ports["admin"])
        try:
            results[name] = call(sidecar, ports["mesh"], client)
        finally:
            sidecar.process.terminate()
            sidecar.process.wait(timeout=10)
            shutil.rmtree(tmp_path / "etc", ignore_errors=True)
    assert results == {"naive": (403, "RBAC: access denied"), "meshc": (200, "auth app\n")}
