"""Invalid specs: every case under tests/invalid/ fails `meshc validate` with exactly its annotated diagnostics.

Annotations follow tests/invalid/README.md: `# E:<col> [<code>] <text>` at the end of the offending
line, or `<file>:<line>:<col> [<code>] <text>` lines in the case's expected.txt.

The cases call `compiler.cli.main` in-process (a child process per case cost ~0.45 s of imports and
tested nothing more); the `*_process` tests below keep the real exit path, `python -m compiler`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from compiler.diagnostics import CODES
from compiler.spec.document import MAX_FILE_BYTES
from tests.conftest import meshc_in_process

ROOT = Path(__file__).resolve().parent.parent
CASES_DIR = Path(__file__).resolve().parent / "invalid"
CASES = sorted(p.name for p in CASES_DIR.iterdir() if p.is_dir())

ANNOTATION = re.compile(r"#\s*E:(?P<col>\d+)\s+\[(?P<code>[a-z0-9-]+)\](?P<text>[^#]*)")
EXPECTED_LINE = re.compile(r"(?P<file>\S+):(?P<line>\d+):(?P<col>\d+)\s+\[(?P<code>[a-z0-9-]+)\](?P<text>.*)")
DIAGNOSTIC = re.compile(
    r"(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): error: (?P<message>.*)  \[(?P<code>[a-z0-9-]+)\]"
)

# The spec layer (loader, schemas, checks) names its codes as string literals; each needs a case.
SPEC_LAYER = [
    *(ROOT / "compiler" / "spec").rglob("*.py"),
    *(ROOT / "compiler" / "spec" / "schema").glob("*.json"),
]

# A minimal valid spec; the generated cases below break one file of it.
BASE = {
    "mesh.yaml": (
        "mesh: m\ntrust_domain: m.mesh\ndatacenters:\n"
        "  sjc: {region: us-west, zookeeper: [zk.sjc:2181], failover: [iad]}\n"
        "  iad: {region: us-east, zookeeper: [zk.iad:2181], failover: [sjc]}\n"
        "clusters:\n  kube-a: {datacenter: sjc, api_server: https://kube-a.example:6443}\n"
    ),
    "services/a.yaml": (
        "service: a\nowner: team\nport: 8080\nmesh_port: 18080\nlocal_port: 7001\n"
        "deploy:\n  vm: {datacenters: [sjc, iad]}\ndependencies:\n  - service: b\n"
    ),
    "services/b.yaml": (
        "service: b\nowner: team\nport: 8080\nmesh_port: 18080\nlocal_port: 7002\n"
        "deploy:\n  vm: {datacenters: [iad]}\n  kubernetes:\n    - {cluster: kube-a}\n"
    ),
}

Key = tuple[str, int, int, str]


@dataclass(frozen=True, kw_only=True, slots=True)
class Expected:
    """One annotated diagnostic: where, which code, and a fragment its message must contain."""

    file: str
    line: int
    col: int
    code: str
    text: str

    @property
    def key(self) -> Key:
        return (self.file, self.line, self.col, self.code)


def expectations(spec_dir: Path) -> list[Expected]:
    """Every annotation in a case: trailing `# E:` comments in its files, plus expected.txt."""
    found: list[Expected] = []
    for path in sorted(p for p in spec_dir.rglob("*") if p.is_file() and p.name != "expected.txt"):
        relative = path.relative_to(spec_dir).as_posix()
        # errors="replace": a case may hold bytes that are not UTF-8 on purpose
        for number, line in enumerate(
            path.read_bytes().decode("utf-8", errors="replace").splitlines(), start=1
        ):
            for match in ANNOTATION.finditer(line):
                found.append(
                    Expected(
                        file=relative,
                        line=number,
                        col=int(match["col"]),
                        code=match["code"],
                        text=match["text"].strip(),
                    )
                )
    listing = spec_dir / "expected.txt"
    if listing.exists():
        for line in listing.read_text("utf-8").splitlines():
            if line.strip() and not line.startswith("#"):
                match = EXPECTED_LINE.fullmatch(line.strip())
                assert match, f"{listing}: cannot read {line!r}"
                found.append(
                    Expected(
                        file=match["file"],
                        line=int(match["line"]),
                        col=int(match["col"]),
                        code=match["code"],
                        text=match["text"].strip(),
                    )
                )
    return found


def run_validate(cwd: Path, spec: str) -> subprocess.CompletedProcess[str]:
    """`meshc validate SPEC` run from `cwd` in this process: the exit code `main` returns and what it printed."""
    return meshc_in_process("validate", spec, cwd=cwd)


def run_validate_process(cwd: Path, spec: str) -> subprocess.CompletedProcess[str]:
    """`python -m compiler validate SPEC` in a child process, as a user runs it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MESHC_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "compiler", "validate", spec],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def reported(result: subprocess.CompletedProcess[str], label: str) -> dict[Key, str]:
    """The diagnostics a run printed, keyed by (file relative to the spec, line, col, code) -> message."""
    found: dict[Key, str] = {}
    for line in result.stderr.splitlines():
        match = DIAGNOSTIC.fullmatch(line)
        if match:
            assert match["file"].startswith(label + "/"), f"diagnostic names a file outside the spec: {line}"
            key = (match["file"][len(label) + 1 :], int(match["line"]), int(match["col"]), match["code"])
            assert key not in found, f"diagnostic printed twice: {line}"
            found[key] = match["message"]
    return found


