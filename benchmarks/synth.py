"""Deterministic synthetic mesh: N services over D datacenters and C clusters, K dependencies each.

The mix follows the example spec: VM-only, Kubernetes-only and mixed services; mostly `failover`
dependencies, some `global` and a few `local` ones; per-edge policy overrides; restart-sensitive
services. Every datacenter fails over to every other, and `local` services run everywhere, so the
generated spec is valid by construction (the tests check it).

    python benchmarks/synth.py OUT_DIR [-n 1000] [-d 6] [-c 24] [-k 8] [--seed 1]
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from compiler.emit import dump_yaml  # noqa: E402 - after the path set-up above

LOCAL_PORT_BASE = 20000
PLACEMENTS = (("vm", 40), ("kubernetes", 35), ("mixed", 25))
LOCALITIES = (("failover", 85), ("global", 10), ("local", 5))


def datacenter_names(count: int) -> list[str]:
    """dc-00, dc-01, …"""
    return [f"dc-{i:02d}" for i in range(count)]


def cluster_names(count: int, datacenters: list[str]) -> list[tuple[str, str]]:
    """(cluster, datacenter) pairs, spread round-robin over the datacenters."""
    return [
        (
            f"kube-{datacenters[i % len(datacenters)]}-{i // len(datacenters)}",
            datacenters[i % len(datacenters)],
        )
        for i in range(count)
    ]


def mesh_document(datacenters: list[str], clusters: list[tuple[str, str]]) -> dict[str, Any]:
    """mesh.yaml: each datacenter fails over to all others, nearest (next in the ring) first."""
    dcs = {}
    for i, dc in enumerate(datacenters):
        ring = [datacenters[(i + step) % len(datacenters)] for step in range(1, len(datacenters))]
        dcs[dc] = {
            "region": f"region-{i // 2}",
            "zookeeper": [f"zk{j}.{dc}.example:2181" for j in range(1, 4)],
            "failover": ring,
            **({"public_cloud": True} if i == len(datacenters) - 1 else {}),
        }
    return {
        "mesh": "synthetic",
        "trust_domain": "synthetic.mesh",
        "datacenters": dcs,
        "clusters": {
            name: {"datacenter": dc, "api_server": f"https://{name}.example:6443"} for name, dc in clusters
        },
        "certificates": {"issuer": {"kind": "ClusterIssuer", "name": "mesh-ca"}},
        "defaults": {
            "connect_timeout": "1s",
            "timeout": "15s",
            "retries": {"attempts": 2, "per_try_timeout": "5s", "on": ["connect-failure", "reset", "5xx"]},
        },
    }


def _weighted(rng: random.Random, table: tuple[tuple[str, int], ...]) -> str:
    return rng.choices([name for name, _ in table], weights=[weight for _, weight in table])[0]


def _placement(
    rng: random.Random, kind: str, locality: str, datacenters: list[str], clusters: list[tuple[str, str]]
) -> dict[str, Any]:
    deploy: dict[str, Any] = {}
    if locality == "local":
        # A `local` service must run wherever a client might: VM pools in every datacenter.
        deploy["vm"] = {"datacenters": list(datacenters)}
    elif kind in ("vm", "mixed"):
        deploy["vm"] = {
            "datacenters": sorted(rng.sample(datacenters, rng.randint(1, min(3, len(datacenters)))))
        }
    if kind in ("kubernetes", "mixed"):
        chosen = sorted(rng.sample(clusters, rng.randint(1, min(3, len(clusters)))))
        deploy["kubernetes"] = [
            {"cluster": name}
            if rng.random() < 0.7
            else {"cluster": name, "namespace": f"team-{rng.randint(0, 9)}"}
            for name, _ in chosen
        ]
    return deploy


def _dependency(rng: random.Random, name: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"service": name}
    roll = rng.random()
    if roll < 0.15:
        entry["timeout"] = "30s"
        entry["retries"] = {"attempts": 3, "per_try_timeout": "10s"}
    elif roll < 0.25:
        entry["circuit_breaker"] = {"max_requests": 4096, "max_pending_requests": 4096}
    elif roll < 0.30:
        entry["connect_timeout"] = "250ms"
        entry["outlier_detection"] = {"consecutive_5xx": 3}
    return entry


def service_documents(
    count: int, deps: int, datacenters: list[str], clusters: list[tuple[str, str]], rng: random.Random
) -> dict[str, dict[str, Any]]:
    """Service name -> its document; dependencies are K distinct other services."""
    names = [f"svc-{i:04d}" for i in range(count)]
    documents = {}
    for i, name in enumerate(names):
        locality = _weighted(rng, LOCALITIES)
        doc: dict[str, Any] = {
            "service": name,
            "owner": f"team-{i % 40}",
            "port": 8080,
            "mesh_port": 18080,
            "local_port": LOCAL_PORT_BASE + i,
            "protocol": rng.choices(["http", "grpc", "tcp"], weights=[70, 25, 5])[0],
            "locality": locality,
        }
        if rng.random() < 0.05:
            doc["restart_sensitive"] = True
        doc["deploy"] = _placement(rng, _weighted(rng, PLACEMENTS), locality, datacenters, clusters)
        others = rng.sample(range(count - 1), min(deps, count - 1))
        doc["dependencies"] = [_dependency(rng, names[j if j < i else j + 1]) for j in others]
        documents[name] = doc
    for doc in documents.values():  # after the loop: a dependency may name a service drawn later
        for entry in doc["dependencies"]:
            if documents[entry["service"]]["protocol"] == "tcp":
                _tcp_only(entry)
    return documents


def _tcp_only(entry: dict[str, Any]) -> None:
    """Drop the HTTP-only keys a tcp dependency may not set (meshc rejects them: `tcp-http-policy`)."""
    entry.pop("timeout", None)
    retries = entry.get("retries")
    if retries is not None:
        retries.pop("per_try_timeout", None)
        retries.pop("on", None)


def generate(
    out: Path, services: int, datacenters: int = 6, clusters: int = 24, deps: int = 8, seed: int = 1
) -> Path:
    """Write a synthetic spec tree to `out` (replacing it) and return `out`."""
    rng = random.Random(seed)
    dcs = datacenter_names(datacenters)
    cls = cluster_names(clusters, dcs)
    shutil.rmtree(out, ignore_errors=True)
    (out / "services").mkdir(parents=True)
    (out / "mesh.yaml").write_bytes(dump_yaml(mesh_document(dcs, cls)))
    for name, doc in service_documents(services, deps, dcs, cls, rng).items():
        (out / "services" / f"{name}.yaml").write_bytes(dump_yaml(doc))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("-n", "--services", type=int, default=1000)
    parser.add_argument("-d", "--datacenters", type=int, default=6)
    parser.add_argument("-c", "--clusters", type=int, default=24)
    parser.add_argument("-k", "--dependencies", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    generate(args.out, args.services, args.datacenters, args.clusters, args.dependencies, args.seed)
    print(f"{args.out}: {args.services} services, {args.datacenters} datacenters, {args.clusters} clusters")


if __name__ == "__main__":
    main()
