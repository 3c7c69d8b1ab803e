"""The results of a diff as frozen records: what changes between two builds, where, and what it costs.

`compiler.report` formats them; nothing here computes a diff.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from compiler.diagnostics import Diagnostic
from compiler.graph.calls import CallChange
from compiler.render.restart import Credentials, RestartClass

if TYPE_CHECKING:
    from compiler.diff.transition import Hazard
    from compiler.rollout.changes import (
        TargetChange,  # the rollout's own record: the diff loads it only under one
    )

ADDED, REMOVED, CHANGED = "added", "removed", "changed"
WORKING_TREE = (
    "working tree"  # how a diff names its head when that is the working tree, uncommitted edits included
)


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
    text: tuple[str, ...] = ()  # unified diff lines, for files that hold no data (templates, text)
    # changes left out of a file's list because they repeat its target's sidecar document changes
    mirrored: int = 0


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
        """Does the change restart a process (sidecar or Envoy) or roll the pods, more than a hot reload?"""
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
        """`kind.group/name` as kubectl names it unambiguously: `configmap/x`,
        `rolebinding.rbac.authorization.k8s.io/x`."""
        group = self.api_version.rpartition("/")[0]
        return f"{self.kind.lower()}{'.' + group if group else ''}/{self.name}"

    @property
    def command(self) -> str:
        """The kubectl command that deletes it, in the cluster's context (contexts named after mesh.yaml's clusters)."""
        namespace = f" -n {self.namespace}" if self.namespace else ""
        return f"kubectl --context {self.cluster} delete{namespace} {self.resource}"


@dataclass(frozen=True, kw_only=True, slots=True)
class DeleteAhead:
    """Under a rollout, an object the head's spec no longer writes that the built output still holds after the merge
    (a pinned wave's revision writes it): kube-applier still applies it, so it is not to be deleted now. It leaves
    output/ with the promotion that brings `wave` the change, whose diff lists its kubectl command."""

    object: KubeDelete
    # the last wave, in the policy's order, whose revision still writes it ("" where what the merge changes at once
    # is unknown): a workload's file is its wave's alone, a Namespace or an external reader's object stays while
    # any live revision writes it
    wave: str


@dataclass(frozen=True, kw_only=True, slots=True)
class WaveSplit:
    """The changed targets of one wave of the head's wave policy."""

    wave: str
    targets: tuple[str, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class PinMove:
    """A wave whose revision the merge changes: the commit it ran at the base ("" if it was no wave there) and the
    one it runs at the head."""

    wave: str
    old: str
    new: str


@dataclass(frozen=True, kw_only=True, slots=True)
class RefusedPromotion:
    """A later promotion the rollout would refuse, with its [rollout-unsafe] findings."""

    wave: str
    findings: tuple[Diagnostic, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class RolloutNow:
    """What merging changes in the rollout-built output at once (compiler.diff.rollout): the waves that move and
    every target and canary host (`host/<certname>`) whose rendering changes, with its cost."""

    moves: tuple[PinMove, ...]
    changes: tuple[TargetChange, ...]
    # (path, added | removed | changed) of every other file that changes at once: an external reader's, a shared
    # one's, or a target's whose sidecar documents stay the same (its Kubernetes objects change)
    files: tuple[tuple[str, str], ...] = ()
    # the targets (sorted) whose files are among `files`: they change at once too, though not their documents
    file_targets: tuple[str, ...] = ()
    # MANIFEST.json's record of which revision each wave, target and canary host runs changes: a promotion to a
    # revision that renders alike changes no other file
    manifest: bool = False
    # the VM hosts inventory/hosts.yaml gains and loses (certnames, sorted), where both sides have a rollout: what
    # canary hosts are chosen from, so an edit of it is reviewed even where no canary moves
    hosts_added: tuple[str, ...] = ()
    hosts_removed: tuple[str, ...] = ()
    # the canary hosts (`host/<certname>`) of the changed VM pools that do not change now, by their wave: each
    # wave's promotion brings them the change, like a target wave's
    hosts_ahead: tuple[WaveSplit, ...] = ()
    # the objects the spec no longer writes that stay in output/ after the merge, by the wave whose promotion drops
    # them (in the policy's order), each in the order to delete it: not commands to run now (MeshDiff.deletions are)
    deletions_ahead: tuple[DeleteAhead, ...] = ()
    waves: tuple[str, ...] = ()  # every wave of the head's policy, in order
    # each promotion after the next that the rollout, as the head leaves it, would refuse: a state it passes
    # through is unsafe (compiler.rollout.states.refused_ahead); the merge gets as far as the wave before it
    refused_ahead: tuple[RefusedPromotion, ...] = ()
    mode: str = "active"  # the rollout at the head: "active", "hold" (nothing new reaches a wave), "none"
    unknown: str = ""  # why what the merge changes at once is not known (the base's rollout cannot be built)

    @property
    def restarts(self) -> int:
        """How many of the targets and hosts that change at once need a process restart or a pod roll."""
        return sum(change.restart >= RestartClass.SIDECAR_RESTART for change in self.changes)


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
    # The objects to delete by hand once the head is applied, in the order to run them (the reverse of
    # kube-applier's): those the base's output/ holds and the head's does not. Where a rollout.yaml is there at
    # the base or the head, they are read from both rollout-built trees, not from the spec's rendering: an object
    # a pinned wave still writes stays live (RolloutNow.deletions_ahead).
    deletions: tuple[KubeDelete, ...] = ()
    calls: tuple[
        CallChange, ...
    ] = ()  # call-graph edges added, removed or re-policied (compiler.graph.calls)
    waves: tuple[WaveSplit, ...] = ()  # changed targets by wave, in rollout order (the head's wave policy)
    # "active": rollout.yaml pins the later waves, so only the first wave changes now; "hold"; "none"
    rollout: str = "none"
    # where a rollout.yaml is there at the base or the head: what the merge changes in the built output at once
    now: RolloutNow | None = None
    # without a rollout: calls that work at the base and can fail while the head is applied (compiler.diff.transition)
    hazards: tuple[Hazard, ...] = ()

    @property
    def restarts(self) -> int:
        """How many targets need a process restart (sidecar or Envoy) or a pod roll, not just a hot reload."""
        return sum(t.needs_restart for t in self.targets)

    @property
    def sensitive_services(self) -> tuple[str, ...]:
        """Restart-sensitive services with at least one target that restarts, sorted."""
        return tuple(sorted({t.service for t in self.targets if t.sensitive_restart}))

    @property
    def renders_differently(self) -> bool:
        """Does the head's spec render any file differently from the base's (every wave counted)?"""
        return bool(self.targets or self.shared)

    @property
    def changed(self) -> bool:
        """Does any output change: the spec's rendering, or under a rollout what the merge changes at once (a
        promotion commit changes no spec file; a pin that moves changes MANIFEST.json, which records each wave's
        revision, even where both revisions render alike)?"""
        now = self.now
        return self.renders_differently or bool(
            now and (now.changes or now.files or now.manifest or now.unknown)
        )


def restart_key(cls: RestartClass) -> str:
    """A restart class as a count's name: `no_restart`, `hot_reload`, … `pod_roll`."""
    return cls.name.lower() if cls else "no_restart"
