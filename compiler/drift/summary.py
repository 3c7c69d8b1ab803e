"""Drift summed up: per target, pool and wave, the worst state and who holds it back, and the one-line verdict.

Shared by every report format (drift.report) and the status page (drift.html).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from compiler.drift.model import (
    ACKNOWLEDGED,
    CONVERGED,
    DRIFTED,
    FAILED,
    INCOMPLETE,
    NO_HOSTS,
    NOT_CHECKED,
    PENDING,
    UNKNOWN,
    DriftReport,
    SubjectState,
)

# Worse is higher: a definite difference (drifted, any other state) is worse than a failed run, worse than unknown.
_RANK = {CONVERGED: 0, ACKNOWLEDGED: 1, PENDING: 2, NOT_CHECKED: 3, UNKNOWN: 4, FAILED: 5}
_WORST = 6
_SHOWN = (
    PENDING,
    DRIFTED,
    FAILED,
    UNKNOWN,
)  # the order of a summary's counts, as HostState lists them; others after
_PASSING = (CONVERGED, ACKNOWLEDGED)
HOST_PLATFORM = (
    "puppet"  # its subjects are hosts, counted one by one in summaries; other platforms count targets
)
SUMMARY_NAMES = 5  # hosts named on a summary line before "… n more"


def worst(states: Iterable[str]) -> str:
    """The worst of some subject states (converged when there are none)."""
    return max(states, key=lambda state: _RANK.get(state, _WORST), default=CONVERGED)


def _wave(report: DriftReport, subject: SubjectState) -> str | None:
    return subject.wave or report.waves.get(subject.target or "")


def _canary_host(report: DriftReport, subject: SubjectState) -> bool:
    """A host in a wave other than its target's (a canary-host wave's): it counts there as a host, not a target."""
    target_wave = report.waves.get(subject.target or "")
    return subject.wave is not None and target_wave is not None and subject.wave != target_wave


def in_wave_order(report: DriftReport, waves: Iterable[str]) -> list[str]:
    """Waves in the policy's (promotion) order; a wave the report's order does not list, by name, after them."""
    order = report.wave_order
    return sorted(set(waves), key=lambda w: (order.index(w) if w in order else len(order), w))


def _hosts(found: Sequence[SubjectState]) -> list[SubjectState]:
    """The subjects that are hosts or objects, not a pool's "no host reports" placeholder."""
    return [s for s in found if not any(i.kind == NO_HOSTS for i in s.items)]


def target_rows(report: DriftReport) -> list[dict[str, Any]]:
    """One row per target (and per scope's shared objects, target None): its state is its worst subject's.

    `counts` (state -> subjects) and `not_converged` (subject names) make the per-pool summary line.
    """
    rows: dict[tuple[str, str, str | None], list[SubjectState]] = {}
    for subject in report.subjects:
        rows.setdefault((subject.platform, subject.scope, subject.target), []).append(subject)
    result = []
    for (platform, scope, target), found in sorted(
        rows.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or "")
    ):
        counted = _hosts(found)
        # MANIFEST names the target's own wave; its canary hosts' waves are theirs, not the target's
        pinned = report.waves.get(target or "")
        waves = {pinned} if pinned else {_wave(report, s) for s in found}
        result.append(
            {
                "target": target,
                "platform": platform,
                "scope": scope,
                "wave": waves.pop() if len(waves) == 1 else None,
                "state": worst(s.state for s in found),
                "subjects": len(counted),
                "converged": sum(s.state == CONVERGED for s in counted),
                "counts": dict(sorted(Counter(s.state for s in counted).items())),
                "not_converged": [s.subject for s in counted if s.state not in _PASSING],
            }
        )
    return result


def wave_rows(report: DriftReport) -> list[dict[str, Any]]:
    """Per wave (MANIFEST rollout, a host's own wave), in promotion order, its targets and hosts and what holds it
    back; [] without waves.

    A canary host counts in its own wave as a host, not in its pool's, and not as a target: a canary-host wave
    takes no whole targets, so its `targets` is 0. `not_converged` names targets (Kubernetes), hosts and pools
    no host reports for (Puppet), and every target of the wave with no evidence at all, as the promote gate
    blocks on it (`--partial` without its cluster's dump or PuppetDB): counted, never converged, the wave
    `incomplete`.
    """
    waves: dict[str, list[SubjectState]] = {}
    for subject in report.subjects:
        wave = _wave(report, subject)
        if wave is not None:
            waves.setdefault(wave, []).append(subject)
    seen = {s.target for s in report.subjects if not _canary_host(report, s)}
    unseen: dict[str, list[str]] = {}
    for target, wave in sorted(report.waves.items()):
        if target not in seen and report.no_data(target):
            unseen.setdefault(wave, []).append(target)
    return [
        _wave_row(report, wave, waves.get(wave, ()), unseen.get(wave, ()))
        for wave in in_wave_order(report, waves.keys() | unseen.keys())
    ]


