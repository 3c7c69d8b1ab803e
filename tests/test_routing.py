"""Cross-datacenter routing: failover order, `local` and `global`, alone and through full lowering."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from conftest import write_spec

from compiler.diagnostics import Span, SpecError
from compiler.ir.lower import lower
from compiler.ir.model import Mesh
from compiler.pipeline import validate_only
from compiler.spec.load import spec_files
from compiler.spec.model import Datacenter
from compiler.spec.routing import priorities, unreachable


def datacenters(**failover: list[str]) -> dict[str, Datacenter]:
    return {
        name: Datacenter(
            name=name,
            region=f"r-{name}",
            zookeeper=(f"zk.{name}:2181",),
            failover=tuple(order),
            public_cloud=False,
            span=Span(file="mesh.yaml"),
        )
        for name, order in failover.items()
    }


DCS = datacenters(a=["b", "c", "d"], b=["a", "c", "d"], c=["d", "b", "a"], d=["c"])


# ------------------------------------------------------------------ failover


def test_own_datacenter_first_then_failover_order() -> None:
    assert priorities("c", {"a", "b", "c", "d"}, "failover", DCS) == {"c": 0, "d": 1, "b": 2, "a": 3}


def test_failover_order_is_the_clients_not_alphabetical() -> None:
    assert list(priorities("c", {"a", "b", "d"}, "failover", DCS)) == ["d", "b", "a"]


def test_server_not_in_the_clients_datacenter_starts_at_priority_0() -> None:
    assert priorities("a", {"c", "d"}, "failover", DCS) == {"c": 0, "d": 1}


def test_datacenters_without_the_server_are_skipped_and_priorities_stay_contiguous() -> None:
    assert priorities("a", {"a", "d"}, "failover", DCS) == {"a": 0, "d": 1}


def test_unreachable_datacenters() -> None:
    # d fails over only to c: a server in a and b is out of its reach
    assert priorities("d", {"a", "b", "c"}, "failover", DCS) == {"c": 0}
    assert unreachable("d", {"a", "b", "c"}, "failover", DCS) == ["a", "b"]
    assert unreachable("a", {"a", "b", "c", "d"}, "failover", DCS) == []


def test_random_failover_lists_give_contiguous_priorities() -> None:
    rng = random.Random(3)
    names = ["p", "q", "r", "s", "t"]
    for _ in range(300):
        dcs = datacenters(**{n: rng.sample([m for m in names if m != n], rng.randint(0, 4)) for n in names})
        client, server = rng.choice(names), set(rng.sample(names, rng.randint(1, 5)))
        ranks = priorities(client, server, "failover", dcs)
        assert sorted(ranks.values()) == list(range(len(ranks)))
        assert set(ranks) <= server
        assert set(ranks) | set(unreachable(client, server, "failover", dcs)) == server
        if client in server:
            assert ranks[client] == 0


# ------------------------------------------------------------------ local and global


def test_local_is_only_the_clients_datacenter() -> None:
    assert priorities("a", {"a", "b"}, "local", DCS) == {"a": 0}
    assert unreachable("a", {"a", "b"}, "local", DCS) == []  # b is out of reach by design, not an error


def test_local_missing_in_the_clients_datacenter() -> None:
    assert priorities("a", {"b", "c"}, "local", DCS) == {}
    assert unreachable("a", {"b", "c"}, "local", DCS) == ["a"]


def test_global_is_every_datacenter_at_priority_0() -> None:
    ranks = priorities("d", {"c", "a", "b"}, "global", DCS)
    assert ranks == {"a": 0, "b": 0, "c": 0}
    assert list(ranks) == ["a", "b", "c"]  # deterministic order
    assert unreachable("d", {"a", "b"}, "global", DCS) == []


# ------------------------------------------------------------------ through lowering

MESH = """\
mesh: m
trust_domain: m.mesh
datacenters:
  sjc: {region: us-west, zookeeper: [zk.sjc:2181], failover: [iad, gcp]}
  iad: {region: us-east, zookeeper: [zk.iad:2181], failover: [sjc, gcp]}
  gcp: {region: us-central, zookeeper: [zk.gcp:2181], failover: [iad, sjc]}
