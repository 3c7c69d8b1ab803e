"""What a change to a workload's sidecar documents costs: nothing, a hot reload, or a restart."""

from __future__ import annotations

import enum
import posixpath
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from compiler.emit import content_digest
from compiler.memo import Memo
from compiler.render.documents import ENVOY_BOOTSTRAP, ENVOY_CDS, ENVOY_LDS, ENVOY_SDS, NERVE, SYNAPSE


class RestartClass(enum.IntEnum):
    """Ordered by cost, so the class of several changes is their max()."""

    NONE = 0
    HOT_RELOAD = 1  # Envoy re-reads LDS/CDS/SDS (and Synapse-written EDS) files; Synapse its services
    SIDECAR_RESTART = 2  # Nerve, or Synapse's process-level settings, are read only at start
    ENVOY_RESTART = 3  # the bootstrap is read once at Envoy start
    # The pod template itself must change (a new credentials volume), so every container of every
    # pod is replaced, the app's included. Never a document's class: a target's, from new_credentials().
    POD_ROLL = 4

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


# Documents whose process re-reads part of them live: these keys reload, any other change needs a
# restart. Synapse (the site's fork; README "Synapse fork contract") re-reads its config when a
# new file is moved into its directory, as Envoy does with LDS/CDS, and reconciles `services`:
# so adding or changing a dependency never restarts a sidecar or rolls a pod.
RELOADABLE_KEYS: Mapping[str, frozenset[str]] = {SYNAPSE: frozenset({"services"})}


def restart_view(name: str, document: Any) -> Any:
    """The part of a document its process reads only at start (None: the process reloads all of it)."""
    if DOCUMENT_CLASS.get(name, RestartClass.ENVOY_RESTART) == RestartClass.HOT_RELOAD:
        return None
    reloadable = RELOADABLE_KEYS.get(name)
    if reloadable and isinstance(document, Mapping):
        return {key: value for key, value in document.items() if key not in reloadable}
    return document


# What a process reads only at start, of one document: restart_view for documents themselves; print_view for their
# prints (DocumentPrint), which compare as the documents do.
View = Callable[[str, Any], Any]


def classify(
    old: Mapping[str, Any] | None, new: Mapping[str, Any] | None, view: View = restart_view
) -> RestartClass:
    """The cost of going from `old` to `new` documents of one workload (None: the workload is absent).

    A workload that appears or disappears is a start or a stop, which costs what its most
    expensive document costs. `view`: print_view where the documents are given by their prints.
    """
    return max(changes(old, new, view).values(), default=RestartClass.NONE)


def changes(
    old: Mapping[str, Any] | None, new: Mapping[str, Any] | None, view: View = restart_view
) -> dict[str, RestartClass]:
    """Each changed document of one workload -> what its change costs, by document name (sorted).

    A document meshc does not know is assumed to need the costliest restart; a change confined
    to a document's reloadable keys is a hot reload.
    """
    old, new = old or {}, new or {}
    changed = sorted(name for name in set(old) | set(new) if old.get(name) != new.get(name))
    return {name: _cost(name, old.get(name), new.get(name), view) for name in changed}


def _cost(name: str, old: Any, new: Any, view: View) -> RestartClass:
    cost = DOCUMENT_CLASS.get(name, RestartClass.ENVOY_RESTART)
    if old is not None and new is not None and view(name, old) == view(name, new):
        return RestartClass.HOT_RELOAD
    return cost


@dataclass(frozen=True, kw_only=True, slots=True)
class DocumentPrint:
    """A sidecar document known by two digests: of all of it (equal digests, equal documents) and of its
    restart_view (None: its process reloads all of it). Comparing two rollout builds keeps these of each target,
    not the documents: at 3,000 services each live revision's documents were ~200 MB."""

    digest: str
    restart: str | None


def document_prints(documents: Mapping[str, Any], memo: Memo) -> dict[str, DocumentPrint]:
    """Each document's print; `memo` reuses the print of a document object seen before (render shares a service's
    documents between its workloads)."""
    return {
        name: memo.once(("print", id(document)), _print, name, document)
        for name, document in documents.items()
    }


def _print(name: str, document: Any) -> DocumentPrint:
    view = restart_view(name, document)
    return DocumentPrint(
        digest=content_digest(document), restart=None if view is None else content_digest(view)
    )


def print_view(name: str, document: DocumentPrint) -> str | None:
    """restart_view for a document given by its print."""
    return document.restart


@dataclass(frozen=True, kw_only=True, slots=True)
class Credentials:
    """The token and CA a workload's Synapse needs to read one Kubernetes cluster, and where it reads them."""

    cluster: str
    directory: str  # holds `token` and `ca.crt`


def watched_clusters(documents: Mapping[str, Any] | None) -> dict[str, Credentials]:
    """The Kubernetes clusters a workload's Synapse watches, each with where it reads its credentials."""
    synapse = (documents or {}).get(SYNAPSE)
    found: dict[str, Credentials] = {}
    if not isinstance(synapse, Mapping):
        return found
    for entry in synapse.get("services", {}).values():
        for watcher in entry["discovery"]["watchers"].values():
            if watcher.get("method") == "kubernetes":
                found[watcher["cluster"]] = Credentials(
                    cluster=watcher["cluster"], directory=posixpath.dirname(watcher["token_file"])
                )
    return found


def new_credentials(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> tuple[Credentials, ...]:
    """Clusters the `new` documents watch and the `old` ones did not, sorted (None: the workload is absent).

    Each needs credentials the platform delivers, which no document change brings: on a VM a new
    `mesh::discovery_credentials` entry (Puppet writes it and notifies nothing; Synapse reads the
    token when its new watcher connects, and again on every reconnect, so nothing restarts); in a
    pod a new volume in the Deployment (a Secret, or for the pod's own cluster the projected
    ServiceAccount token), and a new volume changes the pod template: the pods roll.
    """
    before, after = watched_clusters(old), watched_clusters(new)
    return tuple(after[name] for name in sorted(set(after) - set(before)))
