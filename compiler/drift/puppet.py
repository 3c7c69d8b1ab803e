"""Puppet drift: per VM host, whether the documents the `mesh` module applied are the ones meshc renders for it.

What meshc renders comes from the built tree (contract 7: path -> bytes, MANIFEST.json included):
each pool's data file `puppet/data/pools/<service>/<dc>.json` and each canary host's node file
`puppet/data/nodes/<certname>.json` carry `mesh::document_hashes` (contract 5). What runs comes
from PuppetDB (or an export of it): per node, the module's `mesh_applied` fact (the hash of every
document it wrote, or `edited:sha256:…` for a file changed by hand since) and its latest report.
Results are records; formatting is the caller's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

import orjson

from compiler.backends.puppet import HASHES_KEY
from compiler.drift.hiera import NODES_DIR, POOLS_DIR, compare_hiera, deployed_times, unescape
from compiler.drift.model import DriftInputError
from compiler.drift.puppetdb import EDITED, FACT, MISSING, UNHASHED, Applied, Node, Observations
from compiler.output.compare import TreeStatus
from compiler.output.manifest import MANIFEST
from compiler.rollout.hosts import INVENTORY_FILE

PLATFORM = "puppet"
DEFAULT_LAG = timedelta(minutes=30)  # Puppet's default runinterval
DEFAULT_STALE_AFTER = timedelta(hours=2)
CACHED_CATALOG = ("on_failure", "explicitly_requested")  # the node ran a catalog it had, not the current one


class HostState(StrEnum):
    """Where one host stands; only `converged` is a pass."""

    CONVERGED = "converged"
    PENDING = "pending"
    DRIFTED = "drifted"
    FAILED = "failed"
    UNKNOWN = "unknown"


@dataclass(frozen=True, kw_only=True, slots=True)
class Expectation:
    """What meshc renders for one pool or canary host: its data file, pool, wave and document hashes."""

    path: str
    workload: str
    wave: str | None
    hashes: Mapping[str, str]


@dataclass(frozen=True, kw_only=True, slots=True)
class Rendering:
    """Every expectation of a built tree: pools by workload id, canary hosts by certname."""

    pools: Mapping[str, Expectation]
    nodes: Mapping[str, Expectation]


@dataclass(frozen=True, kw_only=True, slots=True)
class Policy:
    """How long to wait: `lag` after a rendering is deployed (`deployed_at` per data file, else `since`)."""

    now: datetime
    lag: timedelta = DEFAULT_LAG
    stale_after: timedelta = DEFAULT_STALE_AFTER
    since: datetime | None = None
    deployed_at: Mapping[str, datetime] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True, slots=True)
class HostDrift:
    """One host's state and why; `target` is its pool, `canary` whether a node file overrides it."""

    certname: str
    target: str
    wave: str | None
    canary: bool
    state: HostState
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class Summary:
    """Host counts of one pool or wave; `not_converged` names the hosts that hold it back."""

    name: str
    hosts: int
    counts: Mapping[HostState, int]
    not_converged: tuple[str, ...]

    @property
    def converged(self) -> bool:
        """Every host converged, and there is at least one: no data is not a pass."""
        return self.hosts > 0 and self.counts.get(HostState.CONVERGED, 0) == self.hosts


@dataclass(frozen=True, kw_only=True, slots=True)
class Orphan:
    """A host reporting mesh facts for a pool meshc does not render."""

    certname: str
    workload: str


@dataclass(frozen=True, kw_only=True, slots=True)
class PuppetDrift:
    """Puppet drift of a whole mesh: per host, per pool, per wave, and orphans."""

    source: str
    hosts: tuple[HostDrift, ...]
    pools: tuple[Summary, ...]
    waves: tuple[Summary, ...]
    orphans: tuple[Orphan, ...]
    documents: frozenset[str] = frozenset()  # every document name meshc renders for a VM

    @property
    def converged(self) -> bool:
        """Every pool converged (none without hosts) and no orphans."""
        return all(pool.converged for pool in self.pools) and not self.orphans


def expected_rendering(tree: Mapping[str, bytes]) -> Rendering:
    """The expectation of every pool and canary host in a built tree (path -> bytes)."""
    rollout = _manifest_rollout(tree.get(MANIFEST, b""))
    pools, nodes = {}, {}
    for path in sorted(tree):
        if path.startswith(POOLS_DIR) and path.endswith(".json"):
            expectation = _expectation(path, tree[path], rollout.get("targets", {}))
            pools[expectation.workload] = expectation
        elif path.startswith(NODES_DIR) and path.endswith(".json"):
            certname = path.removeprefix(NODES_DIR).removesuffix(".json")
            nodes[certname] = _expectation(path, tree[path], rollout.get("hosts", {}), key=certname)
    return Rendering(pools=pools, nodes=nodes)


