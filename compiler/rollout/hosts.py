"""The host inventory and the choice of canary hosts: rendezvous hashing, so adding hosts moves few canaries.

`inventory/hosts.yaml` in the spec directory lists every VM host as PuppetDB knows it:

```yaml
- {certname: upload-sjc-001.box.net, service: upload, datacenter: sjc}
```

(`puppet query 'inventory[certname, facts.mesh_service, facts.mesh_datacenter] {}'` with the two
facts renamed gives exactly this list.) A canary-host wave with `hosts_per_pool: N` takes, in every
VM pool it matches that no earlier wave holds, the N hosts with the highest score
sha256(pool id + NUL + certname). A host's score does not depend on the other hosts, so a new host
can only displace a canary by scoring higher than it: the choice among existing hosts never reshuffles.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from compiler.diagnostics import Diagnostic, Span, SpecError
from compiler.spec.document import LoadError, parse_document
from compiler.spec.load import read_side_file
from compiler.spec.wave_policy import Placed, WavePolicy

INVENTORY_FILE = "inventory/hosts.yaml"


@dataclass(frozen=True, kw_only=True, slots=True)
class Host:
    """One VM host: its Puppet certname and the pool (service, datacenter) it belongs to."""

    certname: str
    service: str
    datacenter: str
    span: Span

    @property
    def pool(self) -> str:
        """The target id of the host's VM pool."""
        return f"vm/{self.service}/{self.datacenter}"


@dataclass(frozen=True, kw_only=True, slots=True)
class Canary:
    """A canary host: the wave whose rendering it runs, and its pool."""

    certname: str
    wave: str
    pool: str


def load_inventory(path: Path, label: str) -> tuple[Host, ...]:
    """The hosts listed at `path` (none when the file is absent); raise SpecError for a malformed list."""
    raw = read_side_file(path, label)
    return () if raw is None else parse_inventory(raw, label)


def parse_inventory(raw: bytes, label: str) -> tuple[Host, ...]:
    """The hosts an inventory's bytes list (named `label` in diagnostics); raise SpecError for a malformed list."""
    try:
        doc = parse_document(label, raw)
    except LoadError as exc:
        raise SpecError([exc.diagnostic]) from None
    if not isinstance(doc.data, list):
        raise SpecError(
            [
                Diagnostic(
                    span=doc.span(()),
                    code="rollout-inventory",
                    message="the inventory must be a list of {certname, service, datacenter}",
                )
            ]
        )
    hosts, problems = [], []
    seen: dict[str, int] = {}
    for index, item in enumerate(doc.data):
        problem = _item_problem(item)
        if problem is None and item["certname"] in seen:
            problem = (
                f"certname {item['certname']!r} is listed twice (first as item {seen[item['certname']] + 1})"
            )
        if problem is not None:
            problems.append(Diagnostic(span=doc.span((index,)), code="rollout-inventory", message=problem))
            continue
        seen[item["certname"]] = index
        hosts.append(
            Host(
                certname=item["certname"],
                service=item["service"],
                datacenter=item["datacenter"],
                span=doc.span((index,)),
            )
        )
    if problems:
        raise SpecError(problems)
    return tuple(hosts)


def _item_problem(item: object) -> str | None:
    if not isinstance(item, dict) or set(item) != {"certname", "service", "datacenter"}:
        return "each host is a mapping of exactly certname, service and datacenter"
    if not all(isinstance(item[key], str) and item[key] for key in ("certname", "service", "datacenter")):
        return "certname, service and datacenter must be non-empty strings"
    if "/" in item["certname"] or item["certname"].startswith("."):
        return f"certname {item['certname']!r} cannot name a hiera node file"
    return None


def score(pool: str, certname: str) -> int:
    """The rendezvous score of a host for its pool: higher is chosen first."""
    return int.from_bytes(hashlib.sha256(f"{pool}\0{certname}".encode()).digest(), "big")


def choose(hosts: Sequence[Host], count: int) -> list[Host]:
    """The `count` hosts with the highest score for their pool (all hosts of one pool), certname order."""
    ranked = sorted(hosts, key=lambda h: (-score(h.pool, h.certname), h.certname))
    return sorted(ranked[:count], key=lambda h: h.certname)


def canaries(
    policy: WavePolicy | None, hosts: Sequence[Host], pools: Mapping[str, Placed], waves: Mapping[str, str]
) -> tuple[Canary, ...]:
    """Every canary host: for each canary-host wave, in each matching pool that a later wave holds, its top hosts.

    `pools` are the VM pools by target id, `waves` the wave of every target. A host already chosen
    by an earlier wave is not chosen again.
    """
    if policy is None:
        return ()
    by_pool: dict[str, list[Host]] = {}
    for host in hosts:
        by_pool.setdefault(host.pool, []).append(host)
    order = {name: index for index, name in enumerate(policy.names)}
    chosen: dict[str, Canary] = {}
    for wave in policy.waves:
        if wave.hosts_per_pool is None:
            continue
        for pool_id in sorted(by_pool):
            pool = pools.get(pool_id)
            if (
                pool is None
                or not wave.match.matches(pool)
                or order.get(waves.get(pool_id, ""), -1) <= wave.index
            ):
                continue
            free = [h for h in by_pool[pool_id] if h.certname not in chosen]
            for host in choose(free, wave.hosts_per_pool):
                chosen[host.certname] = Canary(certname=host.certname, wave=wave.name, pool=pool_id)
    return tuple(sorted(chosen.values(), key=lambda c: c.certname))
