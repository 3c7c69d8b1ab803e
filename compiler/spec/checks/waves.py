"""Wave checks: the rollout policy names what exists, and its last wave takes every target left."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from compiler.diagnostics import Diagnostic, did_you_mean, error
from compiler.spec.model import Spec
from compiler.spec.wave_policy import assign


@dataclass(frozen=True, kw_only=True, slots=True)
class SpecTarget:
    """A target (VM pool or cluster workload) as the spec places it, for wave matching before lowering."""

    id: str
    platform: str
    service: str
    datacenter: str
    cluster: str | None
    restart_sensitive: bool


def spec_targets(spec: Spec) -> list[SpecTarget]:
    """Every target the spec places, with ids as lowering names them."""
    found = []
    for svc in spec.checked():
        for dc in svc.vm_datacenters:
            found.append(
                SpecTarget(
                    id=f"vm/{svc.name}/{dc}",
                    platform="vm",
                    service=svc.name,
                    datacenter=dc,
                    cluster=None,
                    restart_sensitive=svc.restart_sensitive,
                )
            )
        for placement in svc.kubernetes:
            cluster = spec.mesh.clusters.get(placement.cluster)
            found.append(
                SpecTarget(
                    id=f"k8s/{placement.cluster}/{placement.namespace}/{svc.name}",
                    platform="kubernetes",
                    service=svc.name,
                    datacenter=cluster.datacenter if cluster else "",
                    cluster=placement.cluster,
                    restart_sensitive=svc.restart_sensitive,
                )
            )
    return found


def check_wave_names(spec: Spec) -> Iterator[Diagnostic]:
    """Wave names are unique, and a wave's match names datacenters, clusters and services that exist."""
    policy = spec.mesh.rollout
    if policy is None:
        return
    known = {"datacenters": spec.mesh.datacenters, "clusters": spec.mesh.clusters, "services": spec.services}
    seen: dict[str, int] = {}
    for wave in policy.waves:
        if wave.name in seen:
            yield error(
                wave.span,
                "rollout-duplicate-wave",
                f"wave {wave.name!r} is already defined as wave {seen[wave.name] + 1}; rename one",
            )
        seen.setdefault(wave.name, wave.index)
        for key, names in known.items():
            for i, name in enumerate(getattr(wave.match, key) or ()):
                if name not in names:
                    yield error(
                        spec.at(spec.mesh.file, "rollout", "waves", wave.index, "match", key, i),
                        "rollout-unknown-name",
                        f"wave {wave.name!r} matches unknown {key[:-1]} {name!r}{did_you_mean(name, names)}",
                    )


def check_wave_coverage(spec: Spec) -> Iterator[Diagnostic]:
    """Every target belongs to a wave: the last wave must take every target the others leave."""
    policy = spec.mesh.rollout
    if policy is None:
        return
    last = policy.waves[-1]
    if last.takes_hosts:
        yield error(
            spec.at(spec.mesh.file, "rollout", "waves", last.index, "hosts_per_pool"),
            "rollout-uncovered",
            f"the last wave {last.name!r} takes canary hosts only; add a last wave without hosts_per_pool "
            "that takes every target left",
        )
        return
    targets = spec_targets(spec)
    assigned = assign(policy, targets)
    left = sorted(t.id for t in targets if t.id not in assigned)
    if left:
        more = f" and {len(left) - 5} more" if len(left) > 5 else ""
        yield error(
            last.span,
            "rollout-uncovered",
            f"no wave takes {', '.join(left[:5])}{more}; the last wave {last.name!r} must match every target left "
            "(drop its match)",
        )
