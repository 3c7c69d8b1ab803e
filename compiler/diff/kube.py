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
    before = {a.path: a for a in old if _cluster_of(a.path)}
    after = {a.path: a for a in new if _cluster_of(a.path)}
    kept = {
        _kube_key(path, obj)
        for path, file in after.items()
        if not _same(before.get(path), file)
        for obj in kube_objects(file)
    }
    gone: dict[str, list[KubeDelete]] = {}
    for path, file in before.items():
        if _same(after.get(path), file):
            continue
        cluster = _cluster_of(path) or ""
        gone.setdefault(cluster, []).extend(
            _delete(cluster, path, obj) for obj in kube_objects(file) if _kube_key(path, obj) not in kept
        )
    return tuple(
        d
        for cluster in sorted(gone)
        for d in sorted(
            gone[cluster], key=lambda d: (d.file, kind_rank(d.kind), d.namespace or "", d.name), reverse=True
        )
    )


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


def _same(other: OutputFile | None, file: OutputFile) -> bool:
    return other is not None and other.digest == file.digest


def _cluster_of(path: str) -> str | None:
    parts = path.split("/")
    return (
        parts[1] if len(parts) >= 3 and parts[0] == KUBERNETES_ROOT and parts[-1].endswith(".yaml") else None
    )


def _kube_key(path: str, obj: Mapping[str, Any]) -> KubeKey:
    """(cluster, API group, kind, namespace, name): an object whatever file or API version holds it."""
    meta = obj["metadata"]
    return (
        _cluster_of(path),
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
