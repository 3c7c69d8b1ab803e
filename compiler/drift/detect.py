"""Assemble one drift report from every platform's checked scopes: acknowledgements, counts, waves.

Each platform checks its own evidence (compiler.drift.kubernetes per cluster dump; compiler.drift.puppet
per PuppetDB or facts export, and the deployed hiera tree) and hands back (ScopeState, subjects); scopes
the spec has but no evidence was given for are passed as `unchecked`. Nothing here knows a platform's
item kinds.
"""

from __future__ import annotations

import datetime
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson

from compiler.backends.kubernetes.layout import ROOT as KUBE_ROOT
from compiler.diagnostics import EnvironmentFailure, did_you_mean
from compiler.drift import puppet
from compiler.drift.acknowledge import FILE_NAME as ACK_FILE
from compiler.drift.acknowledge import acknowledge, mark_used, read_acknowledgements
from compiler.drift.hiera import POOLS_DIR
from compiler.drift.kube_dump import parse_dump, read_dump_file
from compiler.drift.kubernetes import PLATFORM, check_cluster, expected_objects
from compiler.drift.model import (
    ACKNOWLEDGED,
    CONVERGED,
    DRIFTED,
    EXPIRED_ACKNOWLEDGEMENT,
    INCOMPLETE,
    NOT_CHECKED,
    ORPHAN,
    PENDING,
    UNACKNOWLEDGEABLE,
    Acknowledgement,
    DriftInputError,
    DriftItem,
    DriftReport,
    ScopeState,
    SubjectState,
)
from compiler.drift.puppet_records import hiera_records, host_records
from compiler.drift.puppetdb import read_export, read_puppetdb
from compiler.ir.model import Mesh
from compiler.output.manifest import MANIFEST
from compiler.pipeline import compile_dir, lower_dir
from compiler.spec.document import MAX_FILE_BYTES


def assemble_report(
    checked: Sequence[tuple[ScopeState, Sequence[SubjectState]]],
    unchecked: Sequence[tuple[str, str]],
    *,
    acknowledgements: Sequence[Acknowledgement] = (),
    tree: Mapping[str, bytes] | None = None,
    wave_order: Sequence[str] = (),
    partial: bool = False,
    today: str = "",
) -> DriftReport:
    """The report: acknowledged items applied, scope counts taken, unchecked (platform, scope) pairs listed.

    The waves' order is MANIFEST.json's rollout's, else `wave_order` (the wave policy's, for a build without one).
    """
    used: set[str] = set()
    scopes: list[ScopeState] = []
    subjects: list[SubjectState] = []
    for scope, found in checked:
        judged = [_acknowledged(subject, acknowledgements, used) for subject in found]
        counts = Counter(
            ORPHAN if s.state == DRIFTED and any(i.kind == ORPHAN for i in s.items) else s.state
            for s in judged
        )
        scopes.append(replace(scope, state=_scope_state(judged), counts=dict(sorted(counts.items()))))
        subjects += judged
    scopes += [ScopeState(platform=platform, scope=name, state=NOT_CHECKED) for platform, name in unchecked]
    expired = tuple(
        DriftItem(
            kind=EXPIRED_ACKNOWLEDGEMENT,
            platform="meshc",
            scope="acknowledgements",
            subject=ack.location,
            expected=ack.match,
            live=ack.expires,
            detail=f"expired on {ack.expires}: {ack.reason}",
        )
        for ack in acknowledgements
        if ack.expired
    )
    return DriftReport(
        scopes=tuple(sorted(scopes, key=lambda s: (s.platform, s.scope))),
        subjects=tuple(subjects),
        findings=expired,
        acknowledgements=mark_used(acknowledgements, used),
        waves=waves_of(tree or {}),
        wave_order=wave_order_of(tree or {}) or tuple(wave_order),
        partial=partial,
        today=today,
    )