def _wave_row(
    report: DriftReport, wave: str, found: Sequence[SubjectState], unseen: Sequence[str]
) -> dict[str, Any]:
    targets: dict[str, list[SubjectState]] = {target: [] for target in unseen}
    for subject in found:
        if not _canary_host(report, subject):
            targets.setdefault(subject.target or "", []).append(subject)
    hosts = [s for s in _hosts(found) if s.platform == HOST_PLATFORM]
    held = sorted(
        {
            t
            for t, subjects in targets.items()
            if any(s.platform != HOST_PLATFORM and s.state not in _PASSING for s in subjects)
        }
    )
    held += [s.subject for s in found if s.platform == HOST_PLATFORM and s.state not in _PASSING]
    held += [f"{target} (not checked)" for target in unseen]
    return {
        "wave": wave,
        "targets": len(targets),
        "converged": sum(
            bool(subjects) and all(s.state in _PASSING for s in subjects) for subjects in targets.values()
        ),
        "hosts": len(hosts),
        "counts": dict(sorted(Counter(s.state for s in hosts).items())),
        "state": _rollup({s.state for s in found} | ({NOT_CHECKED} if unseen else set())),
        "not_converged": held,
    }


def _rollup(states: set[str]) -> str:
    """As a scope's state: drifted (anything failing), incomplete (pools with no data), pending, converged."""
    left = states - set(_PASSING)
    if left - {PENDING, NOT_CHECKED}:
        return DRIFTED
    return INCOMPLETE if NOT_CHECKED in left else PENDING if left else CONVERGED


def summary_line(row: Mapping[str, Any], limit: int = SUMMARY_NAMES) -> str:
    """`vm/upload/sjc: 118/120 converged, 1 pending, 1 failed: host-17` (a target row of pool_rows)."""
    if row["subjects"] == 0:
        return f"{row['target']}: no hosts report to PuppetDB"
    counts = row["counts"]
    parts = [f"{row['target']}: {counts.get(CONVERGED, 0)}/{row['subjects']} converged"]
    parts += [f"{n} {state}" for state, n in ordered_counts(counts) if state != CONVERGED]
    names = list(row["not_converged"][:limit])
    names += [f"… {len(row['not_converged']) - limit} more"] if len(row["not_converged"]) > limit else []
    return ", ".join(parts) + (f": {', '.join(names)}" if names else "")


def ordered_counts(counts: Mapping[str, int]) -> list[tuple[str, int]]:
    """State counts in the order a summary shows them: pending, drifted, failed, unknown, then the rest by name."""
    return sorted(
        counts.items(), key=lambda kv: (_SHOWN.index(kv[0]) if kv[0] in _SHOWN else len(_SHOWN), kv[0])
    )


def wave_line(row: Mapping[str, Any], limit: int = SUMMARY_NAMES) -> str:
    """`canary: 3/3 targets converged, 2/3 hosts converged, 1 pending: host-17`; a canary-host wave, which holds
    no targets, only `canary-hosts: 33/34 hosts converged, 1 pending: host-17`."""
    parts = (
        [f"{row['converged']}/{row['targets']} targets converged"]
        if row["targets"] or not row["hosts"]
        else []
    )
    if row["hosts"]:
        counts = row["counts"]
        parts.append(f"{counts.get(CONVERGED, 0)}/{row['hosts']} hosts converged")
        parts += [f"{n} {state}" for state, n in ordered_counts(counts) if state != CONVERGED]
    names = list(row["not_converged"][:limit])
    names += [f"… {len(row['not_converged']) - limit} more"] if len(row["not_converged"]) > limit else []
    return f"{row['wave']}: " + ", ".join(parts) + (f": {', '.join(names)}" if names else "")


def pool_rows(report: DriftReport) -> list[dict[str, Any]]:
    """The target rows of hosts (Puppet pools), for the per-pool summary lines."""
    return [row for row in target_rows(report) if row["platform"] == HOST_PLATFORM and row["target"]]


def verdict(report: DriftReport) -> str:
    """One line: converged or not, and how much was checked."""
    checked = [s for s in report.scopes if s.state != NOT_CHECKED]
    unchecked = len(report.scopes) - len(checked)
    pending = sum(s.state == PENDING for s in report.subjects)
    head = (
        "NOT CONVERGED"
        if report.failing
        else f"converging: {pending} pending within the lag"
        if pending
        else "converged"
    )
    tail = f", {unchecked} not checked" + (" (--partial)" if report.partial else "") if unchecked else ""
    return f"meshc drift: {head}: {len(checked)} of {len(report.scopes)} scope(s) checked{tail}"


def orphan_commands(report: DriftReport) -> list[str]:
    """`kubectl delete` commands for unacknowledged orphans, per scope in reverse apply order."""
    return [s.delete_command for s in report.subjects if s.delete_command and s.state != ACKNOWLEDGED]
