"""What a change to a workload's sidecar documents costs: nothing, a hot reload, or a restart."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

from compiler.render import ENVOY_BOOTSTRAP, ENVOY_CDS, ENVOY_LDS, ENVOY_SDS, NERVE, SYNAPSE


class RestartClass(enum.IntEnum):
    """Ordered by cost, so the class of several changes is their max()."""

    NONE = 0
    HOT_RELOAD = 1  # Envoy re-reads LDS/CDS (and Synapse-written EDS) files itself
    SIDECAR_RESTART = 2  # Nerve or Synapse re-reads its config only on restart
    ENVOY_RESTART = 3  # the bootstrap is read once at Envoy start

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")


# Which process reads each document, and what that process needs to see a change.
DOCUMENT_CLASS: Mapping[str, RestartClass] = {
    ENVOY_LDS: RestartClass.HOT_RELOAD,
    ENVOY_CDS: RestartClass.HOT_RELOAD,
    ENVOY_SDS: RestartClass.HOT_RELOAD,
    SYNAPSE: RestartClass.SIDECAR_RESTART,
    NERVE: RestartClass.SIDECAR_RESTART,
    ENVOY_BOOTSTRAP: RestartClass.ENVOY_RESTART,
}


def classify(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> RestartClass:
    """The cost of going from `old` to `new` documents of one workload (None: the workload is absent).

    A workload that appears or disappears is a start or a stop, which costs what its most
    expensive document costs.
    """
    return max(changes(old, new).values(), default=RestartClass.NONE)


def changes(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> dict[str, RestartClass]:
    """Each changed document of one workload -> what its change costs, by document name (sorted).

    A document meshc does not know is assumed to need the costliest restart.
    """
    old, new = old or {}, new or {}
    changed = sorted(name for name in set(old) | set(new) if old.get(name) != new.get(name))
    return {name: DOCUMENT_CLASS.get(name, RestartClass.ENVOY_RESTART) for name in changed}
