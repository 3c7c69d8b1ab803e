"""Puppet drift: per VM host, whether the documents the `mesh` module applied are the ones meshc renders for it.

What meshc renders comes from the built tree (contract 7: path -> bytes, MANIFEST.json included):
each pool's data file `puppet/data/pools/<service>/<dc>.json` and each canary host's node file
`puppet/data/nodes/<certname>.json` carry `mesh::document_hashes` (contract 5). What runs comes
from PuppetDB (or an export of it): per node, the module's `mesh_applied` fact (the hash of every
document it wrote, or `edited:sha256:…` for a file changed by hand since) and its latest report.
Results are records; formatting is the caller's.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import ssl
import stat
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

import orjson

from compiler.backends.puppet import HASHES_KEY, HIERA_ESCAPE, SIDECAR_KEY, document_hash
from compiler.drift.model import (
    CONVERGED,
    DRIFTED,
    NO_HOSTS,
    NOT_CHECKED,
    ORPHAN,
    DriftInputError,
    DriftItem,
    ScopeState,
    SubjectState,
    read_capped,
)
from compiler.emit import MANIFEST, TreeStatus, compare_files, read_tree, recorded_hashes

PLATFORM = "puppet"
POOLS_DIR = "puppet/data/pools/"
NODES_DIR = "puppet/data/nodes/"
FACT = "mesh_applied"
PROVISIONING_FACTS = ("mesh_service", "mesh_datacenter")  # what provisioning sets; they select the pool
EDITED = "edited:"
UNHASHED = "unhashed:"
MISSING = "missing"
DEFAULT_LAG = timedelta(minutes=30)  # Puppet's default runinterval
DEFAULT_STALE_AFTER = timedelta(hours=2)
NODES_ENDPOINT = "/pdb/query/v4/nodes"
FACTS_ENDPOINT = "/pdb/query/v4/facts"
CACHED_CATALOG = ("on_failure", "explicitly_requested")  # the node ran a catalog it had, not the current one


class HostState(StrEnum):
    """Where one host stands; only `converged` is a pass."""

    CONVERGED = "converged"
    PENDING = "pending"
    DRIFTED = "drifted"
    FAILED = "failed"
    UNKNOWN = "unknown"


# ---------------------------------------------------------------- records


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
class Applied:
    """The `mesh_applied` fact of one host: what the module last wrote, or why the fact is unusable."""

    workload: str | None = None
    wave: str | None = None
    documents: Mapping[str, str] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Node:
    """One node as PuppetDB knows it: its mesh facts and its latest report."""

    certname: str
    applied: Applied | None = None
    pool: str | None = None  # vm/<mesh_service>/<mesh_datacenter>: the pool hiera gives it
    report_status: str | None = None
    cached_catalog_status: str | None = None
    report_time: datetime | None = None
    facts_time: datetime | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Observations:
    """Every mesh node read from one source (a PuppetDB URL or an export file: the evidence)."""

    source: str
    nodes: tuple[Node, ...]


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


# ---------------------------------------------------------------- what meshc renders


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
        data = orjson.loads(_unescape(raw))
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


def _unescape(raw: bytes) -> bytes:
    """Hiera data as hiera returns it: `%{literal('%')}{` is `%{` (JSON text holds it verbatim)."""
    return raw.replace(HIERA_ESCAPE.encode(), b"%{")


# ---------------------------------------------------------------- what runs: PuppetDB and exports


def read_puppetdb(
    url: str,
    *,
    cafile: str | None = None,
    certfile: str | None = None,
    keyfile: str | None = None,
    timeout: float = 60,
) -> Observations:
    """Every mesh node from PuppetDB's query API (v4): `nodes`, then the three mesh facts."""
    context = _tls_context(url, cafile, certfile, keyfile)
    names = ["or", *(["=", "name", name] for name in (FACT, *PROVISIONING_FACTS))]
    nodes = _get(url, NODES_ENDPOINT, None, context, timeout)
    facts = _get(url, FACTS_ENDPOINT, json.dumps(names), context, timeout)
    return parse_observations(nodes, facts, where=url.rstrip("/"), code="puppetdb-response")


def _tls_context(
    url: str, cafile: str | None, certfile: str | None, keyfile: str | None
) -> ssl.SSLContext | None:
    if urllib.parse.urlsplit(url).scheme != "https":
        return None
    try:
        context = ssl.create_default_context(cafile=cafile)
        if certfile:
            context.load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as error:
        raise DriftInputError(
            certfile or cafile or url, f"cannot load TLS material: {error}", "puppetdb-unreachable"
        ) from None
    return context


