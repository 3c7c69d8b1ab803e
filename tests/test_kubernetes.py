"""Kubernetes backend: objects per workload, least-privilege RBAC and NetworkPolicy, kube-applier file order.

The properties are checked against what the spec *declares* (the raw service files), not against
the IR the backend read, on the example mesh and on a seeded random mesh.
"""

from __future__ import annotations

import random
import sys
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from compiler.backends.kubernetes import build_kubernetes, restart_hash_of
from compiler.backends.kubernetes.layout import APPLY_ORDER
from compiler.backends.kubernetes.objects import (
    DISCOVERY_CLUSTER_ROLE,
    MANAGED_BY,
    MESH_LABEL,
    NAME_LABEL,
    RESTART_ANNOTATION,
    WORKLOAD_ANNOTATION,
)
from compiler.backends.kubernetes.readers import external_readers
from compiler.diagnostics import InternalError, SpecError
from compiler.emit import Artifact, dump_yaml
from compiler.ir.lower import lower
from compiler.ir.model import Mesh
from compiler.render import ENVOY_BOOTSTRAP, ENVOY_CDS, ENVOY_LDS, SYNAPSE, SidecarConfig, render
from compiler.spec.checks import check
from compiler.spec.load import load_documents, spec_files
from compiler.spec.model import DISCOVERY_NAMESPACE

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "mesh-spec"
sys.path.insert(0, str(ROOT))
from benchmarks.synth import generate  # noqa: E402 - the benchmark's mesh, larger and differently shaped than ours

EXAMPLE_DEPLOYMENT = ROOT / "examples" / "kubernetes" / "deployment.yaml"


def load(data: bytes) -> list[Any]:
    """Every YAML document of one file, as kubectl would read it."""
    return list(yaml.load_all(data, Loader=yaml.CSafeLoader))


@dataclass(frozen=True, kw_only=True, slots=True)
class Declared:
    """What the raw spec files say, read independently of the IR the backend used."""

    deps: dict[str, set[str]]
    placements: dict[str, dict[str, str]]  # service -> cluster -> namespace
    mesh_ports: dict[str, int]
    clusters: dict[str, Any]  # mesh.yaml `clusters`


@dataclass(frozen=True, kw_only=True, slots=True)
class Case:
    """A compiled spec: what it declares, its mesh, this backend's artifacts and their parsed objects."""

    declared: Declared
    mesh: Mesh
    artifacts: list[Artifact]
    documents: dict[
        str, list[Any]
    ]  # path -> its file's YAML documents, parsed once (the tests only read them)
    objects: list[tuple[str, dict[str, Any]]]  # (path, object) for every object of every file, in file order


def declared_of(files: Mapping[str, bytes]) -> Declared:
    """Dependencies, placements and mesh ports as the service files write them, and mesh.yaml's clusters."""
    docs = [
        yaml.load(raw, Loader=yaml.CSafeLoader) for path, raw in files.items() if path.startswith("services/")
    ]
    return Declared(
        deps={d["service"]: {dep["service"] for dep in d.get("dependencies") or ()} for d in docs},
        placements={
            d["service"]: {
                k["cluster"]: k.get("namespace", d["service"]) for k in (d["deploy"].get("kubernetes") or ())
            }
            for d in docs
        },
        mesh_ports={d["service"]: d["mesh_port"] for d in docs},
        clusters=yaml.safe_load(files["mesh.yaml"]).get("clusters") or {},
    )


def compile_case(files: Mapping[str, bytes], label: str) -> Case:
    """Compile through the stages this backend reads (not the other backends)."""
    mesh = lower(check(load_documents(files, label)))
    artifacts = build_kubernetes(mesh, render(mesh))
    documents = {a.path: load(a.data) for a in artifacts}
    return Case(
        declared=declared_of(files),
        mesh=mesh,
        artifacts=artifacts,
        documents=documents,
        objects=[(a.path, obj) for a in artifacts for obj in documents[a.path]],
    )


