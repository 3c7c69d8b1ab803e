"""Target by target: which sidecar documents and output files of each workload change, and what that costs."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from compiler.diff.files import OutputFile, diff_output_file, output_file
from compiler.diff.kube import KubeDeletions
from compiler.diff.records import ADDED, CHANGED, REMOVED, Change, DocumentDiff, KubeDelete, TargetDiff
from compiler.diff.values import diff_values
from compiler.ir.model import Mesh, Workload
from compiler.output.manifest import MANIFEST
from compiler.pipeline import Build
from compiler.render import SidecarConfig
from compiler.render.restart import RestartClass, classify, new_credentials
from compiler.render.restart import changes as restart_costs
from compiler.spec.model import Spec


@dataclass(frozen=True, kw_only=True, slots=True)
class Compiled:
    """A build as a diff keeps it: its spec, IR and sidecar documents, and its output files without the bytes of
    those that hold data (see OutputFile). `files` may stream (a generator, read once by `diff_files`)."""

    spec: Spec
    mesh: Mesh
    sidecars: Mapping[str, SidecarConfig]
    files: Iterable[OutputFile]


@dataclass(frozen=True, kw_only=True, slots=True)
class FileChanges:
    """Two builds' output files compared path by path: the changed files of each target (None: shared files),
    sorted by path, the targets that have files on each side, and the Kubernetes objects left behind."""

    by_target: Mapping[str | None, tuple[DocumentDiff, ...]]
    old_targets: frozenset[str | None]
    new_targets: frozenset[str | None]
    deletions: tuple[KubeDelete, ...]


def compiled(build: Build) -> Compiled:
    """What a diff keeps of a build (MANIFEST.json aside: it lists the files a diff compares one by one)."""
    files = tuple(output_file(a) for a in build.artifacts if a.path != MANIFEST)
    return Compiled(spec=build.spec, mesh=build.mesh, sidecars=build.sidecars, files=files)


def diff_files(old: Iterable[OutputFile], new: Iterable[OutputFile]) -> FileChanges:
    """Compare two builds' files as they stream, each pair as soon as both sides have yielded its path.

    Both builds lay out their files in the same order, so few wait for their other half: a diff of
    two streamed builds holds neither build's files whole.
    """
    diffs: dict[str | None, list[DocumentDiff]] = {}
    old_targets: set[str | None] = set()
    new_targets: set[str | None] = set()
    deletions = KubeDeletions()
    waiting: tuple[dict[str, OutputFile], dict[str, OutputFile]] = ({}, {})

    def pair(before: OutputFile | None, after: OutputFile | None) -> None:
        deletions.add(before, after)
        for target, found in _file_changes(before, after):
            diffs.setdefault(target, []).append(found)

    streams = [(0, iter(old)), (1, iter(new))]
    while streams:
        for side, stream in list(streams):
            file = next(stream, None)
            if file is None:
                streams.remove((side, stream))
                continue
            (old_targets, new_targets)[side].add(file.target)
            other = waiting[1 - side].pop(file.path, None)
            if other is None:
                waiting[side][file.path] = file
            else:
                pair(*((file, other) if side == 0 else (other, file)))
    for path in sorted(waiting[0].keys() | waiting[1].keys()):
        pair(waiting[0].get(path), waiting[1].get(path))
    return FileChanges(
        by_target={t: tuple(sorted(found, key=lambda d: d.name)) for t, found in diffs.items()},
        old_targets=frozenset(old_targets),
        new_targets=frozenset(new_targets),
        deletions=deletions.ordered(),
    )


def _file_changes(
    old: OutputFile | None, new: OutputFile | None
) -> Iterator[tuple[str | None, DocumentDiff]]:
    """One path's change, by target: a file that moves between targets is removed from one and added to the other."""
    if old is not None and new is not None and old.target == new.target:
        if old.digest != new.digest:
            yield new.target, diff_output_file(old, new)
        return
    if old is not None:
        yield old.target, DocumentDiff(name=old.path, status=REMOVED)
    if new is not None:
        yield new.target, DocumentDiff(name=new.path, status=ADDED)


def diff_targets(
    old: Compiled | None, new: Compiled, files: FileChanges
) -> tuple[tuple[TargetDiff, ...], tuple[DocumentDiff, ...]]:
    """Every target whose documents or files change (by target id), and the changed files of no single target."""
    old_docs, new_docs = _documents(old), _documents(new)
    workloads = {w.id: w for w in (old.mesh.workloads if old else ())} | {w.id: w for w in new.mesh.workloads}
    datacenters = {
        name: c.datacenter
        for name, c in (*(old.mesh.clusters.items() if old else ()), *new.mesh.clusters.items())
    }
    ids = sorted(
        target
        for target in {*files.old_targets, *files.new_targets, *old_docs, *new_docs, *workloads}
        if target is not None  # the files of no single target are `shared`
    )
    targets = []
    for target in ids:
        found = _target(
            target,
            _placement(target, workloads.get(target), datacenters),
            old_docs.get(target),
            new_docs.get(target),
            (target in files.old_targets, target in files.new_targets),
            files.by_target.get(target, ()),
        )
        if found is not None:
            targets.append(found)
    return tuple(targets), files.by_target.get(None, ())


