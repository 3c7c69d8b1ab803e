"""Kubernetes objects left behind: what the base applied and the head no longer writes, which kube-applier never
deletes, in the order to delete them by hand."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from compiler.backends.kubernetes.layout import ROOT as KUBERNETES_ROOT
from compiler.backends.kubernetes.layout import kind_rank
from compiler.diagnostics import InternalError
from compiler.diff.files import OutputFile
from compiler.diff.records import KubeDelete

KubeKey = tuple[str | None, str, str, str | None, str]


def kube_deletions(old: Sequence[OutputFile], new: Sequence[OutputFile]) -> tuple[KubeDelete, ...]:
    """The Kubernetes objects of `old` that `new` no longer writes, in the order to delete them by hand.

    kube-applier applies a cluster's files sorted by path, each file's documents in order, and never
    deletes; deleting in the reverse order removes bindings before what they bind and a Namespace
    after its contents. An object is kept when the head still writes it (API group, kind, namespace,
    name) in any file of its cluster. Only files whose bytes differ are looked into: a file both
    builds write alike holds the same objects on both sides, and an object lives in one file only.
    """
    before, after = {a.path: a for a in old}, {a.path: a for a in new}
    deletions = KubeDeletions()
    for path in before.keys() | after.keys():
        deletions.add(before.get(path), after.get(path))
    return deletions.ordered()


class KubeDeletions:
    """`kube_deletions` fed one path's two versions at a time, so a diff that streams its files holds no file
    twice: what it keeps is each changed file's object keys and the base's candidate deletions."""

    def __init__(self) -> None:
        self.kept: set[KubeKey] = set()
        self.gone: list[tuple[KubeKey, KubeDelete]] = []

    def add(self, old: OutputFile | None, new: OutputFile | None) -> None:
        """One path's file at the base and at the head (None: absent there)."""
        if old is not None and new is not None and old.digest == new.digest:
            return
        if new is not None and cluster_of(new.path):
            self.kept.update(_kube_key(new.path, obj) for obj in kube_objects(new))
        if old is not None and (cluster := cluster_of(old.path)):
            self.gone.extend(
                (_kube_key(old.path, obj), _delete(cluster, old.path, obj)) for obj in kube_objects(old)
            )

    def ordered(self) -> tuple[KubeDelete, ...]:
        """The base's objects the head no longer writes, cluster by cluster, each in reverse apply order."""
        gone: dict[str, list[KubeDelete]] = {}
        for key, delete in self.gone:
            if key not in self.kept:
                gone.setdefault(delete.cluster, []).append(delete)
        return tuple(
            d
            for cluster in sorted(gone)
            for d in sorted(
                gone[cluster],
                key=lambda d: (d.file, kind_rank(d.kind), d.namespace or "", d.name),
                reverse=True,
            )
        )


def file_keys(file: OutputFile) -> frozenset[KubeKey]:
    """The objects one Kubernetes output file holds, by (cluster, API group, kind, namespace, name)."""
    return frozenset(_kube_key(file.path, obj) for obj in kube_objects(file))


def kube_objects(file: OutputFile) -> list[Mapping[str, Any]]:
    """The Kubernetes objects one output file holds: its documents with a kind and a metadata name (and a
    namespace, if any, that is a string); other documents are skipped."""
    value = file.value
    if value is None:
        raise InternalError(f"{file.path}: a Kubernetes file was rendered without its objects")
    documents = value if isinstance(value, (tuple, list)) else (value,)
    return [
        d
        for d in documents
        if isinstance(d, dict)
        and isinstance(d.get("kind"), str)
        and isinstance(d.get("metadata"), dict)
        and isinstance(d["metadata"].get("name"), str)
        and isinstance(d["metadata"].get("namespace", ""), str)
    ]


def cluster_of(path: str) -> str | None:
    """The cluster of a Kubernetes output file (`kubernetes/<cluster>/…yaml`); None for any other path."""
    parts = path.split("/")
    return (
        parts[1] if len(parts) >= 3 and parts[0] == KUBERNETES_ROOT and parts[-1].endswith(".yaml") else None
    )


def delete_key(delete: KubeDelete) -> KubeKey:
    """A deletion's object as `_kube_key` names it: the same object whatever build or file listed it."""
    return (
        delete.cluster,
        delete.api_version.rpartition("/")[0],
        delete.kind,
        delete.namespace,
        delete.name,
    )


def _kube_key(path: str, obj: Mapping[str, Any]) -> KubeKey:
    """(cluster, API group, kind, namespace, name): an object whatever file or API version holds it."""
    meta = obj["metadata"]
    return (
        cluster_of(path),
        str(obj.get("apiVersion", "v1")).rpartition("/")[0],
        obj["kind"],
        meta.get("namespace"),
        meta["name"],
    )


def _delete(cluster: str, path: str, obj: Mapping[str, Any]) -> KubeDelete:
    meta = obj["metadata"]
    return KubeDelete(
        cluster=cluster,
        api_version=str(obj.get("apiVersion", "v1")),
        kind=obj["kind"],
        namespace=meta.get("namespace"),
        name=meta["name"],
        file=path,
        cascades=obj["kind"] == "Namespace",
    )
