"""Where kube-applier finds each object meshc writes, and in which order it applies them.

One multi-document YAML file (each document opened by `---`) per unit of rollout:

    kubernetes/<cluster>/00-cluster.yaml              every Namespace, then the discovery ClusterRole
    kubernetes/<cluster>/<ns>/<service>.yaml          one workload (target `k8s/<cluster>/<ns>/<service>`)
    kubernetes/<cluster>/meshc-discovery/<service>.yaml   one external reader (its pseudo-target)

kube-applier runs one `kubectl apply -f` per file, in `sort.Strings` order of the paths, and never
prunes. `00-` sorts before every namespace directory (namespace names start with a letter), so
the Namespaces and the ClusterRole exist before any file that needs them: a workload's
RoleBindings live in its dependencies' namespaces, not only its own. Inside a file the objects
come in APPLY_ORDER (ServiceAccount, its token Secret, RoleBindings, ConfigMaps, Certificate,
Service, NetworkPolicy), which `kubectl apply -f` follows. One file per workload, not per object:
kube-applier starts one process per file, and the kernel's cost of creating a file dominated
large builds. The cluster file has target None (it changes only when a namespace or cluster
appears or disappears); a rollout build writes it from the union of the Namespaces of every live
revision (cluster_file), so a namespace only an older wave still uses stays.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from compiler.backends.kubernetes.objects import NAME_LABEL, WORKLOAD_ANNOTATION
from compiler.emit import Artifact, dump_yaml, literal_entry
from compiler.ir.model import Mesh
from compiler.memo import Memo

ROOT = "kubernetes"


# Proof of ownership for drift: `<mesh>/<cluster>/<kind>/<namespace or _>/<name>`. A label is no proof
# (cert-manager copies ours onto its Secrets through secretTemplate; EndpointSlices copy a Service's),
# while this value names the object it sits on, so a copy elsewhere does not match its carrier.
OWNER_ANNOTATION = "meshc.io/owner"


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
DOCUMENT_START = b"---\n"


def cluster_path(cluster: str) -> str:
    """The file of a cluster's cluster-scoped objects, Namespaces included: kubernetes/<cluster>/00-cluster.yaml."""
    return f"{ROOT}/{cluster}/{CLUSTER_FILE}"


def unit_path(target: str) -> str:
    """The file of a workload or external reader `k8s/<cluster>/<namespace>/<service>`:
    kubernetes/<cluster>/<namespace>/<service>.yaml."""
    _, cluster, namespace, service = target.split("/")
    return f"{ROOT}/{cluster}/{namespace}/{service}.yaml"


def unit_target(path: str) -> str | None:
    """The workload or external reader whose file `path` is (`unit_path` backwards); None for any other path."""
    parts = path.split("/")
    if len(parts) != 4 or parts[0] != ROOT or not parts[3].endswith(".yaml"):
        return None
    return f"k8s/{parts[1]}/{parts[2]}/{parts[3].removesuffix('.yaml')}"


def object_path(cluster: str, obj: Mapping[str, Any]) -> str:
    """The file meshc writes an object into: found from the object alone (for objects no longer rendered, too).

    A namespaced object is in the file of the workload or reader its `meshc.dev/workload` annotation
    names; one without a usable annotation is placed in its namespace as its service's (or its own) file.
    """
    meta = obj["metadata"]
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


def object_file(
    mesh: Mesh,
    cluster: str,
    path: str,
    objects: Sequence[dict[str, Any]],
    target: str | None,
    memo: Memo,
    values: bool = True,
) -> Artifact:
    """One file: its objects in APPLY_ORDER (a stable sort: same-kind objects keep their order), each one document.

    With `values`, its value is the tuple of the objects."""
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
    fast = literal_entry(key, text, 2)
    return fast if fast is not None else dump_yaml({"data": {key: text}}).removeprefix(b"data:\n")
