"""Puppet drift as the report's records: a subject per host, orphan, pool no host reports, and hiera file."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from compiler.drift.model import (
    CONVERGED,
    DRIFTED,
    NO_HOSTS,
    NOT_CHECKED,
    ORPHAN,
    DriftItem,
    ScopeState,
    SubjectState,
)
from compiler.drift.puppet import PLATFORM, HostDrift, PuppetDrift
from compiler.output.compare import TreeStatus


def host_records(drift: PuppetDrift) -> tuple[ScopeState, tuple[SubjectState, ...]]:
    """One scope (the PuppetDB URL or export file), a subject per host, per orphan, and per pool no host reports for."""
    subjects = [
        SubjectState(
            platform=PLATFORM,
            scope=drift.source,
            subject=h.certname,
            target=h.target,
            wave=h.wave,
            state=str(h.state),
            items=tuple(_host_item(drift.source, h, reason, drift.documents) for reason in h.reasons),
        )
        for h in drift.hosts
    ]
    subjects += [
        SubjectState(
            platform=PLATFORM,
            scope=drift.source,
            subject=pool.name,
            target=pool.name,
            state=NOT_CHECKED,
            items=(
                DriftItem(
                    kind=NO_HOSTS,
                    platform=PLATFORM,
                    scope=drift.source,
                    subject=pool.name,
                    target=pool.name,
                    detail="no host reports this pool: no data is not a pass",
                ),
            ),
        )
        for pool in drift.pools
        if pool.hosts == 0
    ]
    subjects += [
        SubjectState(
            platform=PLATFORM,
            scope=drift.source,
            subject=o.certname,
            target=None,
            state=DRIFTED,
            items=(
                DriftItem(
                    kind=ORPHAN,
                    platform=PLATFORM,
                    scope=drift.source,
                    subject=o.certname,
                    detail=f"reports mesh facts for {o.workload}, which meshc does not render",
                ),
            ),
        )
        for o in drift.orphans
    ]
    return ScopeState(platform=PLATFORM, scope=drift.source, state=CONVERGED, evidence=drift.source), tuple(
        subjects
    )


def _host_item(scope: str, host: HostDrift, reason: str, documents: frozenset[str]) -> DriftItem:
    """A reason as an item: its `path` is the document it is about, so an acknowledgement can name one document."""
    document, sep, _ = reason.partition(": ")
    return DriftItem(
        kind=str(host.state),
        platform=PLATFORM,
        scope=scope,
        subject=host.certname,
        target=host.target,
        path=document if sep and document in documents else "",
        detail=reason,
    )


def hiera_records(
    directory: Path, status: TreeStatus, tree: Mapping[str, bytes]
) -> tuple[ScopeState, tuple[SubjectState, ...]]:
    """The deployed hiera tree as one scope: a subject per file of output/puppet/ (and per extra file)."""
    scope = str(directory)
    differs = {
        path: kind
        for kind, paths in (
            ("stale", status.stale),
            ("missing", status.missing),
            ("extra", status.extra),
            ("hand-edited", status.hand_edited),
            ("reformatted", status.reformatted),
        )
        for path in paths
    }
    files = sorted(
        {path.removeprefix("puppet/") for path in tree if path.startswith("puppet/")} | set(differs)
    )
    subjects = tuple(
        SubjectState(
            platform=PLATFORM,
            scope=scope,
            subject=path,
            target=None,
            state=DRIFTED if path in differs else CONVERGED,
            items=(
                DriftItem(
                    kind=differs[path],
                    platform=PLATFORM,
                    scope=scope,
                    subject=path,
                    detail=_HIERA[differs[path]],
                ),
            )
            if path in differs
            else (),
        )
        for path in files
    )
    return ScopeState(platform=PLATFORM, scope=scope, state=CONVERGED, evidence=scope), subjects


_HIERA = {
    "stale": "an earlier meshc build wrote it: deploy the current output/puppet/",
    "missing": "meshc renders it; it is not deployed",
    "extra": "deployed, but meshc does not render it",
    "hand-edited": "differs from every rendering meshc made: edited on the server",
    "reformatted": "holds the very data meshc renders in other bytes (re-indented or re-ordered on the server): "
    "Puppet reads the same values; deploy output/puppet/ to restore meshc's file",
}