def assert_fails_as_annotated(
    cwd: Path,
    spec: str,
    expected: list[Expected],
    run: Callable[[Path, str], subprocess.CompletedProcess[str]] = run_validate,
) -> dict[Key, str]:
    """Run validate on one spec and compare its diagnostics with the annotations, exactly."""
    assert expected, f"{spec}: no annotations"
    result = run(cwd, spec)
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert result.returncode == 2, f"exit {result.returncode}:\n{output}"
    found = reported(result, spec)
    assert sorted(found) == sorted(e.key for e in expected), output
    for item in expected:
        assert item.text in found[item.key], f"{item.key}: {found[item.key]!r} does not contain {item.text!r}"
    summary = result.stderr.strip().splitlines()[-1]
    assert summary.startswith(f"Found {len(expected)} error"), summary
    return found


@pytest.mark.parametrize("case", CASES)
def test_invalid_spec(case: str) -> None:
    assert_fails_as_annotated(CASES_DIR, case, expectations(CASES_DIR / case))


def write_spec(root: Path, files: dict[str, bytes | str]) -> None:
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)


def test_base_spec_is_valid(tmp_path: Path) -> None:
    write_spec(tmp_path / "spec", BASE)
    result = run_validate(tmp_path, "spec")
    assert result.returncode == 0, result.stderr


def test_base_spec_is_valid_process(tmp_path: Path) -> None:
    write_spec(tmp_path / "spec", BASE)
    result = run_validate_process(tmp_path, "spec")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == "spec: ok, 2 services in 2 datacenters\n"


def test_file_encoding(tmp_path: Path) -> None:
    # 0xe9 is `é` in Latin-1, a classic of files saved by the wrong editor; line 2, column 11.
    write_spec(tmp_path / "spec", {**BASE, "services/a.yaml": b"service: a\nowner: caf\xe9\nport: 8080\n"})
    expected = [
        Expected(file="services/a.yaml", line=2, col=11, code="file-encoding", text="byte 0xe9 is not UTF-8")
    ]
    assert_fails_as_annotated(tmp_path, "spec", expected)
    # The same through a real process: the message about a non-UTF-8 byte survives the real stderr.
    assert_fails_as_annotated(tmp_path, "spec", expected, run=run_validate_process)


