"""Each build-time invariant holds on the example, and catches a rendering broken on purpose."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from compiler import cli
from compiler.diagnostics import Diagnostic, InternalError, Span, SpecError
from compiler.pipeline import compile_dir
from compiler.render import ENVOY_CDS, ENVOY_LDS, NERVE, SYNAPSE, SidecarConfig, envoy
from compiler.render.invariants import (
    INVARIANTS,
    allowed_clients_exist,
    eds_paths_have_one_writer,
    egress_ports_match,
    nerve_paths_match_synapse,
    priorities_contiguous,
    violations,
)
from tests.conftest import EXAMPLE

UPLOAD = "k8s/kube-sjc-a/upload/upload"
ENCRYPTION = "vm/encryption/sjc"


def broken(build: Any, workload: str, breakage: Callable[[dict[str, Any]], None]) -> dict[str, SidecarConfig]:
    """The example's sidecars with one workload's documents copied and broken (the others untouched)."""
    sidecars = dict(build.sidecars)
    documents = copy.deepcopy(dict(sidecars[workload].documents))
    breakage(documents)
    sidecars[workload] = SidecarConfig(workload=sidecars[workload].workload, documents=documents)
    return sidecars


def messages(invariant: Any, build: Any, sidecars: dict[str, SidecarConfig]) -> list[str]:
    found = list(invariant(build.mesh, sidecars))
    assert all(d.code == "internal" for d in found)
    return [d.message for d in found]


def test_the_example_satisfies_every_invariant(example_build: Any) -> None:
    assert violations(example_build.mesh, example_build.sidecars) == []


def test_invariants_are_an_ordered_tuple_of_functions() -> None:
    assert INVARIANTS == (
        eds_paths_have_one_writer,
        nerve_paths_match_synapse,
        egress_ports_match,
        priorities_contiguous,
        allowed_clients_exist,
    )


def test_cds_reading_an_eds_file_nobody_writes_is_caught(example_build: Any) -> None:
    def breakage(docs: dict[str, Any]) -> None:
        source = docs[ENVOY_CDS]["resources"][1]["eds_cluster_config"]["eds_config"]["path_config_source"]
        source["path"] = "/var/run/mesh/eds/encryptoin.json"

    [message] = messages(eds_paths_have_one_writer, example_build, broken(example_build, UPLOAD, breakage))
    assert message == (
        f"internal error in {UPLOAD}: cluster 'encryption' reads /var/run/mesh/eds/encryptoin.json, "
        "which 0 Synapse entries write (a meshc bug; please report it)"
    )


def test_eds_file_written_twice_is_caught(example_build: Any) -> None:
    def breakage(docs: dict[str, Any]) -> None:
        services = docs[SYNAPSE]["services"]
        services["metadata"]["envoy_eds"]["path"] = services["encryption"]["envoy_eds"]["path"]

    found = messages(eds_paths_have_one_writer, example_build, broken(example_build, UPLOAD, breakage))
    assert any(
        "cluster 'encryption' reads /var/run/mesh/eds/encryption.json, which 2 Synapse entries write" in m
        for m in found
    )
    assert any("cluster 'metadata'" in m and "which 0 Synapse entries write" in m for m in found)


def test_nerve_registering_elsewhere_than_synapse_watches_is_caught(example_build: Any) -> None:
    def breakage(docs: dict[str, Any]) -> None:
        docs[NERVE]["services"]["encryption"]["zk_path"] = "/nerve/services/encryption"

    found = messages(nerve_paths_match_synapse, example_build, broken(example_build, ENCRYPTION, breakage))
    # every client that watches encryption in sjc is named: upload's and download's workloads
    assert any(
        m.startswith(
            f"internal error in {UPLOAD}: Synapse watches encryption in sjc at "
            "/nerve/services/encryption/services"
        )
        for m in found
    )
    assert any("vm/download/iad" in m for m in found)
    assert all("Nerve registers at /nerve/services/encryption on" in m for m in found)


def test_watcher_without_any_nerve_is_caught(example_build: Any) -> None:
    sidecars = dict(example_build.sidecars)
    sidecars[ENCRYPTION] = SidecarConfig(
        workload=sidecars[ENCRYPTION].workload,
        documents={k: v for k, v in sidecars[ENCRYPTION].documents.items() if k != NERVE},
    )
    found = messages(nerve_paths_match_synapse, example_build, sidecars)
    assert (
        f"internal error in {UPLOAD}: Synapse watches encryption in sjc at /nerve/services/encryption/services, "
        "where no Nerve registers (a meshc bug; please report it)" in found
    )


def test_nerve_on_another_ensemble_is_caught(example_build: Any) -> None:
    def breakage(docs: dict[str, Any]) -> None:
        docs[NERVE]["services"]["encryption"]["zk_hosts"] = ["zk1.iad.box.net:2181"]

    assert messages(nerve_paths_match_synapse, example_build, broken(example_build, ENCRYPTION, breakage))


def test_egress_listener_on_the_wrong_port_is_caught(example_build: Any) -> None:
    def breakage(docs: dict[str, Any]) -> None:
        docs[ENVOY_LDS]["resources"][1]["address"]["socket_address"]["port_value"] = 7199

    [message] = messages(egress_ports_match, example_build, broken(example_build, UPLOAD, breakage))
    assert message == (
        f"internal error in {UPLOAD}: egress listener of encryption is "
        "{'address': '127.0.0.1', 'port_value': 7199}, not 127.0.0.1:7105 (a meshc bug; please report it)"
    )


def test_missing_egress_listener_is_caught(example_build: Any) -> None:
    def breakage(docs: dict[str, Any]) -> None:
        del docs[ENVOY_LDS]["resources"][-1]

    [message] = messages(egress_ports_match, example_build, broken(example_build, UPLOAD, breakage))
    assert "egress listener of feature-flags is None" in message


def test_egress_listener_on_a_public_address_is_caught(example_build: Any) -> None:
    def breakage(docs: dict[str, Any]) -> None:
        docs[ENVOY_LDS]["resources"][1]["address"]["socket_address"]["address"] = "0.0.0.0"

    assert messages(egress_ports_match, example_build, broken(example_build, UPLOAD, breakage))


def test_priority_gap_is_caught(example_build: Any) -> None:
    def breakage(docs: dict[str, Any]) -> None:
        docs[SYNAPSE]["services"]["encryption"]["envoy_eds"]["localities"]["zk-iad"]["priority"] = 2

    [message] = messages(priorities_contiguous, example_build, broken(example_build, UPLOAD, breakage))
    assert message == (
        f"internal error in {UPLOAD}: priorities of encryption are [0, 2], not contiguous from 0 "
        "(a meshc bug; please report it)"
    )


def test_priorities_not_starting_at_zero_are_caught(example_build: Any) -> None:
    def breakage(docs: dict[str, Any]) -> None:
        for locality in docs[SYNAPSE]["services"]["event-bus"]["envoy_eds"]["localities"].values():
            locality["priority"] = 1

    assert messages(priorities_contiguous, example_build, broken(example_build, UPLOAD, breakage))


def test_grant_to_an_identity_of_no_workload_is_caught(example_build: Any) -> None:
    def breakage(docs: dict[str, Any]) -> None:
        hcm = docs[ENVOY_LDS]["resources"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        principals = hcm["http_filters"][0]["typed_config"]["rules"]["policies"]["mesh-clients"]["principals"]
        principals.append(
            {"authenticated": {"principal_name": {"exact": "spiffe://box.mesh/ns/upload/sa/uplaod"}}}
        )

    [message] = messages(allowed_clients_exist, example_build, broken(example_build, ENCRYPTION, breakage))
    assert message == (
        f"internal error in {ENCRYPTION}: ingress admits spiffe://box.mesh/ns/upload/sa/uplaod, "
        "which is no workload's identity (a meshc bug; please report it)"
    )


def test_grant_on_a_tcp_ingress_is_checked_too(example_build: Any) -> None:
    def breakage(docs: dict[str, Any]) -> None:
        rules = docs[ENVOY_LDS]["resources"][0]["filter_chains"][0]["filters"][0]["typed_config"]["rules"]
        rules["policies"]["mesh-clients"]["principals"][0]["authenticated"]["principal_name"]["exact"] = (
            "spiffe://x/ns/y/sa/z"
        )

    assert messages(allowed_clients_exist, example_build, broken(example_build, "vm/event-bus/sjc", breakage))


def test_every_build_runs_the_invariants(monkeypatch: pytest.MonkeyPatch) -> None:
    """A renderer bug (here: EDS files in the wrong place) fails the build with InternalError, not a spec error."""
    real = envoy.eds_path
    monkeypatch.setattr(envoy, "eds_path", lambda mesh, service: real(mesh, service) + ".tmp")
    with pytest.raises(InternalError) as raised:
        compile_dir(EXAMPLE)
    lines = str(raised.value).splitlines()
    assert lines and all(line.endswith("(a meshc bug; please report it)  [internal]") for line in lines)
    assert any("which 0 Synapse entries write" in line for line in lines)


def _bug_and_spec_problem() -> list[Diagnostic]:
    return [
        Diagnostic(
            span=Span(file="m/services/a.yaml", line=3, col=1), code="internal", message="bug (a meshc bug)"
        ),
        Diagnostic(span=Span(file="m/services/b.yaml", line=1, col=1), code="unknown-cluster", message="x"),
    ]


def test_a_spec_error_never_carries_a_compiler_bug() -> None:
    """Collecting an `internal` diagnostic into a SpecError raises InternalError with the bug alone."""
    with pytest.raises(InternalError) as raised:
        raise SpecError(_bug_and_spec_problem())
    assert str(raised.value) == "m/services/a.yaml:3:1: error: bug (a meshc bug)  [internal]"
    spec_only = SpecError(_bug_and_spec_problem()[1:])
    assert [d.code for d in spec_only.diagnostics] == ["unknown-cluster"]


def test_a_compiler_bug_exits_3_even_from_a_spec_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Whichever stage collected it, a meshc bug reaches the command line as exit 3, never as an invalid spec."""

    def validate_only(*args: Any) -> Any:
        raise SpecError(_bug_and_spec_problem())

    monkeypatch.setattr(cli, "validate_only", validate_only)
    assert cli.main(["validate", str(EXAMPLE)]) == 3
    err = capsys.readouterr().err
    assert err.startswith("meshc: internal error: m/services/a.yaml:3:1:") and "Found" not in err
