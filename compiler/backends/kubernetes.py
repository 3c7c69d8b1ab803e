"""Kubernetes backend: each cluster workload's objects, laid out as one kube-applier tree per cluster.

Layout, one multi-document YAML file (each document opened by `---`) per unit of rollout:

    kubernetes/<cluster>/00-cluster.yaml              cluster-scoped objects: the discovery ClusterRole
    kubernetes/<cluster>/00-namespaces/<ns>.yaml      one Namespace
    kubernetes/<cluster>/<ns>/<service>.yaml          one workload (target `k8s/<cluster>/<ns>/<service>`)
    kubernetes/<cluster>/meshc-discovery/<service>.yaml   one external reader (its pseudo-target, below)

kube-applier runs one `kubectl apply -f` per file, in `sort.Strings` order of the paths, and never
prunes. `00-` sorts before every namespace directory (namespace names start with a letter), so
every Namespace and the ClusterRole exist before any file that needs them: a workload's
RoleBindings live in its dependencies' namespaces, not only its own. Inside a file the objects
come in APPLY_ORDER (ServiceAccount, its token Secret, RoleBindings, ConfigMaps, Certificate,
Service, NetworkPolicy), which `kubectl apply -f` follows. One file per workload, not per object:
kube-applier starts one process per file, and the kernel's cost of creating a file dominated
large builds. A Namespace keeps a file of its own because several services share it and a
rollout build takes shared files from several revisions by path: a namespace only an older
revision still uses keeps its file. Namespaces and the ClusterRole have target None (they
change only when a namespace or cluster appears or disappears).

Discovery RBAC: one ClusterRole per cluster, `meshc-discovery-reader` (read Endpoints and
EndpointSlices; it grants nothing by itself), and one RoleBinding to it per (reader, namespace
watched). A RoleBinding grants only inside its own namespace, so this is as narrow as a Role per
namespace, with half the objects.

External readers: a workload whose Synapse watches a cluster it does not run in (a VM pool, or a
pod of another cluster) reads that cluster's API server with a token of its own. For every such
(cluster C, client service S), C gets Namespace `meshc-discovery`, ServiceAccount `S` and its
long-lived token Secret `S-token` there, and the discovery RoleBinding in each namespace of
C that S's workloads watch from outside. These objects have the pseudo-target
`k8s/<C>/meshc-discovery/<S>` (the reader id) and its file: one grant serves every outside
workload of S, so it belongs to none of them, and a diff shows it as its own unit of rollout in
cluster C. meshc never sees the token: the token controller writes it into the Secret, and the
site's secret distribution copies `token` and `ca.crt` to `{config_dir}/discovery/<C>/` of S's
VMs and pods.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from compiler.diagnostics import Diagnostic, SpecError, internal_error
from compiler.emit import Artifact, dump_json, dump_yaml
from compiler.ir.model import KubernetesSource, Mesh, Workload
from compiler.memo import Memo
from compiler.render import SidecarConfig
from compiler.render.restart import restart_view
from compiler.spec.model import DISCOVERY_NAMESPACE  # no service may be placed there (spec checks)

ROOT = "kubernetes"

MANAGED_BY = "app.kubernetes.io/managed-by"
NAME_LABEL = "app.kubernetes.io/name"
MESH_LABEL = "meshc.dev/mesh"
WORKLOAD_ANNOTATION = "meshc.dev/workload"
IDENTITY_ANNOTATION = "meshc.dev/identity"
READERS_ANNOTATION = "meshc.dev/readers"  # on an external reader's objects: the workloads that use its token
SERVICE_ACCOUNT_NAME_ANNOTATION = "kubernetes.io/service-account.name"  # the token controller's key
RESTART_ANNOTATION = "meshc.dev/restart-hash"
# Proof of ownership for drift: `<mesh>/<cluster>/<kind>/<namespace or _>/<name>`. A label is no proof
# (cert-manager copies ours onto its Secrets through secretTemplate; EndpointSlices copy a Service's),
# while this value names the object it sits on, so a copy elsewhere does not match its carrier.
OWNER_ANNOTATION = "meshc.io/owner"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # set by the API server on every Namespace

# The order kube-applier applies objects in: files by path, then a file's documents in this kind
# order. A token Secret comes after its ServiceAccount (the token controller deletes a token Secret
# whose ServiceAccount does not exist); the RoleBindings' ClusterRole is in 00-cluster.yaml.
APPLY_ORDER: tuple[str, ...] = (
    "Namespace",
    "ClusterRole",
    "ServiceAccount",
    "Secret",
    "RoleBinding",
    "ConfigMap",
    "Certificate",
    "Service",
    "NetworkPolicy",
)
_RANK: Mapping[str, int] = {kind: rank for rank, kind in enumerate(APPLY_ORDER)}

CLUSTER_FILE = "00-cluster.yaml"  # `00-` sorts before every namespace directory: those start with a letter
NAMESPACES_DIR = "00-namespaces"
DOCUMENT_START = b"---\n"

# Sidecar document directories, each a ConfigMap mounted at {config_dir}/<dir>. A ConfigMap key
# cannot contain '/', and Envoy's watched_directory must be the mount root so the kubelet's
# `..data` symlink swap reloads LDS/CDS, hence one ConfigMap per directory.
CONFIG_MOUNTS = ("envoy", "synapse")

SERVICE_ACCOUNT_TOKEN = "kubernetes.io/service-account-token"

DISCOVERY_CLUSTER_ROLE = "meshc-discovery-reader"
DISCOVERY_RULES = (
    {"apiGroups": [""], "resources": ["endpoints"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]},
)

# Box's kube-applier runs client-side `kubectl apply`, which copies the whole object into the
# kubectl.kubernetes.io/last-applied-configuration annotation; annotations are capped at 256 KiB,
# a tighter limit than the 1 MiB of ConfigMap data. Keep a margin for the annotation's other bytes.
MAX_APPLIED_BYTES = 256 * 1024 - 4096


def build_kubernetes(
    mesh: Mesh,
    sidecars: Mapping[str, SidecarConfig],
    only: Collection[str] | None = None,
    values: bool = True,
) -> list[Artifact]:
    """The files of every Kubernetes workload and external reader (those in `only`, if given, by target id),
    plus one per Namespace and one per cluster (its discovery ClusterRole); with `values`, each file's value is
    the tuple of its objects."""
    workloads = [w for w in mesh.workloads if w.platform == "kubernetes"]
    in_cluster = _workloads_by_cluster_service(workloads)
    readers = external_readers(mesh)
    memo = Memo()  # render shares documents between workloads: serialize each once
    namespaces = {(w.cluster or "", w.namespace) for w in workloads} | {
        (r.cluster, DISCOVERY_NAMESPACE) for r in readers
    }
    artifacts = [
        _file(mesh, cluster, namespace_path(cluster, ns), [namespace_object(mesh, ns)], None, memo, values)
        for cluster, ns in sorted(namespaces)
    ]
    artifacts += [
        _file(mesh, cluster, cluster_path(cluster), [discovery_cluster_role(mesh)], None, memo, values)
        for cluster in sorted({c for c, _ in namespaces})
    ]
    artifacts += [
        _file(mesh, r.cluster, unit_path(r.id), reader_objects(mesh, r), r.id, memo, values)
        for r in readers
        if only is None or r.id in only
    ]
    problems: list[Diagnostic] = []
    for workload in workloads:
        if only is not None and workload.id not in only:
            continue
        if workload.id not in sidecars:
            problems.append(
                Diagnostic(
                    span=workload.span,
                    code="internal",
                    message=f"{workload.id}: no sidecar documents were rendered",
                )
            )
            continue
        documents = sidecars[workload.id].documents
        texts = {name: memo.once(("json", id(doc)), _json_text, doc) for name, doc in documents.items()}
        objects = [
            owned(mesh, workload.cluster or "", obj)
            for obj in workload_objects(mesh, workload, texts, restart_hash_of(documents), in_cluster)
        ]
        problems += _unmounted(workload, texts)
        problems += _size_problems(
            workload, objects
        )  # per object: kubectl records each object's own annotation
        artifacts.append(
            _file(mesh, workload.cluster or "", unit_path(workload.id), objects, workload.id, memo, values)
        )
    bugs = [d for d in problems if d.code == "internal"]
    if bugs:  # a meshc bug outranks what the spec got wrong: the spec's errors may be its consequence
        raise internal_error(bugs)
    if problems:
        raise SpecError(problems)
    return artifacts


def cluster_path(cluster: str) -> str:
    """The file of a cluster's cluster-scoped objects other than Namespaces: kubernetes/<cluster>/00-cluster.yaml."""
    return f"{ROOT}/{cluster}/{CLUSTER_FILE}"


