"""Assemble one drift report from every platform's checked scopes: acknowledgements, counts, waves.

Each platform checks its own evidence (compiler.drift.kubernetes per cluster dump; the Puppet half
per PuppetDB or facts export) and hands back (ScopeState, subjects); scopes the spec has but no
evidence was given for are passed as `unchecked`. Nothing here knows a platform's item kinds.
"""

from __future__ import annotations

import datetime
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import orjson

from compiler.diagnostics import EnvironmentFailure, did_you_mean
from compiler.drift.acknowledge import FILE_NAME as ACK_FILE
from compiler.drift.acknowledge import acknowledge, mark_used, read_acknowledgements
from compiler.drift.kubernetes import PLATFORM, check_cluster, expected_objects, parse_dump, read_dump_file
from compiler.drift.model import (ACKNOWLEDGED, CONVERGED, DRIFTED, EXPIRED_ACKNOWLEDGEMENT, NOT_CHECKED, ORPHAN,
                                  Acknowledgement, DriftInputError, DriftItem, DriftReport, ScopeState, SubjectState)
from compiler.emit import MANIFEST
from compiler.pipeline import Build, collector_paused, compile_dir


def assemble_report(checked: Sequence[tuple[ScopeState, Sequence[SubjectState]]], unchecked: Sequence[tuple[str, str]], *,
                    acknowledgements: Sequence[Acknowledgement] = (), tree: Mapping[str, bytes] | None = None,
                    partial: bool = False, today: str = "") -> DriftReport:
    """The report: acknowledged items applied, scope counts taken, unchecked (platform, scope) pairs listed."""
    used: set[str] = set()
    scopes: list[ScopeState] = []
    subjects: list[SubjectState] = []
    for scope, found in checked:
        judged = [_acknowledged(subject, acknowledgements, used) for subject in found]
        counts = Counter(ORPHAN if s.delete_command and s.state == DRIFTED else s.state for s in judged)
        state = DRIFTED if any(s.state not in (CONVERGED, ACKNOWLEDGED) for s in judged) else CONVERGED
        scopes.append(replace(scope, state=state, counts=dict(sorted(counts.items()))))
        subjects += judged
    scopes += [ScopeState(platform=platform, scope=name, state=NOT_CHECKED) for platform, name in unchecked]
    expired = tuple(DriftItem(kind=EXPIRED_ACKNOWLEDGEMENT, platform="meshc", scope="acknowledgements", subject=ack.location,
                              expected=ack.match, live=ack.expires, detail=f"expired on {ack.expires}: {ack.reason}")
                    for ack in acknowledgements if ack.expired)
    return DriftReport(scopes=tuple(sorted(scopes, key=lambda s: (s.platform, s.scope))), subjects=tuple(subjects),
                       findings=expired, acknowledgements=mark_used(acknowledgements, used),
                       waves=waves_of(tree or {}), partial=partial, today=today)


def _acknowledged(subject: SubjectState, acknowledgements: Sequence[Acknowledgement], used: set[str]) -> SubjectState:
    """The subject with each accepted item carrying its reason; ACKNOWLEDGED when every item is accepted."""
    if not subject.items or not acknowledgements:
        return subject
    items = []
    for item in subject.items:
        ack = acknowledge(item.id, acknowledgements)
        if ack is not None:
            used.add(ack.location)
            item = replace(item, acknowledged=ack.reason)
        items.append(item)
    state = ACKNOWLEDGED if all(i.acknowledged for i in items) else subject.state
    return replace(subject, items=tuple(items), state=state)


def waves_of(tree: Mapping[str, bytes]) -> dict[str, str]:
    """target -> wave from MANIFEST.json's `rollout.targets` (contract 4), {} when no rollout is in force."""
    raw = tree.get(MANIFEST)
    if raw is None:
        return {}
    rollout = orjson.loads(raw).get("rollout") or {}
    return {target: str(entry["wave"]) for target, entry in sorted((rollout.get("targets") or {}).items()) if "wave" in entry}