def _scope_state(subjects: Sequence[SubjectState]) -> str:
    """The worst of its subjects: drifted (anything failing), incomplete (pools with no data), pending, converged.

    Not-checked subjects (a pool no host reports for) fail the run themselves unless --partial; the
    scope is not called drifted for them, so --partial can lift them.
    """
    states = {s.state for s in subjects} - {CONVERGED, ACKNOWLEDGED}
    if states - {PENDING, NOT_CHECKED}:
        return DRIFTED
    return INCOMPLETE if NOT_CHECKED in states else PENDING if states else CONVERGED


def _acknowledged(
    subject: SubjectState, acknowledgements: Sequence[Acknowledgement], used: set[str]
) -> SubjectState:
    """The subject with each accepted item carrying its reason; ACKNOWLEDGED when every item is accepted. Only
    drift is accepted (never an item of UNACKNOWLEDGEABLE: no data or a failed run)."""
    if not subject.items or not acknowledgements:
        return subject
    items = []
    for item in subject.items:
        ack = None if item.kind in UNACKNOWLEDGEABLE else acknowledge(item.id, acknowledgements)
        if ack is not None:
            used.add(ack.location)
            item = replace(item, acknowledged=ack.reason)
        items.append(item)
    state = ACKNOWLEDGED if all(i.acknowledged for i in items) else subject.state
    return replace(subject, items=tuple(items), state=state)


def wave_order_of(tree: Mapping[str, bytes]) -> tuple[str, ...]:
    """The waves in promotion order from MANIFEST.json's `rollout.waves` (contract 4); () without a rollout."""
    raw = tree.get(MANIFEST)
    rollout = (orjson.loads(raw).get("rollout") or {}) if raw is not None else {}
    return tuple(str(wave["name"]) for wave in rollout.get("waves") or () if "name" in wave)


def waves_of(tree: Mapping[str, bytes]) -> dict[str, str]:
    """target -> wave from MANIFEST.json's `rollout.targets` (contract 4), {} when no rollout is in force."""
    raw = tree.get(MANIFEST)
    if raw is None:
        return {}
    rollout = orjson.loads(raw).get("rollout") or {}
    return {
        target: str(entry["wave"])
        for target, entry in sorted((rollout.get("targets") or {}).items())
        if "wave" in entry
    }


@dataclass(frozen=True, kw_only=True, slots=True)
class DriftRequest:
    """What `meshc drift` was asked to check; each platform's evidence is one field (the Puppet half adds its own)."""

    spec: Path
    kubernetes: tuple[tuple[str, Path], ...] = ()  # (cluster, dump file), as given on the command line
    acknowledgements: Path | None = None  # None: <spec>/drift-acknowledgements.yaml if it exists
    puppet: PuppetEvidence = field(default_factory=lambda: PuppetEvidence())
    today: datetime.date
    partial: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class PuppetEvidence:
    """The VMs' evidence: PuppetDB (URL and TLS files) or a facts export, the deployed hiera tree, and the lag."""

    puppetdb: str | None = None
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    facts: Path | None = None  # an export file instead of a PuppetDB
    hiera: Path | None = None
    lag: datetime.timedelta = puppet.DEFAULT_LAG
    since: datetime.datetime | None = None  # when the rendering was deployed, unless --hiera tells per file
    now: datetime.datetime | None = None  # None: the clock; pinned by tests

    @property
    def given(self) -> bool:
        """Any Puppet evidence on the command line."""
        return bool(self.puppetdb or self.facts or self.hiera)


@dataclass(frozen=True, kw_only=True, slots=True)
class Evidence:
    """What one platform's check found: the scopes checked, with their subjects; the scopes with no evidence."""

    given: bool  # any evidence for this platform on the command line
    checked: tuple[tuple[ScopeState, tuple[SubjectState, ...]], ...] = ()
    unchecked: tuple[tuple[str, str], ...] = ()  # (platform, scope)
    hint: str = ""  # how to give evidence, for the "nothing to check" error