def random_spec(seed: int, services: int = 80) -> dict[str, bytes]:
    """A valid random mesh: 4 datacenters, 5 clusters (2 with NetworkPolicy, 1 without ranges), shared namespaces."""
    rng = random.Random(seed)
    dcs = ["dc-a", "dc-b", "dc-c", "dc-d"]
    clusters = {
        "k-a1": {"datacenter": "dc-a", "api_server": "https://k-a1.example:6443"},
        "k-a2": {
            "datacenter": "dc-a",
            "api_server": "https://k-a2.example:6443",
            "network_policy": {"enabled": True, "off_cluster_cidrs": ["10.0.0.0/12", "10.32.0.0/12"]},
        },
        "k-b1": {"datacenter": "dc-b", "api_server": "https://k-b1.example:6443"},
        "k-c1": {
            "datacenter": "dc-c",
            "api_server": "https://k-c1.example:6443",
            "network_policy": {"enabled": True},
        },
        "k-d1": {"datacenter": "dc-d", "api_server": "https://k-d1.example:6443"},
    }
    mesh = {
        "mesh": "synth",
        "trust_domain": "synth.mesh",
        "datacenters": {
            dc: {
                "region": f"r-{dc}",
                "zookeeper": [f"zk.{dc}.example:2181"],
                "failover": [d for d in dcs if d != dc],
            }
            for dc in dcs
        },
        "clusters": clusters,
        "certificates": {"issuer": {"kind": "Issuer", "name": "mesh-ca"}},
    }
    names = [f"svc-{i:03d}" for i in range(services)]
    namespaces = ["core", "edge", "data", "batch"]
    files = {"mesh.yaml": yaml.safe_dump(mesh).encode()}
    for i, name in enumerate(names):
        deploy: dict[str, Any] = {}
        if rng.random() < 0.3:
            deploy["vm"] = {"datacenters": sorted(rng.sample(dcs, rng.randint(1, 2)))}
        chosen = sorted(rng.sample(sorted(clusters), rng.randint(0 if deploy else 1, 3)))
        if chosen:
            # Half the services get their own namespace, the others share one of four.
            deploy["kubernetes"] = [
                {"cluster": c, **({"namespace": rng.choice(namespaces)} if rng.random() < 0.5 else {})}
                for c in chosen
            ]
        others = [n for n in names if n != name]
        deps = sorted(rng.sample(others, rng.randint(0, 6)))
        service = {
            "service": name,
            "owner": "team",
            "port": 8080,
            "mesh_port": 18080,
            "local_port": 20000 + i,
            "locality": rng.choice(["failover", "global"]),
            "deploy": deploy,
            "dependencies": [{"service": d} for d in deps],
        }
        files[f"services/{name}.yaml"] = yaml.safe_dump(service).encode()
    return files


@pytest.fixture(scope="module")
def example() -> Case:
    return compile_case(spec_files(EXAMPLE), "mesh-spec")


@pytest.fixture(scope="module")
def synthetic() -> Case:
    return compile_case(random_spec(1), "synthetic-1")


@pytest.fixture(scope="module", params=["example", "synthetic-1", "synthetic-2", "bench-100"])
def case(
    request: pytest.FixtureRequest, example: Case, synthetic: Case, tmp_path_factory: pytest.TempPathFactory
) -> Case:
    """The example mesh, seeded random meshes (with NetworkPolicies), and the benchmark generator's mesh."""
    if request.param == "example":
        return example
    if request.param == "bench-100":  # the generator's shape (4 DCs, 8 clusters, 6 deps) at half 200's cost
        spec_dir = generate(
            tmp_path_factory.mktemp("synth") / "spec", services=100, datacenters=4, clusters=8, deps=6
        )
        return compile_case(spec_files(spec_dir), "bench-100")
    return synthetic if request.param == "synthetic-1" else compile_case(random_spec(2), "synthetic-2")


# ---------------------------------------------------------------- layout


def test_every_file_is_a_stream_of_objects_each_opened_by_a_document_start(case: Case) -> None:
    for artifact in case.artifacts:
        assert artifact.path.endswith(".yaml") and artifact.data.startswith(b"---\n"), artifact.path
        docs = case.documents[artifact.path]
        assert docs and all(isinstance(d, dict) and d["kind"] for d in docs), artifact.path
        # no empty document, no stray separator
        assert artifact.data.count(b"\n---\n") == len(docs) - 1, artifact.path