def _manifest_rollout(raw: bytes) -> dict[str, Any]:
    """MANIFEST.json's `rollout` (contract 4), or {} when no rollout is in force."""
    try:
        rollout = json.loads(raw).get("rollout") if raw else None
    except (ValueError, AttributeError):
        raise DriftInputError(MANIFEST, "not a meshc MANIFEST.json", "drift-rendering") from None
    return rollout if isinstance(rollout, dict) else {}


def _expectation(path: str, raw: bytes, waves: Mapping[str, Any], key: str | None = None) -> Expectation:
    try:
        data = orjson.loads(unescape(raw))
    except orjson.JSONDecodeError as error:
        raise DriftInputError(path, f"not valid JSON: {error}", "drift-rendering") from None
    workload, hashes = data.get("mesh::workload"), data.get(HASHES_KEY)
    if not isinstance(workload, str) or not isinstance(hashes, dict):
        raise DriftInputError(
            path,
            f"no mesh::workload or {HASHES_KEY}: built by a meshc without drift support; rebuild",
            "drift-rendering",
        )
    pinned = waves.get(key or workload)
    wave = pinned.get("wave") if isinstance(pinned, dict) else data.get("mesh::wave")
    return Expectation(
        path=path, workload=workload, wave=wave if isinstance(wave, str) else None, hashes=hashes
    )


def detect_puppet_drift(
    rendering: Rendering,
    observations: Observations,
    policy: Policy,
    inventory: Mapping[str, str] | None = None,
) -> PuppetDrift:
    """Every mesh host judged against its pool or canary node file, summed up per pool and per wave.

    `inventory` (certname -> pool, the spec's inventory/hosts.yaml) names the hosts that must report: one PuppetDB
    does not know (no active node) is `unknown` in its pool, as a canary host PuppetDB does not know is. No data is
    not a pass: a pool whose other hosts are missing is not converged, even where its canary hosts, judged against
    their node files, all are (nothing then reports the pool's own rendering)."""
    hosts, orphans = [], []
    seen = set()
    for node in observations.nodes:
        seen.add(node.certname)
        expectation = rendering.nodes.get(node.certname)
        pool = node.pool or (node.applied.workload if node.applied else None)
        if expectation is None and pool is not None:
            expectation = rendering.pools.get(pool)
        if expectation is None:
            orphans.append(Orphan(certname=node.certname, workload=pool or "?"))
            continue
        state, reasons = judge_host(node, expectation, policy)
        hosts.append(_host(node.certname, expectation, node.certname in rendering.nodes, state, reasons))
    hosts += _missing(rendering, inventory or {}, seen)
    hosts.sort(key=lambda h: (h.target, h.certname))
    pools = [_summary(name, [h for h in hosts if h.target == name]) for name in sorted(rendering.pools)]
    waves = sorted(
        {h.wave for h in hosts if h.wave is not None} | {e.wave for e in rendering.pools.values() if e.wave}
    )
    return PuppetDrift(
        source=observations.source,
        hosts=tuple(hosts),
        pools=tuple(pools),
        waves=tuple(_summary(w, [h for h in hosts if h.wave == w]) for w in waves),
        orphans=tuple(orphans),
        documents=frozenset(
            name for e in (*rendering.pools.values(), *rendering.nodes.values()) for name in e.hashes
        ),
    )


def _missing(rendering: Rendering, inventory: Mapping[str, str], seen: set[str]) -> list[HostDrift]:
    """The canary hosts and inventory hosts of rendered pools that PuppetDB does not know: unknown, each in the
    pool or node file it would be judged against. An inventory host of a pool meshc does not render has nothing
    to be judged against (validate checks the inventory against the spec)."""
    missing = []
    for certname in sorted((set(rendering.nodes) | set(inventory)) - seen):
        canary = certname in rendering.nodes
        expectation = rendering.nodes[certname] if canary else rendering.pools.get(inventory[certname])
        if expectation is None:
            continue
        reason = (
            "no node in PuppetDB"
            if canary
            else f"no active node in PuppetDB, though {INVENTORY_FILE} lists it: "
            "if it is retired, regenerate the inventory"
        )
        missing.append(_host(certname, expectation, canary, HostState.UNKNOWN, (reason,)))
    return missing


def _host(
    certname: str, expectation: Expectation, canary: bool, state: HostState, reasons: Sequence[str]
) -> HostDrift:
    return HostDrift(
        certname=certname,
        target=expectation.workload,
        wave=expectation.wave,
        canary=canary,
        state=state,
        reasons=tuple(reasons),
    )