def _get(base: str, endpoint: str, query: str | None, context: ssl.SSLContext | None, timeout: float) -> Any:
    """One query's JSON answer; every failure is one DriftInputError line naming the URL."""
    url = base.rstrip("/") + endpoint + (f"?{urllib.parse.urlencode({'query': query})}" if query else "")
    where = base.rstrip("/") + endpoint
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            body = response.read()
    except urllib.error.HTTPError as error:
        detail = error.read(300).decode(errors="replace").strip().splitlines()
        raise DriftInputError(
            where,
            f"PuppetDB answered HTTP {error.code}" + (f": {detail[0]}" if detail else ""),
            "puppetdb-unreachable",
        ) from None
    except urllib.error.URLError as error:
        raise DriftInputError(
            where, f"cannot reach PuppetDB: {error.reason}", "puppetdb-unreachable"
        ) from None
    except (OSError, http.client.HTTPException) as error:
        raise DriftInputError(
            where,
            f"cannot read PuppetDB's answer: {str(error) or type(error).__name__}",
            "puppetdb-unreachable",
        ) from None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise DriftInputError(
            where, f"PuppetDB's answer is not JSON ({len(body)} bytes): {error}", "puppetdb-response"
        ) from None


MAX_EXPORT_BYTES = 1 << 30  # as a cluster dump's cap: an export of 10,000 hosts is tens of MB


def read_export(path: Path) -> Observations:
    """Every mesh node from an export file: `{"nodes": <nodes query answer>, "facts": <facts query answer>}`."""
    # capped: `--puppet-facts /dev/zero` must not read until memory runs out
    raw = read_capped(
        path,
        MAX_EXPORT_BYTES,
        what="the export",
        question="is this a PuppetDB export?",
        code="puppetdb-export",
    )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DriftInputError(str(path), f"cannot read the export: {error}", "puppetdb-export") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise DriftInputError(
            f"{path}:{error.lineno}:{error.colno}", f"not valid JSON: {error.msg}", "puppetdb-export"
        ) from None
    if not isinstance(data, dict) or not {"nodes", "facts"} <= data.keys():
        raise DriftInputError(
            str(path), 'an export is an object {"nodes": [...], "facts": [...]}', "puppetdb-export"
        )
    return parse_observations(data["nodes"], data["facts"], where=str(path), code="puppetdb-export")


def parse_observations(nodes: Any, facts: Any, *, where: str, code: str) -> Observations:
    """Mesh nodes from the answers of the nodes and facts queries; malformed rows are one DriftInputError."""
    facts_by_node: dict[str, dict[str, Any]] = {}
    for i, row in enumerate(_rows(facts, "facts", where, code)):
        certname, name = (
            _field(row, "certname", f"facts[{i}]", where, code),
            _field(row, "name", f"facts[{i}]", where, code),
        )
        facts_by_node.setdefault(certname, {})[name] = row.get("value")
    found = []
    for i, row in enumerate(_rows(nodes, "nodes", where, code)):
        certname = _field(row, "certname", f"nodes[{i}]", where, code)
        mine = facts_by_node.get(certname, {})
        if row.get("deactivated") or row.get("expired") or not mine:
            continue  # not a mesh node, or one PuppetDB no longer counts
        found.append(_node(row, certname, mine, f"nodes[{i}]", where, code))
    return Observations(source=where, nodes=tuple(sorted(found, key=lambda n: n.certname)))


def _rows(value: Any, name: str, where: str, code: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(row, dict) for row in value):
        raise DriftInputError(
            where, f"{name}: expected a list of objects, as PuppetDB's {name} query returns", code
        )
    return value


def _field(row: Mapping[str, Any], key: str, at: str, where: str, code: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value:
        raise DriftInputError(where, f"{at}.{key}: expected a non-empty string, got {value!r:.60}", code)
    return value


def _node(
    row: Mapping[str, Any], certname: str, facts: Mapping[str, Any], at: str, where: str, code: str
) -> Node:
    service, datacenter = (facts.get(name) for name in PROVISIONING_FACTS)
    pool = f"vm/{service}/{datacenter}" if isinstance(service, str) and isinstance(datacenter, str) else None
    return Node(
        certname=certname,
        applied=parse_applied(facts[FACT]) if FACT in facts else None,
        pool=pool,
        report_status=_optional_str(row, "latest_report_status"),
        cached_catalog_status=_optional_str(row, "cached_catalog_status"),
        report_time=_timestamp(row, "report_timestamp", at, where, code),
        facts_time=_timestamp(row, "facts_timestamp", at, where, code),
    )


def _optional_str(row: Mapping[str, Any], key: str) -> str | None:
    value = row.get(key)
    return value if isinstance(value, str) else None


def _timestamp(row: Mapping[str, Any], key: str, at: str, where: str, code: str) -> datetime | None:
    value = row.get(key)
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        parsed = None
    if parsed is None:
        raise DriftInputError(where, f"{at}.{key}: not an ISO 8601 timestamp: {value!r:.60}", code)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_applied(value: Any) -> Applied:
    """The `mesh_applied` fact's value; anything the module does not write is an Applied with an error."""
    if not isinstance(value, dict):
        return Applied(error=f"mesh_applied is not an object: {value!r:.60}")
    if isinstance(value.get("error"), str):
        return Applied(error=f"the module's receipt is unreadable: {value['error']}")
    documents, workload, wave = value.get("documents"), value.get("workload"), value.get("wave")
    if not isinstance(documents, dict) or not all(isinstance(v, str) for v in documents.values()):
        return Applied(error="mesh_applied has no documents map of name -> hash")
    return Applied(
        workload=workload if isinstance(workload, str) else None,
        wave=wave if isinstance(wave, str) else None,
        documents=documents,
    )


# ---------------------------------------------------------------- judging


def detect_puppet_drift(rendering: Rendering, observations: Observations, policy: Policy) -> PuppetDrift:
    """Every mesh host judged against its pool or canary node file, summed up per pool and per wave."""
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
    for certname in sorted(set(rendering.nodes) - seen):  # a canary host PuppetDB does not know
        hosts.append(
            _host(certname, rendering.nodes[certname], True, HostState.UNKNOWN, ("no node in PuppetDB",))
        )
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


# ---------------------------------------------------------------- onto the shared drift records


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
}