clusters:
  kube-sjc: {datacenter: sjc, api_server: https://kube-sjc.example:6443}
  kube-gcp: {datacenter: gcp, api_server: https://kube-gcp.example}
"""


def service(name: str, port: int, deploy: str, locality: str = "failover", deps: tuple[str, ...] = ()) -> str:
    text = (
        f"service: {name}\nowner: t\nport: 8080\nmesh_port: 18080\nlocal_port: {port}\n"
        f"locality: {locality}\ndeploy: {deploy}\n"
    )
    return text + ("dependencies:\n" + "".join(f"  - service: {d}\n" for d in deps) if deps else "")


def build(tmp_path: Path, services: dict[str, str], mesh: str = MESH) -> Mesh:
    root = write_spec(
        tmp_path / "spec", {"mesh.yaml": mesh, **{f"services/{n}.yaml": t for n, t in services.items()}}
    )
    return lower(validate_only(spec_files(root), "spec"))


def sources(mesh: Mesh, workload: str, dependency: str) -> list[tuple[int, str, str]]:
    by_id = {w.id: w for w in mesh.workloads}
    egress = next(e for e in by_id[workload].egress if e.service == dependency)
    return [(s.priority, s.datacenter, s.kind) for s in egress.sources]


def test_lowered_failover_order_per_client_datacenter(tmp_path: Path) -> None:
    mesh = build(
        tmp_path,
        {
            "client": service(
                "client",
                7001,
                "{vm: {datacenters: [iad]}, kubernetes: [{cluster: kube-sjc}]}",
                deps=("server",),
            ),
            "server": service(
                "server", 7002, "{vm: {datacenters: [sjc, gcp]}, kubernetes: [{cluster: kube-gcp}]}"
            ),
        },
    )
    # in iad, where the server does not run: iad's failover list, sjc then gcp (both of gcp's sources)
    assert sources(mesh, "vm/client/iad", "server") == [
        (0, "sjc", "zookeeper"),
        (1, "gcp", "kubernetes"),
        (1, "gcp", "zookeeper"),
    ]
    # in sjc, where it runs: sjc first, then gcp (iad is skipped: no server there)
    assert sources(mesh, "k8s/kube-sjc/client/client", "server") == [
        (0, "sjc", "zookeeper"),
        (1, "gcp", "kubernetes"),
        (1, "gcp", "zookeeper"),
    ]


def test_lowered_sources_name_where_to_discover(tmp_path: Path) -> None:
    mesh = build(
        tmp_path,
        {
            "client": service("client", 7001, "{vm: {datacenters: [gcp]}}", deps=("server",)),
            "server": service(
                "server",
                7002,
                "{vm: {datacenters: [iad]}, kubernetes: [{cluster: kube-gcp, namespace: srv}]}",
            ),
        },
    )
    egress = mesh.workloads_of("client")[0].egress[0]
    first, second = egress.sources
    assert (first.kind, first.priority, first.cluster, first.api_server, first.namespace, first.service) == (
        "kubernetes",
        0,
        "kube-gcp",
        "https://kube-gcp.example",
        "srv",
        "server",
    )
    assert (second.kind, second.priority, second.hosts, second.path) == (
        "zookeeper",
        1,
        ("zk.iad:2181",),
        "/nerve/services/server/services",
    )


def test_lowered_global(tmp_path: Path) -> None:
    mesh = build(
        tmp_path,
        {
            "client": service("client", 7001, "{vm: {datacenters: [sjc]}}", deps=("flags",)),
            "flags": service(
                "flags",
                7002,
                "{vm: {datacenters: [sjc, iad]}, kubernetes: [{cluster: kube-gcp}]}",
                locality="global",
            ),
        },
    )
    assert sources(mesh, "vm/client/sjc", "flags") == [
        (0, "gcp", "kubernetes"),
        (0, "iad", "zookeeper"),
        (0, "sjc", "zookeeper"),
    ]


def test_lowered_local(tmp_path: Path) -> None:
    mesh = build(
        tmp_path,
        {
            "client": service("client", 7001, "{vm: {datacenters: [sjc, iad]}}", deps=("cache",)),
            "cache": service("cache", 7002, "{vm: {datacenters: [sjc, iad, gcp]}}", locality="local"),
        },
    )
    assert sources(mesh, "vm/client/sjc", "cache") == [(0, "sjc", "zookeeper")]
    assert sources(mesh, "vm/client/iad", "cache") == [(0, "iad", "zookeeper")]


def test_local_dependency_missing_in_a_client_datacenter_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        build(
            tmp_path,
            {
                "client": service("client", 7001, "{vm: {datacenters: [sjc, iad, gcp]}}", deps=("cache",)),
                "cache": service("cache", 7002, "{kubernetes: [{cluster: kube-sjc}]}", locality="local"),
            },
        )
    found = [(d.code, d.span.file, d.span.line, d.message) for d in info.value.diagnostics]
    # one error per client datacenter without the cache, at the dependency entry
    assert [(code, file, line) for code, file, line, _ in found] == [
        ("local-unavailable", "spec/services/client.yaml", 9),
        ("local-unavailable", "spec/services/client.yaml", 9),
    ]
    assert "'client' runs in 'gcp' but its `local` dependency 'cache' does not" in found[0][3] + found[1][3]
    assert "'client' runs in 'iad'" in found[0][3] + found[1][3]


def test_failover_unreachable_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        build(
            tmp_path,
            {
                "client": service("client", 7001, "{vm: {datacenters: [sjc]}}", deps=("server",)),
                "server": service("server", 7002, "{vm: {datacenters: [iad, gcp]}}"),
            },
            mesh=MESH.replace("failover: [iad, gcp]}", "failover: [iad]}"),
        )
    [diagnostic] = info.value.diagnostics
    assert diagnostic.code == "failover-unreachable"
    assert diagnostic.message == (
        "'client' in 'sjc' cannot reach 'server' in 'gcp'; add gcp to the failover list of 'sjc' in mesh.yaml"
    )


def test_example_upload_routing(example_build) -> None:
    assert example_build.mesh.workloads_of("upload")
    for workload in example_build.mesh.workloads_of("upload"):
        for egress in workload.egress:
            ranks = [s.priority for s in egress.sources]
            assert ranks == sorted(ranks) and set(ranks) == set(range(max(ranks) + 1)), (
                workload.id,
                egress.service,
            )
            if egress.locality == "failover" and any(
                s.datacenter == workload.datacenter for s in egress.sources
            ):
                assert {s.datacenter for s in egress.sources if s.priority == 0} == {workload.datacenter}