def test_file_too_large(tmp_path: Path) -> None:
    padding = "#" * 79 + "\n"
    body = BASE["services/b.yaml"] + padding * (MAX_FILE_BYTES // len(padding) + 1)
    write_spec(tmp_path / "spec", {**BASE, "services/b.yaml": body})
    expected = [
        Expected(file="services/b.yaml", line=1, col=1, code="file-too-large", text="larger than 1024 KiB")
    ]
    assert_fails_as_annotated(tmp_path, "spec", expected)


def test_integers_too_long_to_convert_are_range_errors(tmp_path: Path) -> None:
    # 5,001 and 4,401 digits: past int()'s 4,300-digit limit (once `internal error: ValueError`, exit 3)
    port, connections = "9" * 5001, "1" + "0" * 4400
    service = BASE["services/a.yaml"].replace("port: 8080", f"port: {port}")
    service += f"    circuit_breaker: {{max_connections: {connections}}}\n"
    write_spec(tmp_path / "spec", {**BASE, "services/a.yaml": service})
    expected = [
        Expected(file="services/a.yaml", line=3, col=7, code="port-range", text=f"port: {'9' * 63}… must be"),
        Expected(
            file="services/a.yaml",
            line=10,
            col=40,
            code="schema",
            text=f"max_connections: 1{'0' * 62}… is more than the maximum, 1000000",
        ),
    ]
    assert_fails_as_annotated(tmp_path, "spec", expected)
    assert_fails_as_annotated(tmp_path, "spec", expected, run=run_validate_process)


def test_file_at_the_limit_is_read(tmp_path: Path) -> None:
    body = BASE["services/b.yaml"]
    body += "#" * (MAX_FILE_BYTES - len(body) - 1) + "\n"
    assert len(body) == MAX_FILE_BYTES
    write_spec(tmp_path / "spec", {**BASE, "services/b.yaml": body})
    assert run_validate(tmp_path, "spec").returncode == 0


def test_missing_spec_directory_process(tmp_path: Path) -> None:
    result = run_validate_process(tmp_path, "nowhere")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "spec directory 'nowhere' does not exist" in result.stderr


# Exact messages, as packaging's tests pin them: these are the words users read.


def test_message_unknown_key_did_you_mean() -> None:
    found = reported(run_validate(CASES_DIR, "unknown-key-did-you-mean"), "unknown-key-did-you-mean")
    assert found == {
        ("services/a.yaml", 8, 1, "unknown-key"): "unknown key 'dependancies' (did you mean 'dependencies'?)"
    }


def test_message_unknown_key_allowed_here() -> None:
    found = reported(run_validate(CASES_DIR, "unknown-key-allowed-here"), "unknown-key-allowed-here")
    assert found == {
        ("services/a.yaml", 11, 5, "unknown-key"): "unknown key 'per_try' in dependencies[0]; allowed here: "
        "service, connect_timeout, timeout, retries, circuit_breaker, outlier_detection"
    }


def test_message_unknown_dependency_did_you_mean() -> None:
    found = reported(run_validate(CASES_DIR, "unknown-dependency"), "unknown-dependency")
    assert found == {
        (
            "services/a.yaml",
            9,
            14,
            "unknown-dependency",
        ): "unknown dependency 'bb' (did you mean 'b'?); add services/bb.yaml or fix the name"
    }


def test_message_retry_budget() -> None:
    found = reported(run_validate(CASES_DIR, "retry-budget"), "retry-budget")
    assert found == {
        (
            "services/a.yaml",
            9,
            14,
            "retry-budget",
        ): "dependency 'b': 3 attempts × 500ms per try = 1500ms exceeds the timeout 1s; "
        "set per_try_timeout to at most 333ms or raise timeout"
    }


def test_message_retry_budget_defaults() -> None:
    found = reported(run_validate(CASES_DIR, "retry-budget-defaults"), "retry-budget-defaults")
    assert found == {
        (
            "mesh.yaml",
            8,
            1,
            "retry-budget",
        ): "defaults: 2 attempts × 5s per try = 10000ms exceeds the timeout 8s; "
        "set per_try_timeout to at most 4000ms or raise timeout"
    }


# Values a consumer rejects (Envoy, cert-manager, Nerve, the Kubernetes API server): the words users read.


def test_message_zero_connect_timeout() -> None:
    found = reported(run_validate(CASES_DIR, "invalid-duration-zero"), "invalid-duration-zero")
    assert found[("mesh.yaml", 9, 20, "invalid-duration")] == (
        "defaults.connect_timeout: '0ms' must be a duration greater than 0, such as 250ms, 2s, 5m or 1h, at most 24h"
    )


def test_message_duration_without_unit() -> None:
    # once `3 is not a string; if you mean the text 3, quote it: '3'`, and quoted, another error
    found = reported(run_validate(CASES_DIR, "invalid-duration-no-unit"), "invalid-duration-no-unit")
    assert found[("services/a.yaml", 11, 14, "invalid-duration")] == (
        "dependencies[0].timeout: 3 has no unit; a duration needs one of ms, s, m or h: write 3s, for example"
    )
    assert found[("services/a.yaml", 12, 22, "invalid-duration")] == (
        "dependencies[0].connect_timeout: '2' has no unit; a duration needs one of ms, s, m or h: write 2s, for example"
    )
    assert found[("services/a.yaml", 14, 35, "invalid-duration")] == (
        "dependencies[0].outlier_detection.interval: 0 has no unit (ms, s, m or h), and must be a duration "
        "greater than 0, such as 250ms, 2s, 5m or 1h, at most 24h"
    )


def test_message_certificate_minimums() -> None:
    found = reported(run_validate(CASES_DIR, "invalid-duration-certificate"), "invalid-duration-certificate")
    assert found == {
        (
            "mesh.yaml",
            10,
            13,
            "invalid-duration",
        ): "certificates.duration: '59m' must be a duration such as 2160h, "
        "from 1h (cert-manager's minimum) to 87600h (10 years)",
        (
            "mesh.yaml",
            11,
            17,
            "invalid-duration",
        ): "certificates.renew_before: '299s' must be a duration such as "
        "360h, from 5m (cert-manager's minimum) to 87600h (10 years)",
    }


def test_message_certificate_renewal() -> None:
    found = reported(run_validate(CASES_DIR, "certificate-renewal"), "certificate-renewal")
    assert found == {
        (
            "mesh.yaml",
            11,
            17,
            "certificate-renewal",
        ): "certificates.renew_before 800h is not shorter than duration "
        "720h, which cert-manager rejects; set renew_before below 720h or raise duration"
    }


def test_message_certificate_renewal_default() -> None:
    found = reported(run_validate(CASES_DIR, "certificate-renewal-default"), "certificate-renewal-default")
    assert found == {
        (
            "mesh.yaml",
            10,
            13,
            "certificate-renewal",
        ): "certificates.duration 360h is not longer than renew_before "
        "360h (the default), which cert-manager rejects; raise duration or set renew_before below 360h"
    }


def test_message_zookeeper_port() -> None:
    found = reported(run_validate(CASES_DIR, "schema-host-port-range"), "schema-host-port-range")
    assert found[("mesh.yaml", 4, 38, "schema")] == (
        "datacenters.sjc.zookeeper[0]: 'zk1.sjc.box.net:99999' must be host:port, with a port from 1 to 65535"
    )


def test_message_cidr() -> None:
    found = reported(run_validate(CASES_DIR, "invalid-cidr"), "invalid-cidr")
    assert found[("mesh.yaml", 13, 11, "invalid-cidr")] == (
        "clusters.kube-a.network_policy.off_cluster_cidrs[0]: '10.16.0.0/33' must be an IPv4 CIDR such as "
        "10.0.0.0/8: four numbers from 0 to 255 and a prefix length from 0 to 32, without leading zeros"
    )


def test_message_cidr_host_bits() -> None:
    found = reported(run_validate(CASES_DIR, "invalid-cidr-host-bits"), "invalid-cidr-host-bits")
    assert found == {
        (
            "mesh.yaml",
            13,
            11,
            "invalid-cidr",
        ): "10.16.0.1/16 has bits set after its /16 prefix, which Kubernetes "
        "rejects in a NetworkPolicy; write the range 10.16.0.0/16, or 10.16.0.1/32 for that one host"
    }


def test_message_health_check_timing() -> None:
    found = reported(run_validate(CASES_DIR, "health-check-timing-service"), "health-check-timing-service")
    assert found == {
        (
            "services/a.yaml",
            11,
            12,
            "health-check-timing",
        ): "health_check: timeout 5s is longer than interval 2s; "
        "a check must give up before the next one is due: set timeout to at most 2s or raise interval",
        (
            "services/b.yaml",
            10,
            26,
            "health-check-timing",
        ): "health_check: timeout 1s is longer than interval "
        "500ms; a check must give up before the next one is due: set timeout to at most 500ms or raise interval",
    }


# Ports: a shared local_port is reported at every claim; a clash in one workload at the claim its author can move.


def test_message_duplicate_local_port_at_both_claims() -> None:
    found = reported(run_validate(CASES_DIR, "duplicate-local-port"), "duplicate-local-port")
    fix = (
        "a local_port is unique mesh-wide: the service whose clients already dial 7001 keeps it, the other must "
        "pick an unused port, such as 7002"
    )
    assert found == {
        (
            "services/a.yaml",
            5,
            13,
            "duplicate-local-port",
        ): "local_port 7001 of service 'a' is also the local_port "
        f"of service 'b' (duplicate-local-port/services/b.yaml:5:13); {fix}",
        (
            "services/b.yaml",
            5,
            13,
            "duplicate-local-port",
        ): "local_port 7001 of service 'b' is also the local_port "
        f"of service 'a' (duplicate-local-port/services/a.yaml:5:13); {fix}",
    }


def test_duplicate_local_port_of_three_services(tmp_path: Path) -> None:
    """Each claim names the two others; the lines and their order are the same in every run."""
    third = BASE["services/b.yaml"].replace("service: b", "service: c").replace("7002", "7001")
    write_spec(
        tmp_path / "spec",
        {
            **BASE,
            "services/b.yaml": BASE["services/b.yaml"].replace("7002", "7001"),
            "services/c.yaml": third,
        },
    )
    first = run_validate(tmp_path, "spec")
    found = reported(first, "spec")
    assert sorted(found) == [(f"services/{name}.yaml", 5, 13, "duplicate-local-port") for name in "abc"]
    assert found[("services/b.yaml", 5, 13, "duplicate-local-port")] == (
        "local_port 7001 of service 'b' is also the local_port of services 'a' (spec/services/a.yaml:5:13), "
        "'c' (spec/services/c.yaml:5:13); a local_port is unique mesh-wide: the service whose clients already "
        "dial 7001 keeps it, the others must pick an unused port, such as 7002"
    )
    assert first.stderr.splitlines()[-1] == "Found 3 errors in 3 files"
    assert run_validate(tmp_path, "spec").stderr == first.stderr


def test_message_port_clash_with_a_dependency_at_both_claims() -> None:
    """A service's port against its dependency's local_port spans two files, either of which may be the edit: both
    are reported, each naming the other, with the same advice on which to move."""
    found = reported(run_validate(CASES_DIR, "port-clash-dependency"), "port-clash-dependency")
    advice = (
        "each port of a workload must differ, and every client of 'b' dials its local_port, only service 'a' binds "
        "its port: if the clients of 'b' already dial 7002, change the port of service 'a'; otherwise give 'b' "
        "another local_port, such as 7003"
    )
    assert found == {
        ("services/a.yaml", 3, 7, "port-clash"): "port 7002 of service 'a' is also the local_port of its "
        f"dependency 'b' (port-clash-dependency/services/b.yaml:5:13); {advice}",
        ("services/b.yaml", 5, 13, "port-clash"): "local_port 7002 of service 'b' is also the port "
        f"(port-clash-dependency/services/a.yaml:3:7) of its client 'a'; {advice}",
    }


def test_a_dependency_local_port_edited_onto_a_client_port_is_reported_where_it_was_edited(
    tmp_path: Path,
) -> None:
    """The new user's case: b's local_port set to its client's port. The error names b.yaml's line (the file
    edited), and the local_port it suggests is a valid fix."""
    edited = BASE["services/b.yaml"].replace("local_port: 7002", "local_port: 8080")
    write_spec(tmp_path / "spec", {**BASE, "services/b.yaml": edited})
    found = reported(run_validate(tmp_path, "spec"), "spec")
    assert sorted(found) == [
        ("services/a.yaml", 3, 7, "port-clash"),
        ("services/b.yaml", 5, 13, "port-clash"),
    ]
    suggested = re.search(
        r"give 'b' another local_port, such as (\d+)$", found[("services/b.yaml", 5, 13, "port-clash")]
    )
    assert suggested, found
    write_spec(
        tmp_path / "spec",
        {"services/b.yaml": edited.replace("local_port: 8080", f"local_port: {suggested[1]}")},
    )
    assert run_validate(tmp_path, "spec").returncode == 0


def test_message_port_clash_within_the_file_at_the_later_key() -> None:
    found = reported(run_validate(CASES_DIR, "port-clash"), "port-clash")
    assert found == {
        ("services/a.yaml", 4, 12, "port-clash"): "mesh_port 8080 of service 'a' is also its port (line 3); "
        "each port of a workload must differ: change one of them"
    }


def test_port_clash_of_port_and_mesh_port_with_a_dependency(tmp_path: Path) -> None:
    """Both own ports equal a dependency's local_port: each is reported, and the local_port once, naming both."""
    client = (
        BASE["services/a.yaml"]
        .replace("port: 8080", "port: 7002")
        .replace("mesh_port: 18080", "mesh_port: 7002")
    )
    write_spec(tmp_path / "spec", {**BASE, "services/a.yaml": client})
    found = reported(run_validate(tmp_path, "spec"), "spec")
    advice = (
        "each port of a workload must differ, and every client of 'b' dials its local_port, only service 'a' binds "
        "its port and mesh_port: if the clients of 'b' already dial 7002, change the port and mesh_port of service "
        "'a'; otherwise give 'b' another local_port, such as 7003"
    )
    assert found == {
        ("services/a.yaml", 3, 7, "port-clash"): "port 7002 of service 'a' is also the local_port of its "
        f"dependency 'b' (spec/services/b.yaml:5:13); {advice}",
        (
            "services/a.yaml",
            4,
            12,
            "port-clash",
        ): "mesh_port 7002 of service 'a' is also the local_port of its "
        f"dependency 'b' (spec/services/b.yaml:5:13); {advice}",
        ("services/b.yaml", 5, 13, "port-clash"): "local_port 7002 of service 'b' is also the port "
        f"(spec/services/a.yaml:3:7) and mesh_port (spec/services/a.yaml:4:12) of its client 'a'; {advice}",
    }


def test_a_local_port_clashing_with_several_clients_is_one_error(tmp_path: Path) -> None:
    """b's local_port is the mesh_port of both its clients: one edit of b.yaml, reported once there, to move it."""
    third = BASE["services/a.yaml"].replace("service: a", "service: c").replace("7001", "7003")
    edited = BASE["services/b.yaml"].replace("local_port: 7002", "local_port: 18080")
    write_spec(tmp_path / "spec", {**BASE, "services/b.yaml": edited, "services/c.yaml": third})
    found = reported(run_validate(tmp_path, "spec"), "spec")
    assert found == {
        (
            "services/b.yaml",
            5,
            13,
            "port-clash",
        ): "local_port 18080 of service 'b' is also the mesh_port of its "
        "clients 'a' (spec/services/a.yaml:4:12), 'c' (spec/services/c.yaml:4:12); each client's sidecar binds the "
        "local_port of 'b' beside its own port and mesh_port: give 'b' another local_port, such as 18081"
    }


def test_port_clash_of_a_dependency_with_the_default_admin_port(tmp_path: Path) -> None:
    """The admin port left to its default is no edit and has no line: the dependency's local_port is reported, once
    however many clients bind it (here two)."""
    third = BASE["services/a.yaml"].replace("service: a", "service: c").replace("7001", "7003")
    write_spec(
        tmp_path / "spec",
        {
            **BASE,
            "services/b.yaml": BASE["services/b.yaml"].replace("7002", "9901"),
            "services/c.yaml": third,
        },
    )
    found = reported(run_validate(tmp_path, "spec"), "spec")
    assert found == {
        (
            "services/b.yaml",
            5,
            13,
            "port-clash",
        ): "local_port 9901 of service 'b' is also the Envoy admin port "
        "(mesh.yaml sidecar.admin_port, by default 9901), which every sidecar binds; each port of a workload must "
        "differ: give 'b' another local_port"
    }


def test_port_clash_of_a_dependency_with_a_written_admin_port(tmp_path: Path) -> None:
    """Two mesh-wide settings meet: at both, once each (not once per client), each naming the other."""
    mesh = BASE["mesh.yaml"] + "sidecar:\n  admin_port: 7002\n"
    write_spec(tmp_path / "spec", {**BASE, "mesh.yaml": mesh})
    found = reported(run_validate(tmp_path, "spec"), "spec")
    advice = (
        "each port of a workload must differ, and every sidecar binds the admin port, every client of 'b' dials its "
        "local_port: if the sidecars already use 7002 as their admin port, give 'b' another local_port; otherwise "
        "change sidecar.admin_port to an unused port, such as 7003"
    )
    assert found == {
        ("mesh.yaml", 9, 15, "port-clash"): "sidecar.admin_port 7002 is also the local_port "
        f"(spec/services/b.yaml:5:13) of service 'b'; {advice}",
        (
            "services/b.yaml",
            5,
            13,
            "port-clash",
        ): "local_port 7002 of service 'b' is also the Envoy admin port, "
        f"sidecar.admin_port (spec/mesh.yaml:9:15); {advice}",
    }


def test_admin_port_clashing_with_every_service_is_one_error(tmp_path: Path) -> None:
    """The new user's case: admin_port set to every service's mesh_port. One error, at admin_port, naming the
    services (some of them, where they are many), and the port it suggests is a valid fix."""
    services = {
        f"services/s{n}.yaml": BASE["services/b.yaml"]
        .replace("service: b", f"service: s{n}")
        .replace("7002", str(7100 + n))
        for n in range(6)
    }
    mesh = BASE["mesh.yaml"] + "sidecar:\n  admin_port: 18080\n"
    write_spec(tmp_path / "spec", {**BASE, **services, "mesh.yaml": mesh})
    result = run_validate(tmp_path, "spec")
    found = reported(result, "spec")
    assert list(found) == [("mesh.yaml", 9, 15, "port-clash")], result.stderr
    [message] = found.values()
    assert message.startswith(
        "sidecar.admin_port 18080 is also the mesh_port of services 'a' (spec/services/a.yaml:4:12), 'b' "
        "(spec/services/b.yaml:4:12), 's0' (spec/services/s0.yaml:4:12), 's1' (spec/services/s1.yaml:4:12), … "
        "(8 in all); every sidecar binds the admin port"
    ), message
    assert message.endswith(": change sidecar.admin_port to an unused port, such as 18081"), message
    write_spec(tmp_path / "spec", {"mesh.yaml": mesh.replace("18080", "18081")})
    assert run_validate(tmp_path, "spec").returncode == 0


def test_two_dependencies_sharing_a_local_port_are_one_mistake(tmp_path: Path) -> None:
    """Reported at the two services' local_port (duplicate-local-port), not again in every client."""
    third = BASE["services/b.yaml"].replace("service: b", "service: c")
    client = BASE["services/a.yaml"] + "  - service: c\n"
    write_spec(tmp_path / "spec", {**BASE, "services/a.yaml": client, "services/c.yaml": third})
    found = reported(run_validate(tmp_path, "spec"), "spec")
    assert sorted(found) == [
        ("services/b.yaml", 5, 13, "duplicate-local-port"),
        ("services/c.yaml", 5, 13, "duplicate-local-port"),
    ]


# Unknown names list what mesh.yaml defines.


def test_message_unknown_cluster_lists_the_clusters() -> None:
    found = reported(run_validate(CASES_DIR, "unknown-cluster"), "unknown-cluster")
    assert found == {
        ("services/b.yaml", 9, 17, "unknown-cluster"): "unknown cluster 'kube-b' (did you mean 'kube-a'?); "
        "mesh.yaml defines clusters kube-a"
    }


def test_message_unknown_cluster_many_or_none(tmp_path: Path) -> None:
    clusters = "".join(
        f"  kube-{n}: {{datacenter: sjc, api_server: https://kube-{n}.example:6443}}\n" for n in "abcdefghij"
    )
    mesh = BASE["mesh.yaml"].split("clusters:")[0]
    write_spec(
        tmp_path / "many",
        {
            **BASE,
            "mesh.yaml": f"{mesh}clusters:\n{clusters}",
            "services/b.yaml": BASE["services/b.yaml"].replace("kube-a", "gke-x"),
        },
    )
    assert list(reported(run_validate(tmp_path, "many"), "many").values()) == [
        "unknown cluster 'gke-x'; mesh.yaml defines clusters kube-a, kube-b, kube-c, kube-d, kube-e, kube-f, "
        "kube-g, kube-h, … (10 in all)"
    ]
    write_spec(tmp_path / "none", {**BASE, "mesh.yaml": mesh})
    assert list(reported(run_validate(tmp_path, "none"), "none").values()) == [
        "unknown cluster 'kube-a'; mesh.yaml defines no clusters"
    ]


# Sidecar directories: what Puppet and the pods' mounts can take.


def test_message_sidecar_overlap() -> None:
    found = reported(run_validate(CASES_DIR, "sidecar-overlap-nested"), "sidecar-overlap-nested")
    assert found == {
        ("mesh.yaml", 10, 16, "sidecar-overlap"): "sidecar.runtime_dir '/var/run/mesh/envoy' is inside "
        "sidecar.config_dir '/var/run/mesh'; the Puppet module and the pods' volume mounts need two separate "
        "directories, neither inside the other: move it out of /var/run/mesh"
    }
    found = reported(run_validate(CASES_DIR, "sidecar-overlap-equal"), "sidecar-overlap-equal")
    assert found == {
        ("mesh.yaml", 10, 16, "sidecar-overlap"): "sidecar.runtime_dir '/etc/mesh' is the same directory as "
        "sidecar.config_dir '/etc/mesh' (the default); the Puppet module and the pods' volume mounts need two "
        "separate directories, neither inside the other: set it to a directory of its own, such as its default "
        "/var/run/mesh"
    }


def test_message_sidecar_path() -> None:
    found = reported(run_validate(CASES_DIR, "sidecar-path"), "sidecar-path")
    assert found == {
        ("mesh.yaml", 9, 15, "sidecar-path"): "sidecar.config_dir '/etc/mesh/../../tmp' is not a normalized "
        "absolute path (no `.` or `..` segment, `//` or trailing `/`); it names /tmp: write that",
        (
            "mesh.yaml",
            10,
            16,
            "sidecar-path",
        ): "sidecar.runtime_dir '/' is the root directory, which the Puppet "
        "module would manage and pods mount over; give it a directory of its own, such as the default "
        "/var/run/mesh",
    }


NORMALIZE = "is not a normalized absolute path (no `.` or `..` segment, `//` or trailing `/`)"
ROOT_DIRECTORY = "which the Puppet module would manage and pods mount over; give it a directory of its own"


@pytest.mark.parametrize(
    ("sidecar", "message", "fix"),
    [
        (  # the new user's case: normalized, it is config_dir's directory
            {"runtime_dir": "/var/run/../../etc/mesh"},
            f"sidecar.runtime_dir '/var/run/../../etc/mesh' {NORMALIZE}; it names /etc/mesh, which would overlap "
            "sidecar.config_dir /etc/mesh (the default): write a normalized directory of its own, such as the "
            "default /var/run/mesh",
            {"runtime_dir": "/var/run/mesh"},
        ),
        (  # one sentence, naming `/`
            {"config_dir": "/etc/mesh/../.."},
            f"sidecar.config_dir '/etc/mesh/../..' names the root directory, /, {ROOT_DIRECTORY}, such as the "
            "default /etc/mesh",
            {"config_dir": "/etc/mesh"},
        ),
        (  # the default would overlap the other directory: not offered
            {"config_dir": "/etc/mesh/../..", "runtime_dir": "/etc/mesh/run"},
            f"sidecar.config_dir '/etc/mesh/../..' names the root directory, /, {ROOT_DIRECTORY}, apart from "
            "sidecar.runtime_dir /etc/mesh/run",
            {"config_dir": "/srv/mesh"},
        ),
        (
            {"config_dir": "/srv//mesh/"},
            f"sidecar.config_dir '/srv//mesh/' {NORMALIZE}; it names /srv/mesh: write that",
            {"config_dir": "/srv/mesh"},
        ),
    ],
    ids=["normalized-overlaps", "names-root", "names-root-default-overlaps", "normalized-is-apart"],
)
def test_sidecar_path_advice_leads_to_a_valid_spec(
    tmp_path: Path, sidecar: dict[str, str], message: str, fix: dict[str, str]
) -> None:
    """A sidecar-path message names a directory only where it passes check_sidecar_overlap too."""

    def mesh(settings: dict[str, str]) -> str:
        return (
            BASE["mesh.yaml"]
            + "sidecar:\n"
            + "".join(f"  {key}: {value}\n" for key, value in settings.items())
        )

    write_spec(tmp_path / "spec", {**BASE, "mesh.yaml": mesh(sidecar)})
    assert list(reported(run_validate(tmp_path, "spec"), "spec").values()) == [message]
    write_spec(tmp_path / "spec", {"mesh.yaml": mesh({**sidecar, **fix})})
    result = run_validate(tmp_path, "spec")
    assert result.returncode == 0, result.stderr


DNS_LABEL = (
    "must be a DNS-1123 label: lowercase letters, digits and '-', starting with a letter, ending with a letter or "
    "digit, at most 63 characters"
)
B_CLUSTER = "    - {cluster: kube-a}\n"
A_DEPENDENCIES = "dependencies:\n  - service: b\n"


@pytest.mark.parametrize(
    ("file", "line", "written", "message", "fixed"),
    [
        pytest.param(  # unquoted: no quotes to remove
            "b",
            "port: 8080\n",
            "port: 08080\n",
            "port: 08080 has a leading zero, which makes it text to meshc, not a number; write 8080",
            "port: 8080\n",
            id="leading-zero",
        ),
        pytest.param(
            "b",
            "port: 8080\n",
            "port: '8080'\n",
            "port: '8080' is a quoted string, not a number; remove the quotes",
            "port: 8080\n",
            id="quoted-number",
        ),
        pytest.param(  # removing the quotes or the zeros would not do: what is wrong with the number
            "b",
            "port: 8080\n",
            "port: '99999'\n",
            "port: '99999' is a quoted string, not a number, and as a number, 99999 must be a TCP port from 1 to "
            "65535",
            None,
            id="quoted-number-out-of-range",
        ),
        pytest.param(
            "b",
            "port: 8080\n",
            "port: 00\n",
            "port: 00 has a leading zero, which makes it text to meshc, not a number, and as a number, 0 must be a "
            "TCP port from 1 to 65535",
            None,
            id="leading-zero-out-of-range",
        ),
        pytest.param(  # quoted, '123' is no DNS label: quoting is not offered
            "b",
            B_CLUSTER,
            "    - {cluster: kube-a, namespace: 123}\n",
            f"deploy.kubernetes[0].namespace: 123 is not a string, and quoting it would not do: '123' {DNS_LABEL}",
            None,
            id="number-for-a-name",
        ),
        pytest.param(
            "b",
            "owner: team\n",
            "owner: 42\n",
            "owner: 42 is not a string; if you mean the text 42, quote it: '42'",
            "owner: '42'\n",
            id="number-for-a-string",
        ),
        # Left empty: the key needs a value; removing it, [] or {} only where that is valid.
        pytest.param(
            "b",
            "owner: team\n",
            "owner:\n",
            "owner: has no value; it needs a string",
            None,
            id="empty-required",
        ),
        pytest.param(
            "b",
            B_CLUSTER,
            "    - {cluster: kube-a, namespace: }\n",
            f"deploy.kubernetes[0].namespace: has no value; it needs a string ({DNS_LABEL}), or remove the key",
            B_CLUSTER,
            id="empty-optional",
        ),
        pytest.param(
            "a",
            A_DEPENDENCIES,
            "dependencies:\n",
            "dependencies: has no value; write [] for an empty list, or remove the key",
            "dependencies: []\n",
            id="empty-list",
        ),
        pytest.param(
            "b",
            None,
            "health_check:\n",
            "health_check: has no value; write {} for an empty mapping, or remove the key",
            "health_check: {}\n",
            id="empty-mapping",
        ),
        pytest.param(  # [] is too few, and the key is required
            "a",
            "  vm: {datacenters: [sjc, iad]}\n",
            "  vm: {datacenters: }\n",
            "deploy.vm.datacenters: has no value; it needs a list of at least 1 item",
            None,
            id="empty-list-of-at-least-one",
        ),
        pytest.param(
            "b",
            None,
            "protocol:\n",
            "protocol: has no value; it needs one of http, grpc, tcp, or remove the key",
            "protocol: http\n",
            id="empty-enum",
        ),
    ],
)
def test_schema_advice_leads_to_a_valid_spec(
    tmp_path: Path, file: str, line: str | None, written: str, message: str, fixed: str | None
) -> None:
    """`written` in place of the base spec's `line` (or added) gets `message`; `fixed` there, following it,
    validates."""

    def service(text: str) -> str:
        base = BASE[f"services/{file}.yaml"]
        assert line is None or line in base
        return base + text if line is None else base.replace(line, text)

    write_spec(tmp_path / "spec", {**BASE, f"services/{file}.yaml": service(written)})
    assert list(reported(run_validate(tmp_path, "spec"), "spec").values()) == [message]
    if fixed is not None:
        write_spec(tmp_path / "spec", {f"services/{file}.yaml": service(fixed)})
        result = run_validate(tmp_path, "spec")
        assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("config_dir", "runtime_dir"),
    [("/srv/mesh", "/srv/mesh-run"), ("/srv/mesh-run", "/srv/mesh"), ("/opt/mesh/etc", "/opt/mesh/run")],
)
def test_separate_sidecar_directories_are_valid(tmp_path: Path, config_dir: str, runtime_dir: str) -> None:
    """One a string prefix of the other, or siblings: two separate trees (compared by segment, not by text)."""
    mesh = BASE["mesh.yaml"] + f"sidecar: {{config_dir: {config_dir}, runtime_dir: {runtime_dir}}}\n"
    write_spec(tmp_path / "spec", {**BASE, "mesh.yaml": mesh})
    result = run_validate(tmp_path, "spec")
    assert result.returncode == 0, result.stderr