def namespace_path(cluster: str, namespace: str) -> str:
    """The file of one Namespace: kubernetes/<cluster>/00-namespaces/<namespace>.yaml."""
    return f"{ROOT}/{cluster}/{NAMESPACES_DIR}/{namespace}.yaml"


def unit_path(target: str) -> str:
    """The file of a workload or external reader `k8s/<cluster>/<namespace>/<service>`: kubernetes/<cluster>/<namespace>/<service>.yaml."""
    _, cluster, namespace, service = target.split("/")
    return f"{ROOT}/{cluster}/{namespace}/{service}.yaml"


def object_path(cluster: str, obj: Mapping[str, Any]) -> str:
    """The file meshc writes an object into: found from the object alone (for objects no longer rendered, too).

    A namespaced object is in the file of the workload or reader its `meshc.dev/workload` annotation
    names; one without a usable annotation is placed in its namespace as its service's (or its own) file.
    """
    kind, meta = obj["kind"], obj["metadata"]
    if kind == "Namespace":
        return namespace_path(cluster, meta["name"])
    namespace = meta.get("namespace")
    if not namespace:
        return cluster_path(cluster)
    owner = str((meta.get("annotations") or {}).get(WORKLOAD_ANNOTATION, ""))
    parts = owner.split("/")
    if len(parts) == 4 and parts[0] == "k8s" and parts[1] == cluster and all(parts[2:]):
        return unit_path(owner)
    return f"{ROOT}/{cluster}/{namespace}/{(meta.get('labels') or {}).get(NAME_LABEL) or meta['name']}.yaml"