def test_one_file_per_workload_reader_and_cluster(case: Case) -> None:
    """kubernetes/<cluster>/00-cluster.yaml (its Namespaces, then the ClusterRole) and <ns>/<service>.yaml per
    workload or reader."""
    workloads = {w.id: w for w in case.mesh.workloads if w.platform == "kubernetes"}
    readers = {r.id: r for r in external_readers(case.mesh)}
    files: dict[str, set[str]] = defaultdict(set)
    for artifact in case.artifacts:
        parts = artifact.path.split("/")
        cluster, objects = parts[1], case.documents[artifact.path]
        files[cluster].add(artifact.path)
        if parts[2:] == [
            "00-cluster.yaml"
        ]:  # cluster-scoped objects: every Namespace, the discovery ClusterRole
            namespaces = {w.namespace for w in workloads.values() if w.cluster == cluster}
            if any(r.cluster == cluster for r in readers.values()):
                namespaces.add(DISCOVERY_NAMESPACE)
            assert [(o["kind"], o["metadata"]["name"], "namespace" in o["metadata"]) for o in objects] == [
                *(("Namespace", ns, False) for ns in sorted(namespaces)),
                ("ClusterRole", DISCOVERY_CLUSTER_ROLE, False),
            ], artifact.path
            assert artifact.target is None
        else:
            _, _, namespace, name = parts
            assert artifact.target == f"k8s/{cluster}/{namespace}/{name.removesuffix('.yaml')}", artifact.path
            assert artifact.target in workloads or artifact.target in readers, artifact.path
            for obj in objects:
                meta = obj["metadata"]
                assert meta["annotations"][WORKLOAD_ANNOTATION] == artifact.target, artifact.path
                assert meta["namespace"], artifact.path  # kube-applier applies without -n
                # in the unit's own namespace, but for the discovery grants in the namespaces it reads
                assert meta["namespace"] == namespace or obj["kind"] == "RoleBinding", artifact.path
    for cluster, paths in files.items():
        units = [t for t in [*workloads, *readers] if t.split("/")[1] == cluster]
        assert len(paths) == len(units) + 1, cluster  # the goal: <= that plus a handful


def test_labels_on_every_object(case: Case) -> None:
    for path, obj in case.objects:
        labels = obj["metadata"]["labels"]
        assert labels[MANAGED_BY] == "meshc" and labels[MESH_LABEL] == case.mesh.name, path
        if obj["kind"] not in ("Namespace", "ClusterRole"):  # shared by several services
            assert (
                labels[NAME_LABEL] == obj["metadata"]["annotations"][WORKLOAD_ANNOTATION].rsplit("/", 1)[1]
            ), path


def test_kube_applier_order_applies_what_an_object_needs_before_it(case: Case) -> None:
    """kube-applier applies a cluster's files one by one in path order (Go's sort.Strings: byte order), each file's
    documents in order: check what exists by then, across files and within each file."""
    by_cluster: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    for path, obj in case.objects:
        by_cluster[path.split("/")[1]].append((path, obj))
    for cluster, objects in by_cluster.items():
        applied: set[tuple[str, str | None, str]] = set()
        # stable: a file's documents keep their order
        for path, obj in sorted(objects, key=lambda item: item[0].encode()):
            meta = obj["metadata"]
            namespace = meta.get("namespace")
            if namespace is not None:
                assert ("Namespace", None, namespace) in applied, (
                    f"{path}: {obj['kind']} applied before its Namespace"
                )
                service = meta["labels"][NAME_LABEL]
                owner = meta["annotations"][WORKLOAD_ANNOTATION].split("/")[2]
                if owner == namespace and obj["kind"] != "ServiceAccount":
                    assert ("ServiceAccount", namespace, service) in applied, (
                        f"{path}: {obj['kind']} applied before ServiceAccount {service}"
                    )
            if obj["kind"] == "RoleBinding":
                assert ("ClusterRole", None, obj["roleRef"]["name"]) in applied, (
                    f"{path} applied before its ClusterRole"
                )
                for subject in obj["subjects"]:
                    if subject["namespace"] == namespace:
                        assert ("ServiceAccount", namespace, subject["name"]) in applied, (
                            f"{path} applied before its subject"
                        )
            applied.add((obj["kind"], namespace, meta["name"]))
        # Bindings to a ServiceAccount of another namespace may precede it (RBAC allows that); it must exist though.
        for path, obj in objects:
            for subject in obj.get("subjects", ()):
                assert ("ServiceAccount", subject["namespace"], subject["name"]) in applied, (
                    f"{path}: unknown subject in {cluster}"
                )