# ---------------------------------------------------------------- the hiera tree on the Puppet server


def compare_hiera(deployed: Path, tree: Mapping[str, bytes]) -> TreeStatus:
    """The tree deployed on the Puppet server (an environment: hiera.yaml, data/, modules/) against output/puppet/.

    A differing file is stale when an earlier meshc build wrote it: its hash is in a MANIFEST.json
    deployed beside it, or it is a data file whose documents still match its own document hashes.
    Anything else that differs was edited by hand.
    """
    if not deployed.is_dir():
        raise DriftInputError(
            str(deployed),
            "not a directory (the Puppet environment holding hiera.yaml and data/)",
            "hiera-tree",
        )
    try:
        actual = read_tree(deployed)
    except OSError as error:
        raise DriftInputError(
            str(deployed), f"cannot read the deployed tree: {error.strerror or error}", "hiera-tree"
        ) from None
    # Dot files and directories are the deployment tool's (.git, r10k's .r10k-deploy.json), not meshc's.
    actual = {
        path: data
        for path, data in actual.items()
        if not any(part.startswith(".") for part in path.split("/"))
    }
    files = {path.removeprefix("puppet/"): data for path, data in tree.items() if path.startswith("puppet/")}
    recorded = {
        path.removeprefix("puppet/"): sha for path, sha in recorded_hashes(actual.pop(MANIFEST, b"")).items()
    }
    recorded |= {
        path: _sha256(data)
        for path, data in actual.items()
        if path in files and data != files[path] and _self_consistent(data)
    }
    return compare_files(actual, files, recorded)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _self_consistent(data: bytes) -> bool:
    """A data file whose every document hashes to its own `mesh::document_hashes`: written by meshc, not by hand."""
    try:
        value = orjson.loads(_unescape(data))
    except orjson.JSONDecodeError:
        return False
    if not isinstance(value, dict):
        return False
    documents, hashes = value.get(SIDECAR_KEY), value.get(HASHES_KEY)
    if not isinstance(documents, dict) or not isinstance(hashes, dict) or sorted(documents) != sorted(hashes):
        return False
    return all(document_hash(documents[name]) == hashes[name] for name in documents)


def deployed_times(deployed: Path, tree: Mapping[str, bytes]) -> dict[str, datetime]:
    """Built-tree data path -> when the deployed copy (equal to the rendering) was last written on the server."""
    times = {}
    for path in _data_paths(tree):
        local = deployed / path.removeprefix("puppet/")
        try:
            seen = os.lstat(local)
            # Only a regular file of the rendering's size is opened: a FIFO would block, a device never end.
            if (
                stat.S_ISREG(seen.st_mode)
                and seen.st_size == len(tree[path])
                and local.read_bytes() == tree[path]
            ):
                times[path] = datetime.fromtimestamp(seen.st_mtime, UTC)
        except OSError:
            continue  # missing or unreadable: compare_hiera reports it
    return times


def _data_paths(tree: Iterable[str]) -> Iterator[str]:
    return (p for p in tree if p.startswith((POOLS_DIR, NODES_DIR)) and p.endswith(".json"))


# ---------------------------------------------------------------- one call for `meshc drift`


@dataclass(frozen=True, kw_only=True, slots=True)
class VmDrift:
    """The Puppet half of `meshc drift`: host states (from PuppetDB or an export) and the hiera tree (--hiera)."""

    hosts: PuppetDrift | None
    hiera: TreeStatus | None

    @property
    def converged(self) -> bool:
        """Nothing checked differs: every pool converged, the deployed tree is what meshc renders."""
        return (self.hosts is None or self.hosts.converged) and (self.hiera is None or self.hiera.clean)


def check_vms(
    tree: Mapping[str, bytes], observations: Observations | None, policy: Policy, hiera: Path | None = None
) -> VmDrift:
    """Judge the hosts against the built tree; with `hiera`, also compare the deployed tree and time the lag from it."""
    status = compare_hiera(hiera, tree) if hiera is not None else None
    if hiera is not None:
        policy = replace(policy, deployed_at={**deployed_times(hiera, tree), **policy.deployed_at})
    hosts = (
        detect_puppet_drift(expected_rendering(tree), observations, policy)
        if observations is not None
        else None
    )
    return VmDrift(hosts=hosts, hiera=status)