def kind_rank(kind: str) -> int:
    """The place of a kind in APPLY_ORDER, inside a file (kinds meshc does not write come last)."""
    return _RANK.get(kind, len(_RANK))


def apply_key(cluster: str, obj: Mapping[str, Any]) -> tuple[str, int, str, str]:
    """Where kube-applier applies an object in a cluster's run: (file, rank of its kind in the file, namespace, name).

    Sorting by it gives the apply order; deleting in the reverse order removes bindings before what
    they bind and a Namespace after everything in it.
    """
    meta = obj["metadata"]
    return object_path(cluster, obj), kind_rank(obj["kind"]), meta.get("namespace") or "", meta["name"]


def owner_id(mesh: str, cluster: str, kind: str, namespace: str | None, name: str) -> str:
    """The ownership annotation's value: `<mesh>/<cluster>/<kind>/<namespace or _>/<name>`."""
    return f"{mesh}/{cluster}/{kind}/{namespace or '_'}/{name}"


def owned(mesh: Mesh, cluster: str, obj: dict[str, Any]) -> dict[str, Any]:
    """The object with the ownership annotation added to its metadata (annotations kept sorted)."""
    meta = obj["metadata"]
    value = owner_id(mesh.name, cluster, obj["kind"], meta.get("namespace"), meta["name"])
    annotations = dict(sorted({**meta.get("annotations", {}), OWNER_ANNOTATION: value}.items()))
    return {**obj, "metadata": {**meta, "annotations": annotations}}


def workload_objects(
    mesh: Mesh,
    workload: Workload,
    texts: Mapping[str, str],
    restart_hash: str,
    in_cluster: Mapping[tuple[str, str], Sequence[Workload]],
) -> list[dict[str, Any]]:
    """Every object of one workload (its documents given serialized), in its namespace or, for RBAC, its dependencies'."""
    objects = [service_account(mesh, workload)]
    objects += discovery_rbac(mesh, workload)
    objects += [config_map(mesh, workload, mount, texts, restart_hash) for mount in CONFIG_MOUNTS]
    objects += [certificate(mesh, workload), service(mesh, workload)]
    cluster = mesh.clusters[workload.cluster or ""]
    if cluster.network_policy:
        clients = [
            c for name in workload.ingress.client_services for c in in_cluster.get((cluster.name, name), ())
        ]
        objects.append(network_policy(mesh, workload, clients, cluster.off_cluster_cidrs))
    return objects


def restart_hash_of(documents: Mapping[str, Any]) -> str:
    """sha256 of what the sidecar processes read only at start (restart.restart_view): the bootstrap
    and Synapse's process settings. LDS/CDS/SDS and Synapse's services reload live, so they never roll pods."""
    digest = hashlib.sha256()
    for name in sorted(documents):
        view = restart_view(name, documents[name])
        if view is not None:
            digest.update(name.encode() + b"\0" + dump_json(view) + b"\0")
    return digest.hexdigest()


