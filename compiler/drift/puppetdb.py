"""What runs on the VMs, as PuppetDB knows it: the mesh facts and latest report of every mesh node.

Read from PuppetDB's query API (v4) or from an export of its answers; per node, the `mesh`
module's `mesh_applied` fact (the hash of every document it wrote, or `edited:sha256:…` for a
file changed by hand since), the provisioning facts that select its pool, and its latest report.
Anything malformed is one DriftInputError line naming the source.
"""

from __future__ import annotations

import http.client
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from compiler.drift.model import (
    DriftInputError,
    read_capped,
)

FACT = "mesh_applied"
PROVISIONING_FACTS = ("mesh_service", "mesh_datacenter")  # what provisioning sets; they select the pool
EDITED = "edited:"
UNHASHED = "unhashed:"
MISSING = "missing"
NODES_ENDPOINT = "/pdb/query/v4/nodes"
FACTS_ENDPOINT = "/pdb/query/v4/facts"


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
    except ValueError:  # int() refuses a number over Python's 4,300 digits: the file's fault, not meshc's
        raise DriftInputError(
            str(path), "a number in it is too long to read; PuppetDB writes none like it", "puppetdb-export"
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
