"""Target by target: which sidecar documents and output files of each workload change, and what that costs."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from compiler.diff.files import OutputFile, diff_output_file, output_file
from compiler.diff.records import ADDED, CHANGED, REMOVED, Change, DocumentDiff, TargetDiff
from compiler.diff.values import diff_values
from compiler.ir.model import Mesh, Workload
from compiler.output.manifest import MANIFEST
from compiler.pipeline import Build
from compiler.render import SidecarConfig
from compiler.render.restart import RestartClass, classify, new_credentials
from compiler.render.restart import changes as restart_costs
from compiler.spec.model import Spec

Files = Mapping[str, OutputFile]  # a target's output files by path


@dataclass(frozen=True, kw_only=True, slots=True)
class Compiled:
    """A build as a diff keeps it: its spec, IR and sidecar documents, and its output files without the bytes of
    those that hold data (see OutputFile)."""

    spec: Spec
    mesh: Mesh
    sidecars: Mapping[str, SidecarConfig]
    files: tuple[OutputFile, ...]


def compiled(build: Build) -> Compiled:
    """What a diff keeps of a build (MANIFEST.json aside: it lists the files a diff compares one by one)."""
    files = tuple(output_file(a) for a in build.artifacts if a.path != MANIFEST)
    return Compiled(spec=build.spec, mesh=build.mesh, sidecars=build.sidecars, files=files)


def diff_targets(
    old: Compiled | None, new: Compiled
) -> tuple[tuple[TargetDiff, ...], tuple[DocumentDiff, ...]]:
    """Every target whose documents or files change (by target id), and the changed files of no single target."""
    old_files, new_files = _files_by_target(old.files if old else ()), _files_by_target(new.files)
    old_docs, new_docs = _documents(old), _documents(new)
    workloads = {w.id: w for w in (old.mesh.workloads if old else ())} | {w.id: w for w in new.mesh.workloads}
    datacenters = {
        name: c.datacenter
        for name, c in (*(old.mesh.clusters.items() if old else ()), *new.mesh.clusters.items())
    }
    ids = sorted(
        target
        for target in {*old_files, *new_files, *old_docs, *new_docs, *workloads}
        if target is not None  # the files of no single target are `shared`
    )
    targets = []
    for target in ids:
        found = _target(
            target,
            _placement(target, workloads.get(target), datacenters),
            old_docs.get(target),
            new_docs.get(target),
            old_files.get(target),
            new_files.get(target),
        )
        if found is not None:
            targets.append(found)
    return tuple(targets), _file_diffs(old_files.get(None, {}), new_files.get(None, {}))


def _files_by_target(files: Sequence[OutputFile]) -> dict[str | None, dict[str, OutputFile]]:
    found: dict[str | None, dict[str, OutputFile]] = {}
    for file in files:
        found.setdefault(file.target, {})[file.path] = file
    return found


def _documents(build: Compiled | None) -> dict[str, Mapping[str, Any]]:
    return {wid: config.documents for wid, config in build.sidecars.items()} if build else {}


def _target(
    target: str,
    placement: Mapping[str, Any],
    old_docs: Mapping[str, Any] | None,
    new_docs: Mapping[str, Any] | None,
    old_files: Files | None,
    new_files: Files | None,
) -> TargetDiff | None:
    existed, exists = (
        old_docs is not None or old_files is not None,
        new_docs is not None or new_files is not None,
    )
    status = CHANGED if existed and exists else (ADDED if exists else REMOVED)
    # A target that starts or stops restarts nothing that runs: its documents cost nothing either.
    documents = _document_diffs(old_docs or {}, new_docs or {}, priced=status == CHANGED)
    files = _without_mirrors(_file_diffs(old_files or {}, new_files or {}), documents)
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


def _file_diffs(old: Files, new: Files) -> tuple[DocumentDiff, ...]:
    diffs = []
    for path in sorted(set(old) | set(new)):
        if path not in new:
            diffs.append(DocumentDiff(name=path, status=REMOVED))
        elif path not in old:
            diffs.append(DocumentDiff(name=path, status=ADDED))
        elif old[path].digest != new[path].digest:
            diffs.append(diff_output_file(old[path], new[path]))
    return tuple(diffs)