def judge_host(node: Node, expectation: Expectation, policy: Policy) -> tuple[HostState, list[str]]:
    """One host's state: evidence first (report, catalog, freshness, fact), then its documents' hashes."""
    if node.report_time is None:
        return HostState.UNKNOWN, ["no report in PuppetDB"]
    if node.report_status == "failed":
        return HostState.FAILED, [f"last Puppet run failed ({_ago(policy.now, node.report_time)})"]
    if node.cached_catalog_status in CACHED_CATALOG:
        return HostState.UNKNOWN, [f"last run used a cached catalog ({node.cached_catalog_status})"]
    stale = [
        f"{name} {_ago(policy.now, when)}"
        for name, when in (("facts", node.facts_time), ("report", node.report_time))
        if when is None or policy.now - when > policy.stale_after
    ]
    if stale:
        return HostState.UNKNOWN, [f"stale: {', '.join(stale)} (older than {_duration(policy.stale_after)})"]
    if node.applied is None:
        return HostState.UNKNOWN, [f"no {FACT} fact: the mesh class has not written its receipt yet"]
    if node.applied.error is not None:
        return HostState.UNKNOWN, [node.applied.error]
    edited, outdated = _compare_documents(node.applied, expectation)
    if edited:
        return HostState.DRIFTED, edited + outdated
    if not outdated:
        return HostState.CONVERGED, []
    return _outdated_state(node, expectation, policy), outdated


def _compare_documents(applied: Applied, expectation: Expectation) -> tuple[list[str], list[str]]:
    """(hand edits, documents not yet at the expected hash) as reasons, in document order."""
    edited, outdated = [], []
    if applied.workload is not None and applied.workload != expectation.workload:
        outdated.append(f"applied the data of {applied.workload}, expected {expectation.workload}")
    for name in sorted(set(expectation.hashes) | set(applied.documents)):
        want, have = expectation.hashes.get(name), applied.documents.get(name)
        if have == want:
            continue
        if have is not None and (have.startswith(EDITED) or have == MISSING):
            edited.append(
                f"{name}: {'removed' if have == MISSING else 'edited'} by hand since Puppet wrote it"
                + ("" if have == MISSING else f" ({have.removeprefix(EDITED)[:19]}…)")
            )
        elif have is None:
            outdated.append(f"{name}: not applied yet")
        elif want is None:
            outdated.append(f"{name}: applied but no longer rendered")
        elif have.startswith(UNHASHED):
            outdated.append(f"{name}: applied from data without document hashes (an older meshc build)")
        else:
            outdated.append(f"{name}: applied {have[:12]}, expected {want[:12]}")
    return edited, outdated


def _outdated_state(node: Node, expectation: Expectation, policy: Policy) -> HostState:
    """Pending until the facts were gathered `lag` after the rendering was deployed; drifted after."""
    deployed = policy.deployed_at.get(expectation.path, policy.since)
    if deployed is not None and node.facts_time is not None and node.facts_time > deployed + policy.lag:
        return HostState.DRIFTED
    return HostState.PENDING


def _summary(name: str, hosts: Sequence[HostDrift]) -> Summary:
    counts = {state: sum(1 for h in hosts if h.state == state) for state in HostState}
    return Summary(
        name=name,
        hosts=len(hosts),
        counts={s: n for s, n in counts.items() if n},
        not_converged=tuple(h.certname for h in hosts if h.state != HostState.CONVERGED),
    )


def _ago(now: datetime, when: datetime | None) -> str:
    return "never" if when is None else f"{_duration(now - when)} ago"


def _duration(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{max(minutes, 0)} min"


@dataclass(frozen=True, kw_only=True, slots=True)
class VmDrift:
    """The Puppet half of `meshc drift`: host states (when PuppetDB or an export was given) and the hiera tree
    (--hiera)."""

    hosts: PuppetDrift | None
    hiera: TreeStatus | None

    @property
    def converged(self) -> bool:
        """Nothing checked differs: every pool converged, the deployed tree is what meshc renders."""
        return (self.hosts is None or self.hosts.converged) and (self.hiera is None or self.hiera.clean)


def check_vms(
    tree: Mapping[str, bytes],
    observations: Observations | None,
    policy: Policy,
    hiera: Path | None = None,
    inventory: Mapping[str, str] | None = None,
) -> VmDrift:
    """Judge the hosts against the built tree (the `inventory`'s must report, see `detect_puppet_drift`); with
    `hiera`, also compare the deployed tree and time the lag from it."""
    status = compare_hiera(hiera, tree) if hiera is not None else None
    if hiera is not None:
        policy = replace(policy, deployed_at={**deployed_times(hiera, tree), **policy.deployed_at})
    hosts = (
        detect_puppet_drift(expected_rendering(tree), observations, policy, inventory)
        if observations is not None
        else None
    )
    return VmDrift(hosts=hosts, hiera=status)