def test_documents_of_a_file_come_in_apply_order(case: Case) -> None:
    """ServiceAccount, token Secret, RoleBindings, ConfigMaps, Certificate, Service, NetworkPolicy."""
    for artifact in case.artifacts:
        kinds = [o["kind"] for o in case.documents[artifact.path]]
        assert kinds == sorted(kinds, key=APPLY_ORDER.index), artifact.path
        if artifact.target is not None:  # a workload or reader: its identity first, once
            assert kinds[0] == "ServiceAccount" and kinds.count("ServiceAccount") == 1, artifact.path
    assert list(APPLY_ORDER[2:]) == [
        "ServiceAccount",
        "Secret",
        "RoleBinding",
        "ConfigMap",
        "Certificate",
        "Service",
        "NetworkPolicy",
    ]


# ---------------------------------------------------------------- least privilege


def watched_from(case: Case) -> dict[tuple[str, str], set[tuple[str, str]]]:
    """(reading service, its namespace or None off-cluster) -> {(cluster, namespace)} its Synapse configs watch,
    read from the rendered Synapse documents (what the sidecar really uses), split by inside/outside the cluster."""
    found: dict[tuple[str, str], set[tuple[str, str]]] = defaultdict(set)
    for config in render(case.mesh).values():
        workload = config.workload
        for entry in config.documents[SYNAPSE]["services"].values():
            for watcher in entry["discovery"]["watchers"].values():
                if watcher["method"] != "kubernetes":
                    continue
                if watcher["cluster"] == workload.cluster:
                    found[(workload.service, workload.namespace)].add(
                        (watcher["cluster"], watcher["namespace"])
                    )
                else:  # read with the service's external reader identity in that cluster
                    found[(workload.service, DISCOVERY_NAMESPACE)].add(
                        (watcher["cluster"], watcher["namespace"])
                    )
    return found


def test_role_bindings_grant_only_declared_dependencies_that_are_watched(case: Case) -> None:
    """Sound and complete: every grant is a declared, watched dependency's namespace; every watch has its grant."""
    deps, placements = case.declared.deps, case.declared.placements
    roles = {
        (p.split("/")[1], o["metadata"]["name"]): o for p, o in case.objects if o["kind"] == "ClusterRole"
    }
    assert not any(o["kind"] in ("Role", "ClusterRoleBinding") for _, o in case.objects), (
        "grants are namespace-scoped bindings only"
    )
    watched = watched_from(case)
    granted: set[tuple[str, str, str, str]] = set()
    for path, obj in case.objects:
        if obj["kind"] != "RoleBinding":
            continue
        cluster, namespace = path.split("/")[1], obj["metadata"]["namespace"]
        [subject] = obj["subjects"]
        client, account_ns = subject["name"], subject["namespace"]
        assert subject["kind"] == "ServiceAccount", path
        # the identity: the client's own ServiceAccount where it runs here, or its external reader account
        assert account_ns == DISCOVERY_NAMESPACE or placements[client].get(cluster) == account_ns, path
        assert any(placements[d].get(cluster) == namespace for d in deps[client]), (
            f"{path}: {client} declares no dependency in {namespace}"
        )
        assert (cluster, namespace) in watched[(client, account_ns)], (
            f"{path}: no Synapse of {client} watches {namespace} here"
        )
        role = roles[(cluster, obj["roleRef"]["name"])]
        assert obj["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": role["metadata"]["name"],
        }
        assert sorted(
            (tuple(r["apiGroups"]), tuple(r["resources"]), tuple(r["verbs"])) for r in role["rules"]
        ) == [
            (("",), ("endpoints",), ("get", "list", "watch")),
            (("discovery.k8s.io",), ("endpointslices",), ("get", "list", "watch")),
        ]
        granted.add((cluster, client, account_ns, namespace))
    # and nothing Synapse needs is missing: every in-cluster dependency's namespace is granted (pods of
    # a cluster watch every dependency placed there: read from the spec, not from the rendering)
    needed = {
        (c, s, placements[s][c], placements[d][c])
        for s in deps
        for c in placements[s]
        for d in deps[s]
        if c in placements[d]
    }
    assert {g for g in granted if g[2] != DISCOVERY_NAMESPACE} == needed
    # and every watch from outside a cluster is granted to the reader identity of that client service
    outside = {
        (c, s, ns, namespace)
        for (s, ns), pairs in watched.items()
        if ns == DISCOVERY_NAMESPACE
        for c, namespace in pairs
    }
    assert {g for g in granted if g[2] == DISCOVERY_NAMESPACE} == outside