# ---------------------------------------------------------------- objects


def labels(mesh: Mesh, service: str | None) -> dict[str, str]:
    """The labels every meshc object carries; a shared Namespace has no service label."""
    found = {MANAGED_BY: "meshc"}
    if service is not None:
        found[NAME_LABEL] = service
    found[MESH_LABEL] = mesh.name
    return found


def metadata(
    mesh: Mesh,
    workload: Workload,
    name: str,
    namespace: str | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Name, namespace (always explicit: kube-applier applies without -n), labels, annotations."""
    return owned_metadata(mesh, workload.service, workload.id, name, namespace or workload.namespace, extra)


def owned_metadata(
    mesh: Mesh, service: str, owner: str, name: str, namespace: str, extra: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """metadata() for an owner given by id: a workload id, or an external reader id."""
    annotations = {WORKLOAD_ANNOTATION: owner, **(extra or {})}
    return {
        "name": name,
        "namespace": namespace,
        "labels": labels(mesh, service),
        "annotations": dict(sorted(annotations.items())),
    }


def namespace_object(mesh: Mesh, namespace: str) -> dict[str, Any]:
    """A Namespace, shared by every meshc service placed in it."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": namespace, "labels": labels(mesh, None)},
    }


def service_account(mesh: Mesh, workload: Workload) -> dict[str, Any]:
    """The workload identity: spiffe://<trust domain>/ns/<namespace>/sa/<service>."""
    meta = metadata(mesh, workload, workload.service, extra={IDENTITY_ANNOTATION: workload.identity})
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta}


def discovery_role_name(namespace: str, service: str) -> str:
    """`meshc-discovery.<ns>.<service>`: dots cannot occur in either name, so distinct clients never collide."""
    return f"meshc-discovery.{namespace}.{service}"


def discovery_namespaces(workload: Workload) -> list[str]:
    """Namespaces of this cluster whose Endpoints the workload's Synapse watches."""
    return sorted(
        {
            source.namespace
            for egress in workload.egress
            for source in egress.sources
            if isinstance(source, KubernetesSource) and source.cluster == workload.cluster
        }
    )


def discovery_rbac(mesh: Mesh, workload: Workload) -> list[dict[str, Any]]:
    """A RoleBinding per dependency namespace in this cluster: read Endpoints/EndpointSlices there only."""
    return discovery_grants(
        mesh, workload.service, workload.id, workload.namespace, discovery_namespaces(workload)
    )


def discovery_grants(
    mesh: Mesh, service: str, owner: str, account_namespace: str, namespaces: Sequence[str]
) -> list[dict[str, Any]]:
    """A RoleBinding in each namespace to the cluster's discovery ClusterRole, for ServiceAccount `service` of `account_namespace`."""
    name = discovery_role_name(account_namespace, service)
    subject = {"kind": "ServiceAccount", "name": service, "namespace": account_namespace}
    role = {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": DISCOVERY_CLUSTER_ROLE}
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": owned_metadata(mesh, service, owner, name, namespace),
            "roleRef": dict(role),
            "subjects": [dict(subject)],
        }
        for namespace in namespaces
    ]


def discovery_cluster_role(mesh: Mesh) -> dict[str, Any]:
    """The rules every discovery RoleBinding refers to: read Endpoints and EndpointSlices (granted per namespace by the bindings)."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": DISCOVERY_CLUSTER_ROLE, "labels": labels(mesh, None)},
        "rules": [dict(rule) for rule in DISCOVERY_RULES],
    }


# ---------------------------------------------------------------- external readers


@dataclass(frozen=True, kw_only=True, slots=True)
class ExternalReader:
    """Client service `service`, read by workloads outside `cluster`: the namespaces there they watch."""

    cluster: str
    service: str
    namespaces: tuple[str, ...]
    workloads: tuple[str, ...]  # the client's workloads that read through this identity

    @property
    def id(self) -> str:
        """The pseudo-target of the reader's files, `k8s/<cluster>/meshc-discovery/<service>`."""
        return f"k8s/{self.cluster}/{DISCOVERY_NAMESPACE}/{self.service}"


