"""What a rollout change costs: each target and canary host whose rendering differs between two rollout builds,
its restart class and why, and the other files that differ (shared by `meshc plan` and the diff's rollout part)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from compiler.render.restart import DocumentPrint, RestartClass, classify, print_view
from compiler.rollout.build import RolloutBuild, node_path, pool_file
from compiler.rollout.compiled import TargetPrint
from compiler.rollout.hosts import Canary


@dataclass(frozen=True, kw_only=True, slots=True)
class TargetChange:
    """A target whose rendering the next promotion changes, and what that costs it."""

    target: str
    wave: str
    status: str  # added | removed | changed
    restart: RestartClass
    restart_sensitive: bool
    reason: str  # promoted (its wave moves) | authorization (allow-list widened or narrowed)


def _prints(build: RolloutBuild, target: str) -> TargetPrint | None:
    """What `target` runs in `build`, by print; None where it is absent."""
    placement = build.state.placements.get(target)
    if placement is None or placement.workload is None:
        return None
    return build.rendered[placement.revision].prints.get(target)


def _documents(found: TargetPrint | None) -> Mapping[str, DocumentPrint] | None:
    return found.documents if found is not None else None


def target_changes(
    before: RolloutBuild, after: RolloutBuild, moved: Collection[str], reason: str = "promoted"
) -> list[TargetChange]:
    """Every target and canary host whose rendering differs between two rollout builds, and what it costs: `reason`
    where its wave is one of the `moved` (runs another revision), else "authorization" (an allow-list another live
    revision widens or narrows)."""
    found = []
    for target in sorted(set(before.state.placements) | set(after.state.placements)):
        old, new = _documents(_prints(before, target)), _documents(_prints(after, target))
        if old == new:
            continue
        placement = after.state.placements.get(target) or before.state.placements[target]
        workload = placement.workload or before.state.placements[target].workload
        status = "added" if old is None else "removed" if new is None else "changed"
        found.append(
            TargetChange(
                target=target,
                wave=placement.wave,
                status=status,
                restart=_cost(status, old, new),
                restart_sensitive=bool(workload and workload.restart_sensitive),
                reason=reason if placement.wave in moved else "authorization",
            )
        )
    return found + _host_changes(before, after, moved, reason)


def other_files(
    old: RolloutBuild, new: RolloutBuild, changes: Sequence[TargetChange]
) -> tuple[tuple[str, str], ...]:
    """The files that differ between the trees (MANIFEST.json aside) and belong to none of the `changes`."""
    listed = {node_path(c.target.removeprefix("host/")) for c in changes if c.target.startswith("host/")}
    for build in (old, new):
        listed.update(path for change in changes for path in build.targets.get(change.target, ()))
    return tuple(
        (path, "added" if path not in old.files else "removed" if path not in new.files else "changed")
        for path in sorted(old.files.keys() | new.files.keys())
        if path not in listed and old.files.get(path) != new.files.get(path)
    )


def _host_changes(
    before: RolloutBuild, after: RolloutBuild, moved: Collection[str], reason: str
) -> list[TargetChange]:
    """Canary hosts (target `host/<certname>`) whose rendering changes: a host reads its node file, and its pool's
    file where it has none (it is no canary there), so a host that becomes or stops being a canary is compared
    with its pool's rendering, not with nothing. A node file that comes or goes alone changes no host."""
    old = {c.certname: c for c in before.state.canaries}
    new = {c.certname: c for c in after.state.canaries}
    found = []
    for certname in sorted(set(old) | set(new)):
        path = node_path(certname)
        if before.files.get(path) == after.files.get(path):
            continue
        canary = new.get(certname) or old[certname]
        was = _host_print(before, old.get(certname), path, canary.pool)
        now = _host_print(after, new.get(certname), path, canary.pool)
        documents = (_documents(was), _documents(now))
        if documents[0] == documents[1]:
            continue
        status = "added" if was is None else "removed" if now is None else "changed"
        found.append(
            TargetChange(
                target=f"host/{certname}",
                wave=canary.wave,
                status=status,
                restart=_cost(status, *documents),
                restart_sensitive=any(p.restart_sensitive for p in (was, now) if p is not None),
                reason=reason if canary.wave in moved else "authorization",
            )
        )
    return found


def _cost(
    status: str, old: Mapping[str, DocumentPrint] | None, new: Mapping[str, DocumentPrint] | None
) -> RestartClass:
    """What a change costs what runs: a target or host that starts or stops restarts nothing that runs (as the spec
    diff prices it), a changed one its documents' class."""
    return classify(old, new, print_view) if status == "changed" else RestartClass.NONE


def _host_print(build: RolloutBuild, canary: Canary | None, node: str, pool: str) -> TargetPrint | None:
    """What a host runs in `build`, by print: its node file's rendering (its pool in `build`, which an inventory edit
    may change, at its wave's revision), else the file of `pool` (where that pool stands); None if neither file is
    there."""
    if canary is not None and node in build.files:  # rendered from this side's pool of the host
        revision = next(r.revision for r in build.state.revisions if r.wave == canary.wave)
        return build.rendered[revision].prints.get(canary.pool)
    return _prints(build, pool) if pool_file(pool) in build.files else None