@dataclass(frozen=True, kw_only=True, slots=True)
class DriftRequest:
    """What `meshc drift` was asked to check; each platform's evidence is one field (the Puppet half adds its own)."""

    spec: Path
    kubernetes: tuple[tuple[str, Path], ...] = ()  # (cluster, dump file), as given on the command line
    acknowledgements: Path | None = None  # None: <spec>/drift-acknowledgements.yaml if it exists
    today: datetime.date
    partial: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class Evidence:
    """What one platform's check found: the scopes checked, with their subjects, and the spec's scopes with no evidence."""

    given: bool  # any evidence for this platform on the command line
    checked: tuple[tuple[ScopeState, tuple[SubjectState, ...]], ...] = ()
    unchecked: tuple[tuple[str, str], ...] = ()  # (platform, scope)
    hint: str = ""  # how to give evidence, for the "nothing to check" error


def detect_drift(request: DriftRequest) -> DriftReport:
    """Compile the spec (the truth, as `check` does), check every platform's evidence against it, assemble the report."""
    build = compile_dir(request.spec)
    tree = build.tree()
    acknowledgements = _acknowledgements(request)
    # Reading dumps builds millions of acyclic dicts; the cycle collector walking them all tripled
    # the time to read a 1,000-service mesh's YAML dumps (make bench, meshc-drift), as in compile().
    with collector_paused():
        found = [check(request, build, tree) for check in PLATFORM_CHECKS]
    if not any(evidence.given for evidence in found):
        raise DriftInputError("meshc drift", "nothing to check: give " + "; or ".join(e.hint for e in found), "drift-usage")
    return assemble_report([c for e in found for c in e.checked], [u for e in found for u in e.unchecked],
                           acknowledgements=acknowledgements, tree=tree, partial=request.partial, today=request.today.isoformat())


def check_kubernetes(request: DriftRequest, build: Build, tree: Mapping[str, bytes]) -> Evidence:
    """Each cluster dump given against the cluster's rendering; the spec's other clusters are not checked."""
    clusters = sorted(build.mesh.clusters)
    dumps = _dump_files(request.kubernetes, clusters)
    hint = f"--kubernetes CLUSTER=DUMP for each cluster ({', '.join(clusters) or 'the spec has none'})"
    if not dumps:
        return Evidence(given=False, unchecked=tuple((PLATFORM, c) for c in clusters), hint=hint)
    expected = expected_objects(tree)
    checked = tuple(check_cluster(build.mesh.name, cluster, expected.get(cluster, []), parse_dump(str(path), read_dump_file(path)))
                    for cluster, path in dumps.items())
    return Evidence(given=True, checked=tuple((scope, tuple(subjects)) for scope, subjects in checked),
                    unchecked=tuple((PLATFORM, c) for c in clusters if c not in dumps), hint=hint)


# One check per platform, each reading its own fields of DriftRequest; the Puppet half adds its own here.
PLATFORM_CHECKS: tuple[Callable[[DriftRequest, Build, Mapping[str, bytes]], Evidence], ...] = (check_kubernetes,)


def _dump_files(pairs: Sequence[tuple[str, Path]], clusters: Sequence[str]) -> dict[str, Path]:
    """CLUSTER=DUMP pairs checked against the spec's clusters: an unknown cluster or one given twice is an error."""
    found: dict[str, Path] = {}
    for cluster, path in pairs:
        if cluster not in clusters:
            raise DriftInputError(f"--kubernetes {cluster}={path}", f"the spec has no cluster {cluster!r}"
                                  f"{did_you_mean(cluster, clusters)}; its clusters: {', '.join(clusters) or 'none'}", "drift-usage")
        if cluster in found:
            raise DriftInputError(f"--kubernetes {cluster}={path}", f"cluster {cluster!r} is given twice; one dump per cluster",
                                  "drift-usage")
        found[cluster] = path
    return found


def _acknowledgements(request: DriftRequest) -> tuple[Acknowledgement, ...]:
    path = request.acknowledgements or request.spec / ACK_FILE
    if request.acknowledgements is None and not path.is_file():
        return ()
    try:
        raw = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
        raise DriftInputError(str(path), f"cannot read the acknowledgements file: {exc.strerror}", "drift-acknowledgement") from None
    except OSError as exc:
        raise EnvironmentFailure(str(path), exc.strerror or type(exc).__name__) from None
    return read_acknowledgements(str(path), raw, request.today)