def test_every_external_reader_has_its_identity_and_token_secret(case: Case) -> None:
    """Per (cluster, client) read from outside: a ServiceAccount in meshc-discovery and its token Secret, no more."""
    readers = {(r.cluster, r.service) for r in external_readers(case.mesh)}
    outside = {
        (c, s) for (s, ns), pairs in watched_from(case).items() if ns == DISCOVERY_NAMESPACE for c, _ in pairs
    }
    assert readers == outside and readers, "the mesh should have readers from outside a cluster"
    found: dict[tuple[str, str], set[str]] = defaultdict(set)
    for path, obj in case.objects:
        meta, cluster = obj["metadata"], path.split("/")[1]
        if meta.get("namespace", meta["name"]) != DISCOVERY_NAMESPACE or obj["kind"] == "Namespace":
            continue
        service = meta["labels"][NAME_LABEL]
        assert meta["annotations"][WORKLOAD_ANNOTATION] == f"k8s/{cluster}/{DISCOVERY_NAMESPACE}/{service}", (
            path
        )
        if obj["kind"] == "Secret":
            assert obj["type"] == "kubernetes.io/service-account-token" and "data" not in obj, path
            assert (
                meta["name"] == f"{service}-token"
                and meta["annotations"]["kubernetes.io/service-account.name"] == service
            ), path
        else:
            assert obj["kind"] == "ServiceAccount" and meta["name"] == service, path
        found[(cluster, service)].add(obj["kind"])
    assert dict(found) == {reader: {"ServiceAccount", "Secret"} for reader in readers}
    namespaces = {
        p.split("/")[1]
        for p, o in case.objects
        if o["kind"] == "Namespace" and o["metadata"]["name"] == DISCOVERY_NAMESPACE
    }
    assert namespaces == {c for c, _ in readers}


def test_example_download_vms_read_metadata_in_both_clusters(example: Case) -> None:
    """The article's Example 2: download on VMs watches metadata's Endpoints in kube-sjc-a and kube-iad-a."""
    for cluster in ("kube-sjc-a", "kube-iad-a"):
        objects = {
            (o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o
            for p, o in example.objects
            if p == f"kubernetes/{cluster}/{DISCOVERY_NAMESPACE}/download.yaml"
        }  # the reader's file
        binding = objects[("RoleBinding", "metadata", f"meshc-discovery.{DISCOVERY_NAMESPACE}.download")]
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "download", "namespace": DISCOVERY_NAMESPACE}
        ]
        readers = objects[("ServiceAccount", DISCOVERY_NAMESPACE, "download")]["metadata"]["annotations"][
            "meshc.dev/readers"
        ]
        assert {r for r in readers.split(",") if r.startswith("vm/download/")}, readers