def _documents(build: Compiled | None) -> dict[str, Mapping[str, Any]]:
    return {wid: config.documents for wid, config in build.sidecars.items()} if build else {}


def _target(
    target: str,
    placement: Mapping[str, Any],
    old_docs: Mapping[str, Any] | None,
    new_docs: Mapping[str, Any] | None,
    has_files: tuple[bool, bool],
    file_diffs: tuple[DocumentDiff, ...],
) -> TargetDiff | None:
    existed, exists = old_docs is not None or has_files[0], new_docs is not None or has_files[1]
    status = CHANGED if existed and exists else (ADDED if exists else REMOVED)
    # A target that starts or stops restarts nothing that runs: its documents cost nothing either.
    documents = _document_diffs(old_docs or {}, new_docs or {}, priced=status == CHANGED)
    files = _without_mirrors(file_diffs, documents)
    if not documents and not files and existed == exists:
        return None
    credentials = new_credentials(old_docs, new_docs)
    restart = classify(old_docs, new_docs) if status == CHANGED else RestartClass.NONE
    if status == CHANGED and credentials and placement["platform"] == "kubernetes":
        restart = RestartClass.POD_ROLL  # a new credentials volume changes the pod template
    return TargetDiff(
        target=target,
        status=status,
        restart=restart,
        credentials=credentials,
        documents=documents,
        files=files,
        **placement,
    )


def _placement(target: str, workload: Workload | None, datacenters: Mapping[str, str]) -> dict[str, Any]:
    """Where a target lives; a target that is no workload (an external discovery reader's
    `k8s/<cluster>/<namespace>/<service>`) is placed by its id, in its cluster's datacenter."""
    if workload is not None:
        return {
            "service": workload.service,
            "platform": workload.platform,
            "datacenter": workload.datacenter,
            "cluster": workload.cluster,
            "namespace": workload.namespace,
            "restart_sensitive": workload.restart_sensitive,
        }
    parts = target.split("/")
    if len(parts) == 4 and parts[0] == "k8s":
        return {
            "service": parts[3],
            "platform": "kubernetes",
            "datacenter": datacenters.get(parts[1], "?"),
            "cluster": parts[1],
            "namespace": parts[2],
        }
    return {"service": parts[-1], "platform": parts[0], "datacenter": "?", "cluster": None, "namespace": "?"}


def _document_diffs(
    old: Mapping[str, Any], new: Mapping[str, Any], priced: bool = True
) -> tuple[DocumentDiff, ...]:
    diffs = []
    # per document: a Synapse `services` change alone is a hot reload
    costs = restart_costs(old, new) if priced else {}
    for name in sorted(set(old) | set(new)):
        restart = costs.get(name, RestartClass.NONE)
        if name not in new:
            diffs.append(DocumentDiff(name=name, status=REMOVED, restart=restart))
        elif name not in old:
            diffs.append(DocumentDiff(name=name, status=ADDED, restart=restart))
        elif old[name] != new[name]:
            diffs.append(
                DocumentDiff(
                    name=name, status=CHANGED, restart=restart, changes=diff_values(old[name], new[name])
                )
            )
    return tuple(diffs)


def _without_mirrors(
    files: tuple[DocumentDiff, ...], documents: tuple[DocumentDiff, ...]
) -> tuple[DocumentDiff, ...]:
    """Drop file changes that repeat a sidecar document change (a ConfigMap or hiera key holding the document)."""
    seen: dict[tuple[str, str, str], list[str]] = {}
    for doc in documents:
        for change in doc.changes:
            seen.setdefault(_signature(change), []).append(change.path)
    if not seen:
        return files
    result = []
    for file in files:
        kept = [c for c in file.changes if not _mirrors(c, seen.get(_signature(c), ()))]
        result.append(
            replace(file, changes=tuple(kept), mirrored=len(file.changes) - len(kept))
            if len(kept) < len(file.changes)
            else file
        )
    return tuple(result)


def _signature(change: Change) -> tuple[str, str, str]:
    return change.kind, json.dumps(change.old, sort_keys=True), json.dumps(change.new, sort_keys=True)


def _mirrors(change: Change, paths: Sequence[str]) -> bool:
    return any(
        change.path.endswith(path) and change.path[-len(path) - 1] in ".]"
        for path in paths
        if len(change.path) > len(path)
    )