def detect_drift(
    request: DriftRequest,
    tree: Mapping[str, bytes] | None = None,
    *,
    values: Mapping[str, Any] | None = None,
    require_evidence: bool = True,
) -> DriftReport:
    """Compile the spec (the truth, as `check` does), check every platform's evidence against it, assemble the report.

    The truth is what `meshc build` writes: with a rollout in force, each target's and canary host's wave's
    rendering (contract 7); `tree` gives it when the caller has it, and `values` what its files serialize where the
    caller holds that too (else the Kubernetes files are parsed). Without evidence, DriftInputError,
    unless `require_evidence` is False (the promote gate: no data there blocks, it is not a usage error).
    """
    mesh, truth = _truth(request.spec, tree, values)
    acknowledgements = _acknowledgements(request)
    # Reading dumps builds millions of acyclic dicts: the command line pauses the cycle collector for
    # the whole command (cli.main), which made reading a 1,000-service mesh's YAML dumps 3x faster.
    found = [check(request, mesh, truth) for check in PLATFORM_CHECKS]
    if require_evidence and not any(evidence.given for evidence in found):
        raise DriftInputError(
            "meshc drift", "nothing to check: give " + "; or ".join(e.hint for e in found), "drift-usage"
        )
    return assemble_report(
        [c for e in found for c in e.checked],
        [u for e in found for u in e.unchecked],
        acknowledgements=acknowledgements,
        tree=truth.tree,
        wave_order=truth.wave_order,
        partial=request.partial,
        today=request.today.isoformat(),
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class Truth:
    """What `meshc build` writes for the spec: each file's bytes, and the objects of each Kubernetes file where the
    build that rendered them held them (kubernetes.expected_objects reads those instead of parsing the bytes)."""

    tree: Mapping[str, bytes]
    objects: Mapping[str, Sequence[Mapping[str, Any]]] = field(default_factory=dict)
    # Without a rollout, MANIFEST.json lists no waves, but the pools' data names theirs: the policy orders them.
    wave_order: tuple[str, ...] = ()


def _truth(
    spec: Path, tree: Mapping[str, bytes] | None, values: Mapping[str, Any] | None
) -> tuple[Mesh, Truth]:
    """The head's model (mesh name, clusters) and what `meshc build` writes for the spec, rendering the head once.

    Without a rollout that is the plain build. With one (or when the caller holds the tree), the head is
    only lowered here: the rollout build renders it among every wave's revision.
    """
    from compiler.rollout.pins import ROLLOUT_FILE

    # a rollout.yaml that is no file is an error there
    if tree is None and not os.path.lexists(spec / ROLLOUT_FILE):
        build = compile_dir(spec, values=True)
        policy = build.spec.mesh.rollout
        return build.mesh, Truth(
            tree=build.tree(),
            objects=kube_objects({a.path: a.value for a in build.artifacts}),
            wave_order=policy.names if policy is not None else (),
        )
    if tree is None:
        # compiles every wave's revision: only with a rollout
        from compiler.rollout.output import output_truth

        tree, values = output_truth(spec)
    return lower_dir(spec), Truth(tree=tree, objects=kube_objects(values or {}))


def kube_objects(values: Mapping[str, Any]) -> dict[str, Any]:
    """The values of the Kubernetes files among `values` (path -> the data a file's bytes serialize)."""
    return {path: value for path, value in values.items() if path.startswith(f"{KUBE_ROOT}/") and value}


def check_kubernetes(request: DriftRequest, mesh: Mesh, truth: Truth) -> Evidence:
    """Each cluster dump given against the cluster's rendering; the spec's other clusters are not checked."""
    clusters = sorted(mesh.clusters)
    dumps = _dump_files(request.kubernetes, clusters)
    hint = f"--kubernetes CLUSTER=DUMP for each cluster ({', '.join(clusters) or 'the spec has none'})"
    if not dumps:
        return Evidence(given=False, unchecked=tuple((PLATFORM, c) for c in clusters), hint=hint)
    expected = expected_objects(truth.tree, truth.objects)
    checked = tuple(
        check_cluster(
            mesh.name, cluster, expected.get(cluster, []), parse_dump(str(path), read_dump_file(path))
        )
        for cluster, path in dumps.items()
    )
    return Evidence(
        given=True,
        checked=tuple((scope, tuple(subjects)) for scope, subjects in checked),
        unchecked=tuple((PLATFORM, c) for c in clusters if c not in dumps),
        hint=hint,
    )


def check_puppet(request: DriftRequest, mesh: Mesh, truth: Truth) -> Evidence:
    """The VM hosts (PuppetDB or an export) against their pool or canary node file; --hiera: the deployed tree."""
    del mesh  # the built tree holds everything the Puppet half compares
    tree = truth.tree
    evidence = request.puppet
    has_vms = any(path.startswith(POOLS_DIR) for path in tree)
    unchecked = ((puppet.PLATFORM, "puppetdb"),) if has_vms else ()
    hint = "--puppetdb URL (with --puppetdb-ca/-cert/-key for HTTPS) or --puppet-facts FILE for the VMs"
    if not evidence.given:
        return Evidence(given=False, unchecked=unchecked, hint=hint)
    observations = None
    if evidence.puppetdb:
        observations = read_puppetdb(
            evidence.puppetdb,
            cafile=_str(evidence.ca),
            certfile=_str(evidence.cert),
            keyfile=_str(evidence.key),
        )
    elif evidence.facts is not None:
        observations = read_export(evidence.facts)
    now = evidence.now or datetime.datetime.now(datetime.UTC)
    vms = puppet.check_vms(
        tree,
        observations,
        puppet.Policy(now=now, lag=evidence.lag, since=evidence.since),
        hiera=evidence.hiera,
        inventory=_inventory(request.spec),
    )
    checked = ([host_records(vms.hosts)] if vms.hosts is not None else []) + (
        [hiera_records(evidence.hiera, vms.hiera, tree)]
        if evidence.hiera is not None and vms.hiera is not None
        else []
    )
    return Evidence(
        given=True, checked=tuple(checked), unchecked=unchecked if observations is None else (), hint=hint
    )


def _inventory(spec_dir: Path) -> dict[str, str]:
    """certname -> pool id of every host of the spec's inventory/hosts.yaml ({} without one)."""
    from compiler.rollout.hosts import INVENTORY_FILE, load_inventory
    from compiler.spec.load import spec_label

    label = f"{spec_label(spec_dir)}/{INVENTORY_FILE}"
    return {host.certname: host.pool for host in load_inventory(spec_dir / INVENTORY_FILE, label)}


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)