def external_readers(mesh: Mesh) -> list[ExternalReader]:
    """Every (cluster, client service) whose workloads watch Kubernetes sources there from outside, sorted."""
    namespaces: dict[tuple[str, str], set[str]] = defaultdict(set)
    readers: dict[tuple[str, str], set[str]] = defaultdict(set)
    for workload in mesh.workloads:
        for egress in workload.egress:
            for source in egress.sources:
                if isinstance(source, KubernetesSource) and source.cluster != workload.cluster:
                    namespaces[(source.cluster, workload.service)].add(source.namespace)
                    readers[(source.cluster, workload.service)].add(workload.id)
    return [
        ExternalReader(
            cluster=cluster,
            service=service,
            namespaces=tuple(sorted(namespaces[(cluster, service)])),
            workloads=tuple(sorted(readers[(cluster, service)])),
        )
        for cluster, service in sorted(namespaces)
    ]


def reader_objects(mesh: Mesh, reader: ExternalReader) -> list[dict[str, Any]]:
    """The reader's ServiceAccount and token Secret in meshc-discovery, and its discovery grants."""
    extra = {READERS_ANNOTATION: ",".join(reader.workloads)}
    account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": owned_metadata(
            mesh, reader.service, reader.id, reader.service, DISCOVERY_NAMESPACE, extra
        ),
    }
    # No data: the token controller fills in token, ca.crt and namespace. Client-side apply merges
    # against the last applied object, which has no data, so a later apply keeps what it wrote.
    token = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": SERVICE_ACCOUNT_TOKEN,
        "metadata": owned_metadata(
            mesh,
            reader.service,
            reader.id,
            reader_secret_name(reader.service),
            DISCOVERY_NAMESPACE,
            {**extra, SERVICE_ACCOUNT_NAME_ANNOTATION: reader.service},
        ),
    }
    return [
        account,
        token,
        *discovery_grants(mesh, reader.service, reader.id, DISCOVERY_NAMESPACE, reader.namespaces),
    ]


def reader_secret_name(service: str) -> str:
    """`<service>-token`: the Secret the token controller writes the reader's token and the cluster CA into."""
    return f"{service}-token"


def config_map_name(workload: Workload, mount: str) -> str:
    """`<service>-mesh-<dir>`, mounted at {config_dir}/<dir>."""
    return f"{workload.service}-mesh-{mount}"


def config_map(
    mesh: Mesh, workload: Workload, mount: str, texts: Mapping[str, str], restart_hash: str
) -> dict[str, Any]:
    """The sidecar documents of one directory (canonical JSON text), keyed by file name."""
    data = {
        name.split("/", 1)[1]: text for name, text in sorted(texts.items()) if name.split("/", 1)[0] == mount
    }
    meta = metadata(
        mesh, workload, config_map_name(workload, mount), extra={RESTART_ANNOTATION: restart_hash}
    )
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


def tls_secret_name(workload: Workload) -> str:
    """The Secret cert-manager writes (tls.crt, tls.key, ca.crt), mounted at {config_dir}/tls."""
    return f"{workload.service}-mesh-tls"


def certificate(mesh: Mesh, workload: Workload) -> dict[str, Any]:
    """A cert-manager Certificate whose only URI SAN is the workload's SPIFFE identity (an X.509-SVID)."""
    issuer = mesh.issuer
    spec = {
        "secretName": tls_secret_name(workload),
        "secretTemplate": {"labels": labels(mesh, workload.service)},
        "issuerRef": {"group": "cert-manager.io", "kind": issuer.kind, "name": issuer.name},
        "duration": issuer.duration,
        "renewBefore": issuer.renew_before,
        "uris": [workload.identity],
        # ECDSA keys sign, they do not encipher; the same certificate serves and dials (mTLS).
        "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
        "usages": ["digital signature", "server auth", "client auth"],
    }
    return {
        "apiVersion": "cert-manager.io/v1",
        "kind": "Certificate",
        "metadata": metadata(mesh, workload, tls_secret_name(workload)),
        "spec": spec,
    }


def service(mesh: Mesh, workload: Workload) -> dict[str, Any]:
    """A headless Service on mesh_port: Synapse reads its Endpoints and Envoy dials pod IPs, so no VIP is needed."""
    port = workload.ingress.mesh_port
    spec = {
        "clusterIP": "None",
        "selector": {NAME_LABEL: workload.service},
        "ports": [{"name": "mesh", "protocol": "TCP", "port": port, "targetPort": port}],
    }
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(mesh, workload, workload.service),
        "spec": spec,
    }


