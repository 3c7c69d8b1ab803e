"""The promote gate: whether every target and host of a wave has converged, judged from one drift report.

Stricter than `meshc drift`'s exit code: `pending` blocks (a host on its way is not there yet), and
no data is never a pass whatever --partial says: a target of the wave in a cluster no dump was given
for, VM targets without PuppetDB evidence, a pool of the wave no host reports for (its `no-hosts`
subject), a canary or inventory host PuppetDB does not know (unknown) all block.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from compiler.drift.model import BLOCKING_STATES, KUBERNETES, DriftReport, SubjectState

if TYPE_CHECKING:
    from compiler.drift.detect import DriftRequest
    from compiler.rollout.revisions import Context


@dataclass(frozen=True, kw_only=True, slots=True)
class GateVerdict:
    """Whether `wave` has converged: what blocks it (one line each) and the evidence the verdict read."""

    wave: str
    blocking: tuple[str, ...]
    evidence: tuple[str, ...]

    @property
    def passed(self) -> bool:
        """Nothing blocks: every target and host of the wave converged, on evidence."""
        return not self.blocking


def wave_verdict(report: DriftReport, wave: str) -> GateVerdict:
    """Every target and host of `wave` that is not converged, or has no data.

    A target's wave is MANIFEST's rollout targets; a host has its own wave."""
    blocking = [
        _subject_line(s)
        for s in report.subjects
        if _wave_of(report.waves, s) == wave and s.state in BLOCKING_STATES
    ]
    for target in sorted(t for t, w in report.waves.items() if w == wave):
        reason = report.no_data(target)
        if reason:
            blocking.append(f"{target}: not checked: {reason}")
    evidence = tuple(s.evidence for s in report.scopes if s.evidence)
    return GateVerdict(wave=wave, blocking=tuple(blocking), evidence=evidence)


def _wave_of(waves: Mapping[str, str], subject: SubjectState) -> str | None:
    return subject.wave or waves.get(subject.target or "")


def _subject_line(subject: SubjectState) -> str:
    """`vm/upload/sjc upload-17.sjc.example: pending (envoy/cds.json: applied 0000…, expected 3f2a…)`; an object
    names the fields that differ (three at most), then once the note they share: `… ConfigMap/upload/upload-mesh-envoy:
    drifted (modified data[lds.json].version_info; …; kube-applier has not applied this rendering yet: …)`."""
    items = [i for i in subject.items if not i.acknowledged]
    if subject.platform == KUBERNETES:
        named = [f"{i.kind} {i.path}" if i.path else i.detail or i.kind for i in items]
        notes = list(dict.fromkeys(i.detail for i in items if i.path and i.detail))
    else:
        named, notes = [i.detail or (f"{i.kind} {i.path}" if i.path else i.kind) for i in items], []
    reasons = named[:3] + (["…"] if len(named) > 3 else []) + notes
    where = (
        f"{subject.target} {subject.subject}"
        if subject.target and subject.target != subject.subject
        else subject.subject
    )
    return f"{where}: {subject.state}" + (f" ({'; '.join(reasons)})" if reasons else "")


class GateRefused(Exception):
    """`meshc promote` refused by the gate: the wave before has not converged (exit 1); str() names what blocks."""

    def __init__(self, wave: str, verdict: GateVerdict, evidence: str) -> None:
        self.wave, self.verdict = wave, verdict
        super().__init__(_refusal(wave, verdict, evidence))


SHOWN = 10  # blockers named in a refusal before "… n more"; the drift report has them all


def promotion_gate(request: DriftRequest, force: bool) -> Callable[[Context, str], str | None]:
    """`meshc promote`'s gate: drift of the wave before the one about to move, against the rollout as it stands.

    Refuses (GateRefused) while anything of that wave blocks; with `force`, lets it through and returns
    the note promote records (printed, and the pin's comment in rollout.yaml).
    """
    from compiler.drift.detect import detect_drift
    from compiler.rollout.build import rollout_state_of, rollout_truth

    def gate(context: Context, wave: str) -> str | None:
        names = list(context.policy.names)
        before = names[names.index(wave) - 1]  # the first wave is never promoted, so there is one before
        tree, values = rollout_truth(context, rollout_state_of(context))
        report = detect_drift(request, tree, values=values, require_evidence=False)
        verdict = wave_verdict(report, before)
        if verdict.passed:
            return None
        evidence = ", ".join(verdict.evidence) or "none given"
        if not force:
            raise GateRefused(wave, verdict, evidence)
        return (
            f"forced past the drift gate on {request.today.isoformat()}: wave {before} had {len(verdict.blocking)} "
            f"not converged ({'; '.join(verdict.blocking[:3])}{'; …' if len(verdict.blocking) > 3 else ''}); "
            f"evidence: {evidence}"
        )

    return gate


def _refusal(wave: str, verdict: GateVerdict, evidence: str) -> str:
    lines = [
        f"wave {wave} is not promoted: {len(verdict.blocking)} target(s) or host(s) of wave {verdict.wave} "
        f"have not converged (evidence read: {evidence}); --force overrides, and is recorded"
    ]
    lines += [f"  {line}" for line in verdict.blocking[:SHOWN]]
    lines += (
        [f"  … {len(verdict.blocking) - SHOWN} more (meshc drift --format json has them all)"]
        if len(verdict.blocking) > SHOWN
        else []
    )
    return "\n".join(lines)