def test_a_service_in_the_readers_namespace_is_rejected(example: Case) -> None:
    """The spec checks reject it, at the namespace, before any backend runs."""
    files = dict(spec_files(EXAMPLE))
    files["services/upload.yaml"] = files["services/upload.yaml"].replace(
        b"cluster: kube-sjc-a", b"cluster: kube-sjc-a, namespace: meshc-discovery", 1
    )
    assert files["services/upload.yaml"] != spec_files(EXAMPLE)["services/upload.yaml"]
    with pytest.raises(SpecError) as caught:
        check(load_documents(files, "mesh-spec"))
    assert [(d.code, d.span.file) for d in caught.value.diagnostics] == [
        ("reserved-namespace", "mesh-spec/services/upload.yaml")
    ]


def test_network_policies_admit_only_declared_clients_and_off_cluster_ranges(case: Case) -> None:
    deps, placements, clusters = case.declared.deps, case.declared.placements, case.declared.clusters
    seen = set()
    for path, obj in case.objects:
        if obj["kind"] != "NetworkPolicy":
            continue
        cluster = path.split("/")[1]
        service = obj["spec"]["podSelector"]["matchLabels"][NAME_LABEL]
        policy = clusters[cluster].get("network_policy") or {}
        assert policy.get("enabled") and placements[service][cluster] == obj["metadata"]["namespace"], path
        assert obj["spec"]["policyTypes"] == ["Ingress"]
        clients = {
            (placements[c][cluster], c)
            for c, wanted in deps.items()
            if service in wanted and cluster in placements[c]
        }
        ranges = set(policy.get("off_cluster_cidrs") or ())
        peers, blocks = set(), set()
        for rule in obj["spec"]["ingress"]:
            assert rule["from"], f"{path}: a rule without `from` admits every source"
            assert rule["ports"] == [{"protocol": "TCP", "port": case.declared.mesh_ports[service]}], path
            for peer in rule["from"]:
                if "ipBlock" in peer:
                    assert set(peer) == {"ipBlock"} and set(peer["ipBlock"]) == {"cidr"}, path
                    blocks.add(peer["ipBlock"]["cidr"])
                else:
                    assert set(peer) == {"namespaceSelector", "podSelector"}, path
                    peers.add(
                        (
                            peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
                            peer["podSelector"]["matchLabels"][NAME_LABEL],
                        )
                    )
        assert peers == clients and blocks == ranges, path
        seen.add((cluster, service))
    expected = {
        (c, s)
        for s in placements
        for c in placements[s]
        if (clusters[c].get("network_policy") or {}).get("enabled")
    }
    assert seen == expected


def test_a_service_nobody_may_call_gets_a_deny_all_policy(synthetic: Case) -> None:
    """In a cluster without off-cluster ranges, a server with no client there admits no one, not everyone."""
    deps, placements = synthetic.declared.deps, synthetic.declared.placements
    lonely = [
        (p, o)
        for p, o in synthetic.objects
        if o["kind"] == "NetworkPolicy"
        and p.split("/")[1] == "k-c1"
        and not any(
            o["spec"]["podSelector"]["matchLabels"][NAME_LABEL] in d and "k-c1" in placements[c]
            for c, d in deps.items()
        )
    ]
    assert lonely, "the random mesh should have such a service"
    for path, obj in lonely:
        assert obj["spec"]["ingress"] == [], path


# ---------------------------------------------------------------- objects