def network_policy(
    mesh: Mesh, workload: Workload, clients: Sequence[Workload], cidrs: Sequence[str]
) -> dict[str, Any]:
    """Admit mesh_port only from declared clients' pods in this cluster and the off-cluster ranges."""
    peers: list[dict[str, Any]] = [
        {
            "namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: c.namespace}},
            "podSelector": {"matchLabels": {NAME_LABEL: c.service}},
        }
        for c in sorted(clients, key=lambda c: (c.namespace, c.service))
    ]
    peers += [{"ipBlock": {"cidr": cidr}} for cidr in cidrs]
    port = {"protocol": "TCP", "port": workload.ingress.mesh_port}
    # A rule with no `from` admits everyone, so no peers means no rule at all: deny every source.
    rules = [{"from": peers, "ports": [port]}] if peers else []
    spec = {
        "podSelector": {"matchLabels": {NAME_LABEL: workload.service}},
        "policyTypes": ["Ingress"],
        "ingress": rules,
    }
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(mesh, workload, f"{workload.service}-mesh"),
        "spec": spec,
    }


# ---------------------------------------------------------------- helpers


def _workloads_by_cluster_service(workloads: Sequence[Workload]) -> dict[tuple[str, str], list[Workload]]:
    found: dict[tuple[str, str], list[Workload]] = defaultdict(list)
    for workload in workloads:
        found[(workload.cluster or "", workload.service)].append(workload)
    return found


def _file(
    mesh: Mesh,
    cluster: str,
    path: str,
    objects: Sequence[dict[str, Any]],
    target: str | None,
    memo: Memo,
    values: bool = True,
) -> Artifact:
    """One file: its objects in APPLY_ORDER (a stable sort: same-kind objects keep their order), each one document;
    its value is the tuple of the objects."""
    ordered = tuple(
        sorted(
            (
                obj
                if OWNER_ANNOTATION in obj["metadata"].get("annotations", {})
                else owned(mesh, cluster, obj)
                for obj in objects
            ),
            key=lambda obj: _RANK[obj["kind"]],
        )
    )
    return Artifact(
        path=path,
        data=b"".join(DOCUMENT_START + _yaml(obj, memo) for obj in ordered),
        target=target,
        value=ordered if values else None,
    )


def _json_text(document: Any) -> str:
    return dump_json(document).decode()


def _yaml(obj: Mapping[str, Any], memo: Memo) -> bytes:
    """dump_yaml(obj), reusing the YAML of each ConfigMap data entry (a shared document's text) seen before.

    A ConfigMap's bytes are dump_yaml of its head plus those entries, which is exactly dump_yaml
    of the whole object, since dump_yaml emits top-level keys one after the other.
    """
    data = obj.get("data") if obj["kind"] == "ConfigMap" else None
    if not data:
        return dump_yaml(obj)
    head = dump_yaml({key: value for key, value in obj.items() if key != "data"})
    return (
        head
        + b"data:\n"
        + b"".join(memo.once(("entry", key, id(text)), _data_entry, key, text) for key, text in data.items())
    )


def _data_entry(key: str, text: str) -> bytes:
    return dump_yaml({"data": {key: text}}).removeprefix(b"data:\n")


def _unmounted(workload: Workload, texts: Mapping[str, str]) -> Iterator[Diagnostic]:
    """A document outside the mounted directories would silently never reach the pod."""
    for name in sorted(texts):
        if name.split("/", 1)[0] not in CONFIG_MOUNTS:
            yield Diagnostic(
                span=workload.span,
                code="internal",
                message=f"{workload.id}: sidecar document {name!r} is in no directory mounted in pods {CONFIG_MOUNTS}",
            )


def _size_problems(workload: Workload, objects: Sequence[Mapping[str, Any]]) -> Iterator[Diagnostic]:
    for obj in objects:
        if obj["kind"] != "ConfigMap":  # only the sidecar documents grow with the mesh
            continue
        size = len(orjson.dumps(obj))  # compact JSON, as kubectl stores it in the annotation
        if size > MAX_APPLIED_BYTES:
            yield Diagnostic(
                span=workload.span,
                code="object-too-large",
                message=(
                    f"{workload.id}: {obj['kind']} {obj['metadata']['name']} is {size} bytes, over the {MAX_APPLIED_BYTES} "
                    "that `kubectl apply` can record in its last-applied annotation; split the service's dependencies"
                ),
            )