def test_printed_line_format_process() -> None:
    result = run_validate_process(CASES_DIR, "unknown-dependency")
    assert result.stderr.splitlines() == [
        "unknown-dependency/services/a.yaml:9:14: error: unknown dependency 'bb' (did you mean 'b'?); "
        "add services/bb.yaml or fix the name  [unknown-dependency]",
        "Found 1 error in 1 file",
    ]
    assert result.stdout == ""


def spec_layer_codes() -> set[str]:
    """Every registered code that the loader, the schemas or the semantic checks can emit."""
    literals = {m for path in SPEC_LAYER for m in re.findall(r'"([a-z0-9-]+)"', path.read_text("utf-8"))}
    return (literals & set(CODES)) - {"internal"}  # "internal" is also a retry_on condition in the schemas


def test_corpus_covers_every_spec_code() -> None:
    covered = {e.code for case in CASES for e in expectations(CASES_DIR / case)}
    covered |= {"file-encoding", "file-too-large"}  # generated by the tests above
    covered |= {"file-unreadable"}  # needs a user root is not: tests/test_safety_spec.py runs meshc as nobody
    assert len(spec_layer_codes()) >= 30
    assert spec_layer_codes() - covered == set()


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 30


def test_summary_counts_files_whose_names_hold_a_colon() -> None:
    from compiler.diagnostics import Diagnostic, Span, format_all

    found = [
        Diagnostic(
            span=Span(file=f"HEAD~1:mesh-spec/services/{name}.yaml", line=1, col=1),
            code="file-empty",
            message="empty",
        )
        for name in ("a", "b")
    ]
    assert format_all(found).splitlines()[-1] == "Found 2 errors in 2 files"