# One check per platform, each reading its own fields of DriftRequest.
PLATFORM_CHECKS: tuple[Callable[[DriftRequest, Mesh, Truth], Evidence], ...] = (
    check_kubernetes,
    check_puppet,
)


def _dump_files(pairs: Sequence[tuple[str, Path]], clusters: Sequence[str]) -> dict[str, Path]:
    """CLUSTER=DUMP pairs checked against the spec's clusters: an unknown cluster or one given twice is an error."""
    found: dict[str, Path] = {}
    for cluster, path in pairs:
        if cluster not in clusters:
            raise DriftInputError(
                f"--kubernetes {cluster}={path}",
                f"the spec has no cluster {cluster!r}"
                f"{did_you_mean(cluster, clusters)}; its clusters: {', '.join(clusters) or 'none'}",
                "drift-usage",
            )
        if cluster in found:
            raise DriftInputError(
                f"--kubernetes {cluster}={path}",
                f"cluster {cluster!r} is given twice; one dump per cluster",
                "drift-usage",
            )
        found[cluster] = path
    return found


def _acknowledgements(request: DriftRequest) -> tuple[Acknowledgement, ...]:
    path = request.acknowledgements or request.spec / ACK_FILE
    if request.acknowledgements is None and not path.is_file():
        return ()
    try:
        # one byte past a spec file's cap: parse_document reports it, /dev/zero ends
        with path.open("rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
        raise DriftInputError(
            str(path), f"cannot read the acknowledgements file: {exc.strerror}", "drift-acknowledgement"
        ) from None
    except OSError as exc:
        raise EnvironmentFailure(str(path), exc.strerror or type(exc).__name__) from None
    return read_acknowledgements(str(path), raw, request.today)
