"""Each check of the intermediate states, on real git histories: what cannot be safe fails [rollout-unsafe]."""

from __future__ import annotations

from pathlib import Path

import pytest

from compiler.diagnostics import SpecError
from compiler.rollout.build import build_rollout
from compiler.rollout.output import output_for
from compiler.rollout.revisions import rollout_context
from compiler.rollout.states import check_rollout, check_states
from tests.test_rollout_build import commit, drop_dependency, line_of, replace_in, start_rollout


def unsafe(spec: Path) -> list[str]:
    with pytest.raises(SpecError) as caught:
        output_for(spec)
    found = [d.format() for d in caught.value.diagnostics]
    assert found and all(line.endswith("  [rollout-unsafe]") for line in found), found
    return found


def test_a_trust_domain_change_breaks_the_expected_identity(tmp_path: Path) -> None:
    repo, spec, _ = start_rollout(tmp_path / "repo")
    replace_in(spec / "mesh.yaml", "trust_domain: box.mesh", "trust_domain: box2.mesh")
    commit(repo, "new trust domain")
    found = unsafe(spec)
    assert any("expects spiffe://box.mesh/" in f and "presents spiffe://box2.mesh/" in f for f in found)
    assert any("a moved identity or trust-domain change cannot go wave by wave" in f for f in found)


def test_a_new_zookeeper_ensemble_breaks_discovery_across_waves(tmp_path: Path) -> None:
    repo, spec, _ = start_rollout(tmp_path / "repo")
    replace_in(
        spec / "mesh.yaml",
        "zookeeper: [zk1.sjc.box.net:2181, zk2.sjc.box.net:2181, zk3.sjc.box.net:2181]",
        "zookeeper: [zk4.sjc.box.net:2181, zk5.sjc.box.net:2181, zk6.sjc.box.net:2181]",
    )
    commit(repo, "new sjc ensemble")
    found = unsafe(spec)
    mismatch = [
        f for f in found if "watches zk4.sjc.box.net:2181" in f and "registers at zk1.sjc.box.net:2181" in f
    ]
    assert mismatch and all("/nerve/services/" in f for f in mismatch)


def test_removing_a_local_dependency_before_its_clients_is_unsafe(tmp_path: Path) -> None:
    """mysql-proxy (local) leaves sjc, and so does its client metadata: while sjc converges, an old metadata pod
    may meet a datacenter without mysql-proxy."""
    repo, spec, _ = start_rollout(tmp_path / "repo")
    replace_in(
        spec / "services/mysql-proxy.yaml", "vm: {datacenters: [sjc, iad]}", "vm: {datacenters: [iad]}"
    )
    replace_in(spec / "services/metadata.yaml", "    - {cluster: kube-sjc-a}\n", "")
    commit(repo, "no mysql-proxy and no metadata in sjc")
    found = unsafe(spec)
    line = line_of(spec / "services/metadata.yaml", "- service: mysql-proxy")
    local = [f for f in found if "needs mysql-proxy in sjc (locality local)" in f]
    assert local and local[0].startswith(f"{(spec / 'services/metadata.yaml').as_posix()}:{line}:")
    assert "k8s/kube-sjc-a/metadata/metadata in wave west" in local[0] and "once west is promoted" in local[0]


def test_a_new_service_called_from_the_first_wave_but_placed_in_a_later_one_is_unavailable(
    tmp_path: Path,
) -> None:
    repo, spec, _ = start_rollout(tmp_path / "repo")
    (spec / "services/quota.yaml").write_text(
        "service: quota\nowner: storage\nport: 8080\nmesh_port: 18080\nlocal_port: 7199\n"
        "deploy:\n  vm: {datacenters: [sjc]}\n"
    )
    (spec / "services/audit-log.yaml").write_text(
        (spec / "services/audit-log.yaml").read_text() + "  - service: quota\n"
    )
    commit(repo, "audit-log calls the new quota service, which runs in sjc only")
    found = unsafe(spec)
    assert any(
        "→ no server now" in f
        and "vm/audit-log/gcp-usc1 needs quota where it watches, and quota is new: the waves of its targets still "
        "run revisions without it"
        in f
        # the advice for a new service, not for a moved registration or a removed service (a new user followed it)
        and f.endswith(
            "split the change: add the service alone, promote it to every wave that runs its targets, then add the "
            "dependency (or order the waves so the server comes first)  [rollout-unsafe]"
        )
        for f in found
    ), found


def test_a_removed_service_an_older_wave_still_calls_is_named_as_the_server(tmp_path: Path) -> None:
    """search removed (and every call to it) at head while api-gateway in later waves still calls it at base: the
    finding names api-gateway → search (it named api-gateway → api-gateway, no server instance being there)."""
    repo, spec, _ = start_rollout(tmp_path / "repo")
    (spec / "services/search.yaml").unlink()
    for path in sorted((spec / "services").glob("*.yaml")):
        if "- service: search\n" in path.read_text():
            drop_dependency(path, "search")
    commit(repo, "search is gone")
    found = [f for f in unsafe(spec) if "needs search where it watches, and no server is there" in f]
    assert found and all(": api-gateway → search: " in f for f in found), found
    assert not any("is new" in f for f in found), "a removed service is no new one"


def test_every_check_passes_for_safe_changes_and_counts_combinations(tmp_path: Path) -> None:
    repo, spec, base = start_rollout(tmp_path / "repo")
    replace_in(spec / "mesh.yaml", "connect_timeout: 1s", "connect_timeout: 2s")
    commit(repo, "safe change")
    context = rollout_context(spec)
    assert context is not None
    build = build_rollout(context)
    report = check_rollout(context, build.state)
    assert report.promotion is not None and report.promotion[0] == "west"
    now = check_states(build.state, None, None)
    assert report.pairs > now.pairs > 0 and report.combinations > report.pairs and not report.problems