def test_example_upload_objects(example: Case) -> None:
    [artifact] = [a for a in example.artifacts if a.path == "kubernetes/kube-sjc-a/upload/upload.yaml"]
    assert artifact.target == "k8s/kube-sjc-a/upload/upload"
    listed = [
        (o["kind"], o["metadata"]["namespace"], o["metadata"]["name"])
        for o in example.documents[artifact.path]
    ]
    # upload depends on metadata and feature-flags in this cluster (storage-gateway is not here): a grant in each
    assert listed == [
        ("ServiceAccount", "upload", "upload"),
        ("RoleBinding", "feature-flags", "meshc-discovery.upload.upload"),
        ("RoleBinding", "metadata", "meshc-discovery.upload.upload"),
        ("ConfigMap", "upload", "upload-mesh-envoy"),
        ("ConfigMap", "upload", "upload-mesh-synapse"),
        ("Certificate", "upload", "upload-mesh-tls"),
        ("Service", "upload", "upload"),
    ]  # no NetworkPolicy: opt-in
    objects = {
        (kind, name): obj
        for (kind, _, name), obj in zip(listed, example.documents[artifact.path], strict=True)
    }
    cert = objects[("Certificate", "upload-mesh-tls")]
    assert cert["spec"]["uris"] == ["spiffe://box.mesh/ns/upload/sa/upload"]
    assert cert["spec"]["issuerRef"] == {
        "group": "cert-manager.io",
        "kind": "ClusterIssuer",
        "name": "mesh-ca",
    }
    assert (cert["spec"]["secretName"], cert["spec"]["duration"], cert["spec"]["renewBefore"]) == (
        "upload-mesh-tls",
        "720h",
        "240h",
    )
    svc = objects[("Service", "upload")]
    assert svc["spec"]["selector"] == {NAME_LABEL: "upload"}
    assert svc["spec"]["ports"] == [{"name": "mesh", "protocol": "TCP", "port": 18080, "targetPort": 18080}]
    envoy = objects[("ConfigMap", "upload-mesh-envoy")]
    assert sorted(envoy["data"]) == ["bootstrap.json", "cds.json", "lds.json", "sds.json"]
    assert sorted(objects[("ConfigMap", "upload-mesh-synapse")]["data"]) == ["synapse.json"]


def test_config_maps_hold_the_documents_and_the_restart_hash(example: Case) -> None:
    sidecars = render(example.mesh)
    for path, obj in example.objects:
        if obj["kind"] != "ConfigMap":
            continue
        documents = sidecars[obj["metadata"]["annotations"][WORKLOAD_ANNOTATION]].documents
        mount = obj["metadata"]["name"].rsplit("-", 1)[1]
        for key, text in obj["data"].items():
            assert yaml.load(text, Loader=yaml.CSafeLoader) == documents[f"{mount}/{key}"], path
        assert obj["metadata"]["annotations"][RESTART_ANNOTATION] == restart_hash_of(documents)


def test_files_are_exactly_the_canonical_yaml_of_their_objects(case: Case) -> None:
    """The backend memoizes ConfigMap entries; the bytes are still dump_yaml of each whole object, `---` before each."""
    for artifact in case.artifacts:
        assert (
            b"".join(b"---\n" + dump_yaml(obj) for obj in case.documents[artifact.path]) == artifact.data
        ), artifact.path


def _hand_sidecars(mesh: Mesh, **changes: Any) -> dict[str, SidecarConfig]:
    """Hand-made documents for every workload; `changes` overrides documents by file name."""
    base = {
        ENVOY_BOOTSTRAP: {"node": "n"},
        ENVOY_LDS: {"resources": []},
        ENVOY_CDS: {"resources": []},
        SYNAPSE: {"services": {}},
    }
    names = {"bootstrap": ENVOY_BOOTSTRAP, "lds": ENVOY_LDS, "cds": ENVOY_CDS, "synapse": SYNAPSE}
    documents = {**base, **{names[k]: v for k, v in changes.items()}}
    return {w.id: SidecarConfig(workload=w, documents=documents) for w in mesh.workloads}


def _restart_hashes(mesh: Mesh, **changes: Any) -> set[str]:
    objects = [obj for a in build_kubernetes(mesh, _hand_sidecars(mesh, **changes)) for obj in load(a.data)]
    return {o["metadata"]["annotations"][RESTART_ANNOTATION] for o in objects if o["kind"] == "ConfigMap"}


@pytest.mark.parametrize(
    ("change", "rolls"),
    [
        ({"lds": {"resources": [1]}}, False),
        ({"cds": {"resources": [2]}}, False),
        ({"bootstrap": {"node": "m"}}, True),
        ({"synapse": {"services": {"a": 1}}}, False),  # the Synapse fork reconciles services live
        ({"synapse": {"services": {}, "file_output": {"output_directory": "/x"}}}, True),
    ],
)
def test_restart_hash_changes_only_for_restart_class_documents(
    example: Case, change: dict[str, Any], rolls: bool
) -> None:
    before = _restart_hashes(example.mesh)
    after = _restart_hashes(example.mesh, **change)
    assert len(before) == len(after) == 1
    assert (before != after) is rolls


