"""The wave policy of mesh.yaml (`rollout.waves`) and the assignment of every target to one wave."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from compiler.diagnostics import Span
from compiler.spec.document import Document

MATCH_KEYS = ("datacenters", "clusters", "platform", "services", "restart_sensitive")


class Placed(Protocol):
    """What a wave matches on: a workload, or a target computed from the spec before lowering."""

    @property
    def id(self) -> str: ...
    @property
    def platform(self) -> str: ...
    @property
    def service(self) -> str: ...
    @property
    def datacenter(self) -> str: ...
    @property
    def cluster(self) -> str | None: ...
    @property
    def restart_sensitive(self) -> bool: ...


@dataclass(frozen=True, kw_only=True, slots=True)
class Match:
    """A wave's filter: every given criterion must hold; a list criterion holds when any item does."""

    datacenters: tuple[str, ...] | None = None
    clusters: tuple[str, ...] | None = None
    platform: str | None = None
    services: tuple[str, ...] | None = None
    restart_sensitive: bool | None = None

    def matches(self, target: Placed) -> bool:
        """Does `target` satisfy every criterion of this match?"""
        return (
            (self.datacenters is None or target.datacenter in self.datacenters)
            and (self.clusters is None or target.cluster in self.clusters)
            and (self.platform is None or target.platform == self.platform)
            and (self.services is None or target.service in self.services)
            and (self.restart_sensitive is None or target.restart_sensitive == self.restart_sensitive)
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class Wave:
    """One wave: a name, what it matches, and, for a canary-host wave, how many hosts per VM pool it takes."""

    name: str
    match: Match
    hosts_per_pool: int | None
    index: int
    span: Span

    @property
    def takes_hosts(self) -> bool:
        """A canary-host wave takes a few hosts of each pool, never whole targets."""
        return self.hosts_per_pool is not None


@dataclass(frozen=True, kw_only=True, slots=True)
class WavePolicy:
    """The ordered waves of mesh.yaml; the first wave runs the revision being built."""

    waves: tuple[Wave, ...]
    span: Span

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(wave.name for wave in self.waves)

    def wave(self, name: str) -> Wave:
        """The wave called `name` (KeyError if there is none)."""
        for wave in self.waves:
            if wave.name == name:
                return wave
        raise KeyError(name)


def policy_from_document(doc: Document) -> WavePolicy | None:
    """The wave policy of a schema-valid mesh.yaml, or None when it has no `rollout` section."""
    raw = doc.data.get("rollout")
    if raw is None:
        return None
    waves = tuple(_wave(doc, i, item) for i, item in enumerate(raw["waves"]))
    return WavePolicy(waves=waves, span=doc.key_span(("rollout",)))


def _wave(doc: Document, index: int, data: Mapping[str, Any]) -> Wave:
    raw = data.get("match") or {}
    lists = {key: tuple(raw[key]) for key in ("datacenters", "clusters", "services") if key in raw}
    match = Match(**lists, platform=raw.get("platform"), restart_sensitive=raw.get("restart_sensitive"))
    return Wave(
        name=data["name"],
        match=match,
        hosts_per_pool=data.get("hosts_per_pool"),
        index=index,
        span=doc.span(("rollout", "waves", index, "name")),
    )


def wave_of(policy: WavePolicy, target: Placed) -> str | None:
    """The first wave (not a canary-host wave) whose match `target` satisfies, or None."""
    for wave in policy.waves:
        if not wave.takes_hosts and wave.match.matches(target):
            return wave.name
    return None


def assign(policy: WavePolicy | None, targets: Iterable[Placed]) -> dict[str, str]:
    """Target id -> wave name for every target a wave matches ({} without a policy)."""
    if policy is None:
        return {}
    found = {}
    for target in targets:
        wave = wave_of(policy, target)
        if wave is not None:
            found[target.id] = wave
    return found
