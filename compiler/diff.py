"""Semantic diff of two builds: which spec files, targets, documents and files change, and what it costs.

Results are frozen records; compiler/commands/diff_report.py, diff_text.py and diff_markdown.py format
them. The value differ is generic over dict/list/scalar data: mappings by key, lists of named things by
their name (so inserting one cluster does not shift every later one), other lists of unique scalars as
sets, the rest by index.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import compress
from pathlib import Path, PurePosixPath
from typing import Any

import orjson
import yaml

from compiler.backends.kubernetes.layout import ROOT as KUBERNETES_ROOT
from compiler.backends.kubernetes.layout import kind_rank
from compiler.diagnostics import Diagnostic, SpecError, at_revision
from compiler.emit import (
    LOCK_TIMEOUT,
    MANIFEST,
    REGULAR,
    Artifact,
    TreeStatus,
    compare_tree,
    kind_of,
    output_lock,
    read_regular,
)
from compiler.gitsource import SpecDirMissing, SpecLocation, locate, read_revision, read_worktree
from compiler.graph.calls import CallChange, diff_calls
from compiler.ir.model import Workload
from compiler.pipeline import Build, compile
from compiler.render.restart import Credentials, RestartClass, classify, new_credentials
from compiler.render.restart import changes as restart_costs
from compiler.spec.load import MESH_FILE, SpecFiles
from compiler.spec.model import Spec

ADDED, REMOVED, CHANGED = "added", "removed", "changed"
MAX_TEXT_LINES = 400  # a changed text file's unified diff is cut after this many lines
# `check` shows what differs only for files up to this size (meshc's are far smaller)
MAX_COMPARED_BYTES = 16 << 20

_IDENT = re.compile(r"[A-Za-z_@$][\w@$-]*")
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# ---------------------------------------------------------------- records


@dataclass(frozen=True, kw_only=True, slots=True)
class Change:
    """One semantic difference: the value at `path` was added, removed or changed."""

    path: str
    kind: str
    old: Any = None
    new: Any = None


@dataclass(frozen=True, kw_only=True, slots=True)
class SpecFileDiff:
    """A spec file whose data changed; `service` is None for mesh.yaml."""

    file: str
    service: str | None
    status: str
    changes: tuple[Change, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class DocumentDiff:
    """A changed sidecar document (by document name) or output file (by path under output/)."""

    name: str
    status: str
    restart: RestartClass = RestartClass.NONE
    changes: tuple[Change, ...] = ()
    text: tuple[str, ...] = ()  # unified diff lines, for files that are neither JSON nor YAML
    mirrored: int = (
        0  # changes left out of a file's list because they repeat its target's sidecar document changes
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class TargetDiff:
    """One target (workload) whose sidecar documents or output files change, and what that costs.

    A target that appears or disappears restarts nothing that runs (`restart` NONE): it is new or removed.
    """

    target: str
    service: str
    platform: str
    datacenter: str
    cluster: str | None
    namespace: str
    status: str
    restart: RestartClass
    restart_sensitive: bool = False  # the service's `restart_sensitive`
    # clusters it newly watches: the platform must deliver their credentials
    credentials: tuple[Credentials, ...] = ()
    documents: tuple[DocumentDiff, ...] = ()
    files: tuple[DocumentDiff, ...] = ()

    @property
    def needs_restart(self) -> bool:
        return self.restart >= RestartClass.SIDECAR_RESTART

    @property
    def sensitive_restart(self) -> bool:
        """Does the change restart a sidecar (or roll the pods) of a restart-sensitive service?"""
        return self.restart_sensitive and self.needs_restart


@dataclass(frozen=True, kw_only=True, slots=True)
class Group:
    """The changed targets of one platform in one datacenter, counted by restart class."""

    platform: str
    datacenter: str
    targets: tuple[str, ...]
    added: int  # new targets: they start, nothing restarts
    removed: int
    no_restart: int  # the rest count changed targets by their restart class
    hot_reload: int
    sidecar_restart: int
    envoy_restart: int
    pod_roll: int


@dataclass(frozen=True, kw_only=True, slots=True)
class KubeDelete:
    """A Kubernetes object the base applied and the head no longer writes: kube-applier never deletes
    it, so someone must. `cascades` marks a Namespace, whose deletion takes everything still in it."""

    cluster: str
    api_version: str
    kind: str
    namespace: str | None
    name: str
    file: str  # the removed file, under output/
    cascades: bool = False

    @property
    def resource(self) -> str:
        """`kind.group/name`, as kubectl names it unambiguously.

        `configmap/x`, `rolebinding.rbac.authorization.k8s.io/x`."""
        group = self.api_version.rpartition("/")[0]
        return f"{self.kind.lower()}{'.' + group if group else ''}/{self.name}"

    @property
    def command(self) -> str:
        """The kubectl command that deletes it, in the cluster's context (contexts named after mesh.yaml's clusters)."""
        namespace = f" -n {self.namespace}" if self.namespace else ""
        return f"kubectl --context {self.cluster} delete{namespace} {self.resource}"


@dataclass(frozen=True, kw_only=True, slots=True)
class WaveSplit:
    """The changed targets of one wave of the head's wave policy."""

    wave: str
    targets: tuple[str, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class MeshDiff:
    """Everything that changes between a base and a head build."""

    base: str
    head: str
    notes: tuple[str, ...] = ()
    base_diagnostics: tuple[Diagnostic, ...] = ()
    spec: tuple[SpecFileDiff, ...] = ()
    reformatted: tuple[str, ...] = ()  # spec files whose bytes changed but whose data did not
    targets: tuple[TargetDiff, ...] = ()
    groups: tuple[Group, ...] = ()
    shared: tuple[DocumentDiff, ...] = ()  # output files that belong to no single target
    deletions: tuple[KubeDelete, ...] = ()  # in the order to run them: the reverse of kube-applier's
    # call-graph edges added, removed or re-policied (compiler.graph.calls)
    calls: tuple[CallChange, ...] = ()
    waves: tuple[WaveSplit, ...] = ()  # changed targets by wave, in rollout order (the head's wave policy)
    # "active": rollout.yaml pins the later waves, so only the first wave changes now; "hold"; "none"
    rollout: str = "none"

    @property
    def restarts(self) -> int:
        """How many targets need a process restart (sidecar or Envoy) or a pod roll, not just a hot reload."""
        return sum(t.needs_restart for t in self.targets)

    @property
    def sensitive_services(self) -> tuple[str, ...]:
        """Restart-sensitive services with at least one target that restarts, sorted."""
        return tuple(sorted({t.service for t in self.targets if t.sensitive_restart}))

    @property
    def changed(self) -> bool:
        """Does any output change?"""
        return bool(self.targets or self.shared)


# ---------------------------------------------------------------- entry points

WORKING_TREE = "working tree"


def diff_revisions(spec_dir: Path, base: str, head: str | None = None) -> MeshDiff:
    """Diff the spec at git revision `base` against `head` (None: the working tree, uncommitted edits included).

    Revisions are read from git objects; the working tree, index and HEAD are never touched.
    Raises RevisionError for an unknown revision, SpecError (files named `REV:path`) for an invalid head.
    """
    location = locate(spec_dir)
    label = spec_dir.as_posix().rstrip("/") or "."
    try:
        head_files = read_worktree(spec_dir) if head is None else read_revision(location, head)
        base_files = _read_base(location, base)
    finally:
        location.repo.close()  # stop GitPython's `git cat-file` helpers now, not at garbage collection
    try:
        result = diff_specs(base_files, head_files, base=base, head=head or WORKING_TREE, label=label)
    except SpecError as exc:
        raise SpecError(at_revision(exc.diagnostics, head)) from None
    return replace(
        result,
        base_diagnostics=at_revision(result.base_diagnostics, base),
        rollout=_rollout_mode(spec_dir) if result.waves else "none",
    )


def _rollout_mode(spec_dir: Path) -> str:
    """Is a rollout in force in the spec directory: "active", "hold", or "none" (no rollout.yaml)?"""
    from compiler.rollout.pins import ROLLOUT_FILE, load_rollout

    try:
        rollout = load_rollout(spec_dir / ROLLOUT_FILE, ROLLOUT_FILE)
    except SpecError:
        return "active"  # a broken rollout.yaml fails the build; for the review, assume the pins hold
    return "none" if rollout is None else "hold" if rollout.hold else "active"


def _read_base(location: SpecLocation, base: str) -> SpecFiles | None:
    """The spec at the base, or None when the revision exists but has no spec directory yet."""
    try:
        return read_revision(location, base)
    except SpecDirMissing:
        return None


def diff_specs(
    base_files: SpecFiles | None, head_files: SpecFiles, *, base: str, head: str, label: str
) -> MeshDiff:
    """Compile both spec trees and diff them; an invalid or absent (None) base is diffed as empty, with a note.

    Both sides are compiled under the same `label`, so nothing that names the spec directory can
    differ. An invalid head raises SpecError: there is nothing to review until it is fixed.
    """
    new = compile(head_files, label)
    notes: list[str] = []
    diagnostics: tuple[Diagnostic, ...] = ()
    old = None
    if base_files is None:
        notes.append(f"there is no spec at {base}; the diff treats the base as empty, so every target is new")
    else:
        try:
            old = compile(base_files, label)
        except SpecError as exc:
            diagnostics = exc.diagnostics
            notes.append(
                f"the spec at {base} is invalid ({len(diagnostics)} error(s), listed below); "
                "the diff treats the base as empty, so every target is new"
            )
    result = diff_builds(old, new, base=base, head=head, notes=tuple(notes))
    reformatted = _reformatted(base_files or {}, head_files, old, new)
    return replace(result, base_diagnostics=diagnostics, reformatted=reformatted)


def diff_builds(
    old: Build | None, new: Build, *, base: str = "base", head: str = "head", notes: tuple[str, ...] = ()
) -> MeshDiff:
    """Diff two builds (None: nothing at the base) spec file by spec file and target by target."""
    old_files, new_files = _files_by_target(old.artifacts if old else ()), _files_by_target(new.artifacts)
    old_docs, new_docs = _documents(old), _documents(new)
    workloads = {w.id: w for w in (old.mesh.workloads if old else ())} | {w.id: w for w in new.mesh.workloads}
    datacenters = {
        name: c.datacenter
        for name, c in (*(old.mesh.clusters.items() if old else ()), *new.mesh.clusters.items())
    }
    # Files of no target (the None key) are the shared files, diffed apart below.
    keys = set(old_files) | set(new_files) | set(old_docs) | set(new_docs) | set(workloads)
    ids = sorted(key for key in keys if key is not None)
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
    return MeshDiff(
        base=base,
        head=head,
        notes=notes,
        spec=tuple(_spec_diffs(old.spec if old else None, new.spec)),
        targets=tuple(targets),
        groups=group(targets),
        shared=_file_diffs(old_files.get(None, {}), new_files.get(None, {})),
        deletions=kube_deletions(old.artifacts if old else (), new.artifacts),
        calls=diff_calls(old.mesh if old else None, new.mesh),
        waves=_wave_split(old, new, targets),
    )


def _wave_split(old: Build | None, new: Build, targets: Sequence[TargetDiff]) -> tuple[WaveSplit, ...]:
    """Changed targets by the head's waves (the first wave always, even empty); targets no wave matches (external
    readers, which every live revision's union keeps) go with the first wave."""
    policy = new.spec.mesh.rollout
    if policy is None:
        return ()
    from compiler.spec.wave_policy import assign

    waves = assign(policy, old.mesh.workloads if old else ()) | dict(new.mesh.waves)
    first = next(w.name for w in policy.waves if not w.takes_hosts)
    split = {
        wave.name: [t.target for t in targets if waves.get(t.target, first) == wave.name]
        for wave in policy.waves
    }
    if not targets:
        return ()
    return tuple(
        WaveSplit(wave=name, targets=tuple(found)) for name, found in split.items() if found or name == first
    )


def group(targets: Sequence[TargetDiff]) -> tuple[Group, ...]:
    """Changed targets by (platform, datacenter): how many are new, removed, or need which kind of restart."""
    keyed: dict[tuple[str, str], list[TargetDiff]] = {}
    for target in targets:
        keyed.setdefault((target.platform, target.datacenter), []).append(target)
    return tuple(
        Group(
            platform=platform,
            datacenter=dc,
            targets=tuple(t.target for t in members),
            added=sum(t.status == ADDED for t in members),
            removed=sum(t.status == REMOVED for t in members),
            **{
                restart_key(cls): sum(t.status == CHANGED and t.restart == cls for t in members)
                for cls in RestartClass
            },
        )
        for (platform, dc), members in sorted(keyed.items())
    )


def restart_key(cls: RestartClass) -> str:
    """A restart class as a count's name: `no_restart`, `hot_reload`, … `pod_roll`."""
    return cls.name.lower() if cls else "no_restart"


# ---------------------------------------------------------------- Kubernetes objects left behind


def kube_deletions(old: Sequence[Artifact], new: Sequence[Artifact]) -> tuple[KubeDelete, ...]:
    """The Kubernetes objects of `old` that `new` no longer writes, in the order to delete them by hand.

    kube-applier applies a cluster's files sorted by path, each file's documents in order, and never
    deletes; deleting in the reverse order removes bindings before what they bind and a Namespace
    after its contents. An object is kept when the head still writes it (API group, kind, namespace,
    name) in any file of its cluster. Only files whose bytes differ are read: a file both builds
    write alike holds the same objects on both sides, and an object lives in one file only.
    """
    before = {a.path: a.data for a in old if _cluster_of(a.path)}
    after = {a.path: a.data for a in new if _cluster_of(a.path)}
    kept = {
        _kube_key(path, obj)
        for path, data in after.items()
        if before.get(path) != data
        for obj in object_heads(path, data)
    }
    gone: dict[str, list[KubeDelete]] = {}
    for path, data in before.items():
        if after.get(path) == data:
            continue
        cluster = _cluster_of(path) or ""
        gone.setdefault(cluster, []).extend(
            _delete(cluster, path, obj)
            for obj in object_heads(path, data)
            if _kube_key(path, obj) not in kept
        )
    return tuple(
        d
        for cluster in sorted(gone)
        for d in sorted(
            gone[cluster], key=lambda d: (d.file, kind_rank(d.kind), d.namespace or "", d.name), reverse=True
        )
    )


def _cluster_of(path: str) -> str | None:
    parts = path.split("/")
    return (
        parts[1] if len(parts) >= 3 and parts[0] == KUBERNETES_ROOT and parts[-1].endswith(".yaml") else None
    )


def _kube_key(path: str, obj: Mapping[str, Any]) -> tuple[str | None, str, str, str | None, str]:
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


def object_heads(path: str, data: bytes) -> list[dict[str, Any]]:
    """apiVersion, kind and metadata of every Kubernetes object in one output file (documents without them are skipped).

    meshc's own files are read head by head (the lines up to the end of `metadata`), never whole:
    a mesh-wide change rewrites every workload file, whose ConfigMaps are most of a build's bytes.
    """
    try:
        text = data.decode()
        heads: list[Any] = [_object_head(document) for document in stream_documents(text) or [text]]
    except (NotCanonical, UnicodeDecodeError):
        parsed = parse_file(path, data)
        found = parsed[0] if parsed is not None else None
        heads = found if isinstance(found, list) else [found]
    return [
        h
        for h in heads
        if isinstance(h, dict)
        and isinstance(h.get("kind"), str)
        and isinstance(h.get("metadata"), dict)
        and isinstance(h["metadata"].get("name"), str)
        and isinstance(h["metadata"].get("namespace", ""), str)
    ]


# ---------------------------------------------------------------- spec files


def _spec_diffs(old: Spec | None, new: Spec) -> Iterator[SpecFileDiff]:
    before, after = _spec_data(old), _spec_data(new)
    for name in sorted(set(before) | set(after), key=lambda n: (n != MESH_FILE, n)):
        service = None if name == MESH_FILE else PurePosixPath(name).stem
        if name not in after:
            yield SpecFileDiff(file=name, service=service, status=REMOVED)
        elif name not in before:
            yield SpecFileDiff(file=name, service=service, status=ADDED)
        elif before[name] != after[name]:
            yield SpecFileDiff(
                file=name, service=service, status=CHANGED, changes=diff_values(before[name], after[name])
            )


def _spec_data(spec: Spec | None) -> dict[str, Any]:
    """Document data by path relative to the spec directory (documents are keyed `label/relative`)."""
    if spec is None:
        return {}
    label = spec.mesh.file[: -len(MESH_FILE)]
    return {name[len(label) :]: doc.data for name, doc in spec.documents.items()}


def _reformatted(before: SpecFiles, after: SpecFiles, old: Build | None, new: Build) -> tuple[str, ...]:
    if old is None:
        return ()
    old_data, new_data = _spec_data(old.spec), _spec_data(new.spec)
    return tuple(
        sorted(
            name
            for name in set(before) & set(after)
            if before[name] != after[name] and name in old_data and old_data.get(name) == new_data.get(name)
        )
    )


# ---------------------------------------------------------------- targets


def _files_by_target(artifacts: Sequence[Artifact]) -> dict[str | None, dict[str, bytes]]:
    files: dict[str | None, dict[str, bytes]] = {}
    for artifact in artifacts:
        if artifact.path != MANIFEST:
            files.setdefault(artifact.target, {})[artifact.path] = artifact.data
    return files


def _documents(build: Build | None) -> dict[str, Mapping[str, Any]]:
    return {wid: config.documents for wid, config in build.sidecars.items()} if build else {}


def _target(
    target: str,
    placement: Mapping[str, Any],
    old_docs: Mapping[str, Any] | None,
    new_docs: Mapping[str, Any] | None,
    old_files: Mapping[str, bytes] | None,
    new_files: Mapping[str, bytes] | None,
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


def _file_diffs(old: Mapping[str, bytes], new: Mapping[str, bytes]) -> tuple[DocumentDiff, ...]:
    diffs = []
    for path in sorted(set(old) | set(new)):
        if path not in new:
            diffs.append(DocumentDiff(name=path, status=REMOVED))
        elif path not in old:
            diffs.append(DocumentDiff(name=path, status=ADDED))
        elif old[path] != new[path]:
            diffs.append(diff_file(path, old[path], new[path]))
    return tuple(diffs)


def output_drift(
    spec_dir: Path,
    out: Path,
    lock_timeout: float = LOCK_TIMEOUT,
    on_wait: Callable[[Path], None] | None = None,
) -> tuple[TreeStatus, dict[str, DocumentDiff]]:
    """`meshc check` in full: how `out` differs from what the spec renders, and, for every stale or
    hand-edited file, what a rebuild would change (on disk → rendered, as `diff` shows base → head).

    Holds the output's lock, so it never reads a tree a build is swapping.
    """
    real = Path(os.path.realpath(out))
    with output_lock(real, str(out), lock_timeout, on_wait, required=False):
        # with a rollout.yaml, every wave's revision is compiled
        from compiler.rollout.output import output_for

        tree = output_for(spec_dir)
        status = compare_tree(real, tree)
        changed = (*status.stale, *status.hand_edited)
        return status, {path: _rebuild_edit(real, path, tree[path]) for path in changed}


def _rebuild_edit(root: Path, path: str, rendered: bytes) -> DocumentDiff:
    """One file from disk to its rendering; a non-regular or huge file is described, never opened or read whole."""
    on_disk = read_regular(root / path, MAX_COMPARED_BYTES)
    if on_disk is not None:
        return diff_file(path, on_disk, rendered)
    info = os.lstat(root / path)
    what = (
        f"{info.st_size:,} bytes on disk, more than the {MAX_COMPARED_BYTES >> 20} MiB meshc compares as data"
        if kind_of(info.st_mode) == REGULAR
        else f"a {kind_of(info.st_mode)} on disk, not a regular file"
    )
    return DocumentDiff(name=path, status=CHANGED, text=(f"(not compared: {what})",))


def diff_file(path: str, old: bytes, new: bytes) -> DocumentDiff:
    """One output file's two versions compared as data (JSON, YAML), or else line by line."""
    if PurePosixPath(path).suffix in (".yaml", ".yml"):
        try:
            return DocumentDiff(
                name=path, status=CHANGED, changes=diff_canonical_yaml(old.decode(), new.decode())
            )
        except (NotCanonical, UnicodeDecodeError):
            pass  # read whole by a YAML library below
    before, after = parse_file(path, old), parse_file(path, new)
    if before is not None and after is not None:
        return DocumentDiff(name=path, status=CHANGED, changes=diff_values(before[0], after[0]))
    lines = difflib.unified_diff(
        old.decode(errors="replace").splitlines(),
        new.decode(errors="replace").splitlines(),
        fromfile=f"a/{path}",
        tofile=f"b/{path}",
        n=1,
        lineterm="",
    )
    text = list(lines)
    if len(text) > MAX_TEXT_LINES:
        text = [*text[:MAX_TEXT_LINES], f"... {len(text) - MAX_TEXT_LINES} more diff lines cut"]
    return DocumentDiff(name=path, status=CHANGED, text=tuple(text))


def parse_file(path: str, data: bytes) -> tuple[Any] | None:
    """An output file's data (a 1-tuple, since the data may be None), or None if it is not JSON or YAML."""
    suffix = PurePosixPath(path).suffix
    try:
        if suffix == ".json":
            return (_load_json(data),)
        if suffix in (".yaml", ".yml"):
            return (_load_yaml(data.decode()),)
    except (ValueError, yaml.YAMLError):
        return None
    return None


def _load_yaml(text: str) -> Any:
    """One document's data, or the list of a stream's documents.

    A stream is a file opened by `---`, as meshc writes Kubernetes files."""
    documents = stream_documents(text)
    try:
        return load_canonical_yaml(text) if documents is None else [load_canonical_yaml(d) for d in documents]
    except NotCanonical:
        loaded = list(yaml.load_all(text, Loader=_YAML_LOADER))
        return loaded[0] if documents is None and len(loaded) == 1 else loaded


# ---------------------------------------------------------------- canonical YAML


class NotCanonical(ValueError):
    """The text is not in the exact form `compiler.emit.dump_yaml` writes (read it with a YAML library)."""


_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_./-]*")
_INT = re.compile(r"-?(?:0|[1-9][0-9]*)")
_FLOAT = re.compile(r"-?[0-9]+\.[0-9]+")
_WORDS = {"null": None, "true": True, "false": False}
_YAML11 = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null"})
_JSON = json.JSONDecoder()


def load_canonical_yaml(text: str) -> Any:
    """Read YAML written by `compiler.emit.dump_yaml` several times faster than PyYAML's constructor can.

    Output files are diffed as data, and PyYAML's pure-Python constructor would spend more time
    reading a mesh-wide change than compiling it. Anything outside dump_yaml's exact grammar
    (comments after the header, flow collections, other indentation, `---`) raises NotCanonical.
    """
    reader = _CanonicalReader(_body_lines(text))
    return reader.read(0, len(reader.lines), 0)


def diff_canonical_yaml(old: str, new: str) -> tuple[Change, ...]:
    """`diff_values` of two canonical YAML texts, reading only the mappings and values whose text differs.

    Equal text is equal data, so an unchanged subtree (most of a file, in a typical change) is
    compared as a list of lines and never read. Two streams of Kubernetes objects are diffed object
    by object (see _diff_streams). Raises NotCanonical like load_canonical_yaml.
    """
    old_documents, new_documents = stream_documents(old), stream_documents(new)
    if old_documents is not None and new_documents is not None:
        return _diff_streams(old_documents, new_documents)
    if old_documents is not None or new_documents is not None:
        raise NotCanonical("a stream of documents against a single document")
    out: list[Change] = []
    _diff_texts(old, new, "", out)
    return tuple(out)


def _diff_texts(old: str, new: str, path: str, out: list[Change]) -> None:
    before, after = _CanonicalReader(_body_lines(old)), _CanonicalReader(_body_lines(new))
    _diff_spans(before, (0, len(before.lines)), after, (0, len(after.lines)), 0, path, out)


def stream_documents(text: str) -> list[str] | None:
    """The documents of a stream as meshc writes one (every document opened by a `---` line), or None for other text.

    A `---` line cannot occur inside a canonical document: its top-level lines are keys, and block
    scalars are indented.
    """
    if not text.startswith("---\n"):
        return None
    parts = text[4:].split("\n---\n")
    return [part + "\n" for part in parts[:-1]] + parts[-1:]


def _diff_streams(old: Sequence[str], new: Sequence[str]) -> tuple[Change, ...]:
    """Objects matched by `kind/namespace/name` (changes at `[ConfigMap/upload/upload-mesh-envoy].data…`), as
    `diff_values` matches a list of objects; an object added to or removed from the file is one change."""
    before, after = _keyed_documents(old), _keyed_documents(new)
    out: list[Change] = []
    for key in [*before, *(k for k in after if k not in before)]:
        path = f"[{key}]"
        if key not in after:
            out.append(Change(path=path, kind=REMOVED, old=load_canonical_yaml(before[key])))
        elif key not in before:
            out.append(Change(path=path, kind=ADDED, new=load_canonical_yaml(after[key])))
        elif before[key] != after[key]:
            _diff_texts(before[key], after[key], path, out)
    return tuple(out)


def _keyed_documents(documents: Sequence[str]) -> dict[str, str]:
    keyed: dict[str, str] = {}
    for document in documents:
        head = _object_head(document)
        meta = head.get("metadata")
        if (
            not isinstance(meta, dict)
            or not isinstance(head.get("kind"), str)
            or not isinstance(meta.get("name"), str)
        ):
            raise NotCanonical("a document that is no Kubernetes object")
        key = "/".join(str(part) for part in (head["kind"], meta.get("namespace"), meta["name"]) if part)
        if key in keyed:
            raise NotCanonical(f"two documents are {key}")
        keyed[key] = document
    return keyed


# A top-level entry apiVersion, kind or metadata, its key line and the indented lines below it. meshc
# writes them first, so a search stops after a few lines of a document that may be 100 kB of ConfigMap.
_HEAD_ENTRY = re.compile(r"^(?:apiVersion|kind|metadata):.*\n(?: .*\n)*", re.MULTILINE)


def _object_head(document: str) -> dict[str, Any]:
    """The top-level entries apiVersion, kind and metadata of a canonical document, the other entries left unread."""
    entries = []
    for match in _HEAD_ENTRY.finditer(document):
        entries.append(match.group())
        if len(entries) == 3:
            break
    lines = "".join(entries).split("\n")[:-1]
    head = _CanonicalReader(lines).read(0, len(lines), 0) if lines else {}
    if not isinstance(head, dict):
        raise NotCanonical("a document that is not a mapping")
    return head


def _body_lines(text: str) -> list[str]:
    lines = text.split("\n")
    while lines and lines[0].startswith("#"):  # a header comment ("Generated by meshc") is all a file may add
        lines.pop(0)
    if len(lines) < 2 or lines.pop() != "":
        raise NotCanonical("no final newline")
    return lines


Span = tuple[int, int]  # a half-open range of lines


def _diff_spans(
    old: _CanonicalReader, a: Span, new: _CanonicalReader, b: Span, indent: int, path: str, out: list[Change]
) -> None:
    if old.lines[a[0] : a[1]] == new.lines[b[0] : b[1]]:
        return
    if not (old.is_mapping(a[0], indent) and new.is_mapping(b[0], indent)):
        _diff(old.read(*a, indent), new.read(*b, indent), path, out)
        return
    before, after = old.entries(a, indent), new.entries(b, indent)
    for key in [*before, *(k for k in after if k not in before)]:
        child = _key_path(path, key)
        if key not in after:
            out.append(Change(path=child, kind=REMOVED, old=old.entry_value(before[key], indent)))
        elif key not in before:
            out.append(Change(path=child, kind=ADDED, new=new.entry_value(after[key], indent)))
        elif old.has_block(before[key]) and new.has_block(after[key]):
            _diff_spans(
                old,
                (before[key][0] + 1, before[key][1]),
                new,
                (after[key][0] + 1, after[key][1]),
                indent + 2,
                child,
                out,
            )
        elif old.lines[slice(*before[key])] != new.lines[slice(*after[key])]:
            _diff(old.entry_value(before[key], indent), new.entry_value(after[key], indent), child, out)


class _PerLine(dict[int, Any]):
    """A value per line index, computed on first access."""

    def __init__(self, lines: list[str], compute: Callable[[str], Any]) -> None:
        super().__init__()
        self.lines, self.compute = lines, compute

    def __missing__(self, index: int) -> Any:
        value = self[index] = self.compute(self.lines[index])
        return value


class _CanonicalReader:
    """A recursive reader over lines split once into indentation and content."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        # Per line, computed when first asked for: a diff of two files reads only the lines that differ.
        self.content = _PerLine(lines, lambda line: line.lstrip(" "))
        self.indent = _PerLine(lines, lambda line: len(line) - len(line.lstrip(" ")))
        self.pos = 0
        self.plain_keys: set[str] = set()  # keys repeat in every file; check each spelling once

    def key(self, pos: int) -> tuple[str, int] | None:
        """The mapping key opening the content of line `pos`, and where its value starts in that content."""
        content = self.content[pos]
        if content.startswith('"'):
            try:
                key, end = _JSON.raw_decode(content)
            except ValueError:
                raise NotCanonical("bad quoted key") from None
            return (key, end + 1) if content.startswith(":", end) else None
        colon = content.find(":")
        if colon <= 0 or (colon + 1 < len(content) and content[colon + 1] != " "):
            return None
        key = content[:colon]
        if key not in self.plain_keys:
            if not _PLAIN.fullmatch(key) or key.lower() in _YAML11:
                return None
            self.plain_keys.add(key)
        return key, colon + 1

    def read(self, start: int, end: int, indent: int) -> Any:
        """The value held by lines [start, end), a block at `indent` or a lone scalar line."""
        self.pos = start
        if self.content[start].startswith("-") or self.key(start) is not None:
            value = self.node(indent)
        else:
            self.pos += 1
            value = self.scalar(self.content[start], indent + 2)
        if self.pos != end:
            raise NotCanonical(f"unexpected line {self.pos + 1}")
        return value

    def is_mapping(self, line: int, indent: int) -> bool:
        """Does a block mapping at `indent` start at `line`?"""
        return (
            self.indent[line] == indent
            and not self.content[line].startswith("-")
            and self.key(line) is not None
        )

    def entries(self, span: Span, indent: int) -> dict[str, Span]:
        """The mapping at `indent` in `span`: each key and the lines of its entry (key line included)."""
        lines = self.lines[span[0] : span[1]]
        # map() over compiled patterns keeps this scan, the hot loop of a mesh-wide diff, in C.
        # blank lines belong to literal blocks
        if any(map(re.compile(f"(?! {{{indent}}})(?=.)").match, lines)):
            raise NotCanonical(f"line {span[0] + 1}: a block ends inside its span")
        starts = list(compress(range(*span), map(re.compile(f" {{{indent}}}[^ ]").match, lines)))
        result: dict[str, Span] = {}
        for start, end in zip(starts, [*starts[1:], span[1]], strict=True):
            found = self.key(start)
            if found is None or found[0] in result:
                raise NotCanonical(f"line {start + 1}: not a mapping key")
            result[found[0]] = (start, end)
        return result

    def has_block(self, entry: Span) -> bool:
        """Is the entry's value a block on the lines below its key (not a scalar on the key line)?"""
        found = self.key(entry[0])
        return found is not None and found[1] == len(self.content[entry[0]])

    def entry_value(self, entry: Span, indent: int) -> Any:
        """The value of the mapping entry on lines `entry`."""
        key, end = self.key(entry[0]) or ("", 0)
        text = self.content[entry[0]]
        self.pos = entry[0] + 1
        value = self.node(indent + 2) if end == len(text) else self.scalar(text[end + 1 :], indent + 2)
        if self.pos != entry[1]:
            raise NotCanonical(f"unexpected line {self.pos + 1}")
        return value

    def node(self, indent: int) -> Any:
        if self.pos >= len(self.lines) or self.indent[self.pos] != indent:
            raise NotCanonical(f"line {self.pos + 1}: expected a block at indentation {indent}")
        return self.sequence(indent) if self.content[self.pos].startswith("-") else self.mapping(indent)

    def mapping(self, indent: int) -> dict[str, Any]:
        result: dict[str, Any] = {}
        lines, content, indents = self.lines, self.content, self.indent
        while self.pos < len(lines) and indents[self.pos] == indent and not content[self.pos].startswith("-"):
            found = self.key(self.pos)
            if found is None or found[0] in result:
                raise NotCanonical(f"line {self.pos + 1}: not a mapping key")
            key, end = found
            text = content[self.pos]
            self.pos += 1
            result[key] = (
                self.node(indent + 2) if end == len(text) else self.scalar(text[end + 1 :], indent + 2)
            )
        return result

    def sequence(self, indent: int) -> list[Any]:
        items: list[Any] = []
        while (
            self.pos < len(self.lines)
            and self.indent[self.pos] == indent
            and self.content[self.pos].startswith("-")
        ):
            rest = self.content[self.pos][1:]
            if rest == "":
                self.pos += 1
                items.append(self.node(indent + 2))
                continue
            if not rest.startswith(" ") or rest.startswith("  "):
                raise NotCanonical(f"line {self.pos + 1}: not a canonical list item")
            # A mapping item's first key sits on the dash line: read the line as if the dash were a space.
            self.content[self.pos], self.indent[self.pos] = rest[1:], indent + 2
            if self.key(self.pos) is not None:
                items.append(self.mapping(indent + 2))
            else:
                self.pos += 1
                items.append(self.scalar(rest[1:], indent + 2))
        return items

    def scalar(self, text: str, indent: int) -> Any:
        if text in _WORDS:
            return _WORDS[text]
        if text.startswith('"'):
            try:
                value, end = _JSON.raw_decode(text)
            except ValueError:
                raise NotCanonical("bad quoted string") from None
            if end != len(text):
                raise NotCanonical("text after a quoted string")
            return value
        if text in ("|", "|-", "|+"):
            return self.literal(text[1:], indent)
        if text == "{}":
            return {}
        if text == "[]":
            return []
        if _INT.fullmatch(text):
            return int(text)
        if _FLOAT.fullmatch(text):
            return float(text)
        if _PLAIN.fullmatch(text) and text.lower() not in _YAML11:
            return text
        raise NotCanonical(f"line {self.pos}: not a canonical scalar {text[:40]!r}")

    def literal(self, chomp: str, indent: int) -> str:
        pad = " " * indent
        body: list[str] = []
        while self.pos < len(self.lines) and (
            self.lines[self.pos] == "" or self.lines[self.pos].startswith(pad)
        ):
            body.append(self.lines[self.pos][indent:])
            self.pos += 1
        end = len(body)
        while end and body[end - 1] == "":
            end -= 1
        blank = len(body) - end
        text = "\n".join(body[:end])
        if not text or text.startswith(" "):
            raise NotCanonical("literal block with leading spaces or no text")
        return text if chomp == "-" else text + "\n" + ("\n" * blank if chomp == "+" else "")


# ---------------------------------------------------------------- values


def diff_values(old: Any, new: Any) -> tuple[Change, ...]:
    """Every difference between two plain data values, as changes at paths like `a[name].b[0].c`."""
    out: list[Change] = []
    _diff(old, new, "", out)
    return tuple(out)


def _diff(old: Any, new: Any, path: str, out: list[Change]) -> None:
    if type(old) is type(new) and old == new:  # C-speed equality prunes every unchanged subtree
        return
    if isinstance(old, dict) and isinstance(new, dict):
        _diff_dicts(old, new, path, out)
    elif isinstance(old, list) and isinstance(new, list):
        _diff_lists(old, new, path, out)
    elif isinstance(old, str) and isinstance(new, str) and (embedded := _embedded(old, new)) is not None:
        _diff(embedded[0], embedded[1], path, out)  # e.g. a sidecar document held as JSON text in a ConfigMap
    else:
        out.append(Change(path=path or ".", kind=CHANGED, old=old, new=new))


def _diff_dicts(old: dict[str, Any], new: dict[str, Any], path: str, out: list[Change]) -> None:
    _diff_keyed(old, new, lambda key: _key_path(path, key), out)


def _diff_keyed(
    old: Mapping[Any, Any], new: Mapping[Any, Any], child: Callable[[Any], str], out: list[Change]
) -> None:
    """Entries matched by key (old order, then what is new): removed, added, or diffed in place."""
    for key in [*old, *(k for k in new if k not in old)]:
        if key not in new:
            out.append(Change(path=child(key), kind=REMOVED, old=old[key]))
        elif key not in old:
            out.append(Change(path=child(key), kind=ADDED, new=new[key]))
        else:
            _diff(old[key], new[key], child(key), out)


def _diff_lists(old: list[Any], new: list[Any], path: str, out: list[Change]) -> None:
    keyed = _list_key(old, new)
    if keyed is not None:
        label, key = keyed
        before, after = {key(i): i for i in old}, {key(i): i for i in new}
        _diff_keyed(before, after, lambda name: f"{path}[{label(name)}]", out)
    elif _unique_scalars(old) and _unique_scalars(new):
        _diff_sets(old, new, path, out)
    elif _OR_LIST.search(path) and _unique_values(old) and _unique_values(new):
        _diff_value_sets(old, new, path, out)
    else:
        _diff_aligned(old, new, path, out)


def _diff_aligned(old: list[Any], new: list[Any], path: str, out: list[Change]) -> None:
    """Unnamed items aligned by content (longest common subsequence), so one insertion is one `+`.

    Items replaced one for one are diffed inside, at their new index; the rest are added or removed.
    """
    matcher = difflib.SequenceMatcher(
        None, [_canonical(i) for i in old], [_canonical(i) for i in new], autojunk=False
    )
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            continue
        paired = min(i2 - i1, j2 - j1) if op == "replace" else 0
        for k in range(paired):
            _diff(old[i1 + k], new[j1 + k], f"{path}[{j1 + k}]", out)
        out += [Change(path=f"{path}[{i}]", kind=REMOVED, old=old[i]) for i in range(i1 + paired, i2)]
        out += [Change(path=f"{path}[{j}]", kind=ADDED, new=new[j]) for j in range(j1 + paired, j2)]


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _diff_sets(old: list[Any], new: list[Any], path: str, out: list[Change]) -> None:
    gone, came = set(old) - set(new), set(new) - set(old)
    out += [Change(path=path or ".", kind=REMOVED, old=item) for item in old if item in gone]
    out += [Change(path=path or ".", kind=ADDED, new=item) for item in new if item in came]
    if not gone and not came:  # same members, new order: order matters (failover lists), so say so
        out.append(Change(path=path or ".", kind=CHANGED, old=old, new=new))


# Lists whose items are alternatives of an OR, so their position means nothing: Envoy RBAC
# `principals` and `permissions`, a NetworkPolicy rule's `from` peers.
_OR_LIST = re.compile(r"(?:^|\.)(?:principals|permissions|from)$")


def _unique_values(items: list[Any]) -> bool:
    return len({_canonical(i) for i in items}) == len(items)


def _diff_value_sets(old: list[Any], new: list[Any], path: str, out: list[Change]) -> None:
    """Items matched by value, like `_diff_sets`: adding a client is one `+` of it, wherever it sorts."""
    before, after = {_canonical(i): i for i in old}, {_canonical(i): i for i in new}
    out += [
        Change(path=path or ".", kind=REMOVED, old=item) for key, item in before.items() if key not in after
    ]
    out += [
        Change(path=path or ".", kind=ADDED, new=item) for key, item in after.items() if key not in before
    ]
    if before.keys() == after.keys():  # same members, new order
        out.append(Change(path=path or ".", kind=CHANGED, old=old, new=new))


def _unique_scalars(items: list[Any]) -> bool:
    return all(isinstance(i, (str, int)) and not isinstance(i, bool) for i in items) and len(
        set(items)
    ) == len(items)


KeyFn = Callable[[Any], Any]

# How list items are told apart, most specific first: (does it apply to an item, its key, its label).
_LIST_KEYS: tuple[tuple[Callable[[Any], bool], KeyFn, Callable[[Any], str]], ...] = (
    (lambda i: "name" in i, lambda i: i["name"], str),
    (lambda i: "service" in i, lambda i: i["service"], lambda k: f"service={k}"),
    (lambda i: "cluster_name" in i, lambda i: i["cluster_name"], lambda k: f"cluster_name={k}"),
    (
        lambda i: isinstance(i.get("metadata"), dict) and "name" in i["metadata"] and "kind" in i,
        lambda i: f"{i['kind']}/{i['metadata'].get('namespace', '')}/{i['metadata']['name']}".replace(
            "//", "/"
        ),
        str,
    ),
    (lambda i: "cluster" in i, lambda i: i["cluster"], lambda k: f"cluster={k}"),
    (lambda i: "@type" in i, lambda i: i["@type"], lambda k: f"@type={k}"),
)


def _list_key(old: list[Any], new: list[Any]) -> tuple[Callable[[Any], str], KeyFn] | None:
    """The first key that names every item of both lists uniquely, or None (then items match by index)."""
    items = [*old, *new]
    if not items or not all(isinstance(i, dict) for i in items):
        return None
    for applies, key, label in _LIST_KEYS:
        if all(applies(i) for i in items) and _unique_names(old, key) and _unique_names(new, key):
            return label, key
    return None


def _unique_names(items: list[Any], key: KeyFn) -> bool:
    names = [key(i) for i in items]
    return all(isinstance(n, (str, int)) for n in names) and len(set(names)) == len(names)


def _key_path(path: str, key: Any) -> str:
    text = str(key)
    if _IDENT.fullmatch(text):
        return f"{path}.{text}" if path else text
    return f"{path}[{json.dumps(text)}]"


def _embedded(old: str, new: str) -> tuple[Any, Any] | None:
    """Both strings parsed as JSON containers, if both are; else None."""
    if old[:1] not in ("{", "[") or new[:1] not in ("{", "["):
        return None
    try:
        return _load_json(old), _load_json(new)
    except ValueError:
        return None


def _load_json(text: str | bytes) -> Any:
    """orjson where it can (several times faster), the stdlib where it cannot (integers beyond 64 bits)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)