def test_an_oversized_config_map_is_a_diagnostic_not_a_failed_apply(example: Case) -> None:
    huge = {"resources": [{"name": f"listener-{i}", "padding": "x" * 1000} for i in range(300)]}
    with pytest.raises(SpecError) as caught:
        build_kubernetes(example.mesh, _hand_sidecars(example.mesh, lds=huge))
    diagnostics = caught.value.diagnostics
    assert diagnostics and {d.code for d in diagnostics} == {"object-too-large"}
    assert any(
        "k8s/kube-sjc-a/upload/upload: ConfigMap upload-mesh-envoy is" in d.message for d in diagnostics
    )


def test_a_document_no_pod_mounts_is_an_internal_error(example: Case) -> None:
    sidecars = {
        wid: SidecarConfig(workload=c.workload, documents={**c.documents, "nerve/nerve.json": {}})
        for wid, c in _hand_sidecars(example.mesh).items()
    }
    with pytest.raises(InternalError) as caught:
        build_kubernetes(example.mesh, sidecars)
    assert (
        "k8s/kube-sjc-a/upload/upload: sidecar document 'nerve/nerve.json' is in no directory mounted in pods"
        in str(caught.value)
    )
    assert str(caught.value).splitlines()[0].endswith("[internal]")


def test_build_is_deterministic(example: Case) -> None:
    again = build_kubernetes(example.mesh, render(example.mesh))
    assert [(a.path, a.data, a.target) for a in again] == [
        (a.path, a.data, a.target) for a in example.artifacts
    ]


# ---------------------------------------------------------------- the service team's Deployment


def test_example_deployment_uses_what_meshc_writes(example: Case) -> None:
    """Names, paths and labels in examples/kubernetes/deployment.yaml match upload's objects in kube-sjc-a."""
    [deployment] = load(EXAMPLE_DEPLOYMENT.read_bytes())
    objects = {
        (o["kind"], o["metadata"]["name"]): o
        for p, o in example.objects
        if p.startswith("kubernetes/kube-sjc-a/upload/")
    }
    pod = deployment["spec"]["template"]
    sidecar = example.mesh.sidecar
    assert deployment["metadata"]["namespace"] == "upload"
    assert ("ServiceAccount", pod["spec"]["serviceAccountName"]) in objects
    assert objects[("Service", "upload")]["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert RESTART_ANNOTATION in pod["metadata"]["annotations"]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for c in pod["spec"]["initContainers"] for m in c["volumeMounts"]}
    assert volumes[mounts[f"{sidecar.config_dir}/envoy"]]["configMap"]["name"] in {
        n for k, n in objects if k == "ConfigMap"
    }
    assert volumes[mounts[f"{sidecar.config_dir}/envoy"]]["configMap"]["name"] == "upload-mesh-envoy"
    assert volumes[mounts[f"{sidecar.config_dir}/synapse"]]["configMap"]["name"] == "upload-mesh-synapse"
    cert = objects[("Certificate", "upload-mesh-tls")]
    assert volumes[mounts[f"{sidecar.config_dir}/tls"]]["secret"]["secretName"] == cert["spec"]["secretName"]
    assert "emptyDir" in volumes[mounts[sidecar.runtime_dir]]
    assert all("subPath" not in m for c in pod["spec"]["initContainers"] for m in c["volumeMounts"])
    synapse = yaml.safe_load(objects[("ConfigMap", "upload-mesh-synapse")]["data"]["synapse.json"])
    credential_dirs = {
        _dirname(w["token_file"])
        for s in synapse["services"].values()
        for w in s["discovery"]["watchers"].values()
        if w["method"] == "kubernetes"
    }
    assert credential_dirs and credential_dirs <= set(mounts)


def _dirname(path: str) -> str:
    return path.rsplit("/", 1)[0]
