"""Drift records shared by every platform: findings, per-subject and per-scope states, the report.

Vocabulary, the same for Kubernetes and Puppet:
- a **scope** is one body of evidence: a cluster's dump, a PuppetDB (or facts export);
- a **subject** is one thing checked inside a scope: a Kubernetes object (`<Kind>/<namespace or _>/<name>`)
  or a Puppet host (its certname); it belongs to a **target** (`k8s/...`, `vm/...`) or to none
  (a Namespace shared by services, an orphan);
- an **item** is one finding about a subject: what differs (`path`, `expected` → `live`) or why it
  could not be judged. Each item has a stable `id` that acknowledgements match.

Platforms add subjects and items with their own `kind` values and states; the report only needs
`FAILING_STATES` to decide the exit code, so adding a platform is additive.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compiler.diagnostics import EnvironmentFailure, escape

# Item kinds of the Kubernetes half; the Puppet half's items are named after the host's state
# (pending, drifted, failed, unknown), plus orphan, NO_HOSTS, and the hiera tree's file states.
MISSING, MODIFIED, EXTRA, ORPHAN = "missing", "modified", "extra", "orphan"
NO_HOSTS = "no-hosts"  # a VM pool no host reports for: its subject is the pool itself, state NOT_CHECKED
EXPIRED_ACKNOWLEDGEMENT = "expired-acknowledgement"

KUBERNETES, PUPPET = "kubernetes", "puppet"  # the platforms of scopes

# Subject and scope states.
CONVERGED, DRIFTED, ACKNOWLEDGED, UNKNOWN, NOT_CHECKED = (
    "converged",
    "drifted",
    "acknowledged",
    "unknown",
    "not-checked",
)
PENDING, FAILED = "pending", "failed"
# A scope whose only findings are pools with no data (their subjects fail the run, unless --partial).
INCOMPLETE = "incomplete"
# States that make `meshc drift` exit 1. NOT_CHECKED is in it: no data is not a pass (--partial lifts it).
# PENDING is not: a host still within its lag is on its way (the issue: exit 1 for "unknown past its lag").
FAILING_STATES = frozenset({DRIFTED, UNKNOWN, NOT_CHECKED, FAILED})
# States that block `meshc promote`: everything but converged (or acknowledged) — pending included, and
# NOT_CHECKED whatever --partial says: a wave is promoted only on evidence that it has converged.
BLOCKING_STATES = FAILING_STATES | {PENDING}
# Items no acknowledgement accepts: no data (an unknown host, a pool no host reports for, an unchecked scope) and a
# failed run are not known drift, and accepting them would let `meshc promote` pass on no evidence.
UNACKNOWLEDGEABLE = frozenset({UNKNOWN, FAILED, NO_HOSTS, NOT_CHECKED})
REPORT_FORMAT = 1


def scope_label(platform: str, scope: str) -> str:
    """A scope as people read it, one way whatever the scope is: `kubernetes: prod-a`, `puppet: /srv/hiera`,
    `puppet: https://puppetdb:8081` (an item id joins them with `/`, which reads as a path)."""
    return f"{platform}: {scope}"


class DriftInputError(Exception):
    """Input `meshc drift` cannot use (a dump, an acknowledgements file, a CLUSTER=DUMP pair): exit 2.

    str(exc) is one line, `location: error: message  [code]`, as the spec diagnostics are printed.
    """

    def __init__(self, location: str, message: str, code: str) -> None:
        self.location, self.message, self.code = location, message, code
        # escaped as a spec diagnostic is: a dump's path or a live value may hold a line break or a tab
        super().__init__(f"{escape(location)}: error: {escape(message)}  [{code}]")


def read_capped(path: Path, cap: int, *, what: str, question: str, code: str) -> bytes:
    """An input file's bytes, refusing more than `cap` (pipes and /dev/fd paths work too, read one byte past the cap).

    A missing file or a directory is bad input (DriftInputError, exit 2); permission denied or an I/O
    error is the machine's (EnvironmentFailure, exit 4).
    """
    too_large = f"larger than {cap >> 20} MiB; {question}"
    try:
        with path.open("rb") as handle:
            if os.fstat(handle.fileno()).st_size > cap:  # a regular file: refuse before reading it
                raise DriftInputError(str(path), too_large, code)
            raw = handle.read(cap + 1)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
        raise DriftInputError(str(path), f"cannot read {what}: {exc.strerror}", code) from None
    except OSError as exc:
        raise EnvironmentFailure(str(path), exc.strerror or type(exc).__name__) from None
    if len(raw) > cap:
        raise DriftInputError(str(path), too_large, code)
    return raw


@dataclass(frozen=True, kw_only=True, slots=True)
class DriftItem:
    """One finding about one subject: `path` is "" for findings about the whole subject (missing, orphan)."""

    kind: str
    platform: str
    scope: str
    subject: str
    target: str | None = None
    path: str = ""
    expected: Any = None
    live: Any = None
    detail: str = ""
    acknowledged: str | None = None  # the reason, when an acknowledgement accepts this item

    @property
    def id(self) -> str:
        """`<platform>/<scope>/<subject>#<kind>[:<path>]`.

        E.g. `kubernetes/kube-sjc-a/ConfigMap/upload/upload-mesh-envoy#extra:data[debug.json]`."""
        return f"{self.platform}/{self.scope}/{self.subject}#{self.kind}" + (
            f":{self.path}" if self.path else ""
        )

    @property
    def compared(self) -> bool:
        """Whether the item holds the expected and live values at its path, for reports to show. A host's item
        names its document but holds none (its detail has the hashes): `(absent) → (absent)` would be noise."""
        return bool(self.path) and (self.expected is not None or self.live is not None)


@dataclass(frozen=True, kw_only=True, slots=True)
class SubjectState:
    """One checked object or host: its state and the findings that made it so (none when converged)."""

    platform: str
    scope: str
    subject: str
    target: str | None
    state: str
    items: tuple[DriftItem, ...] = ()
    delete_command: str | None = None  # orphans only: how to remove it by hand
    wave: str | None = (
        None  # a host's own wave (a canary host's may differ from its pool's); None: its target's
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class ScopeState:
    """One body of evidence (a cluster dump, a PuppetDB): whether it was given and what it showed."""

    platform: str
    scope: str
    state: str
    evidence: str | None = None  # the file or URL read; None when not checked
    counts: Mapping[str, int] = field(default_factory=dict)  # subject state -> how many


@dataclass(frozen=True, kw_only=True, slots=True)
class Acknowledgement:
    """An accepted drift item: `match` is an item id or an fnmatch pattern over ids; dates are YYYY-MM-DD."""

    match: str
    reason: str
    expires: str
    location: str  # file:line:col of the entry, for findings about it
    expired: bool = False
    used: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class DriftReport:
    """Everything one `meshc drift` run found; formatting lives in compiler.drift.report."""

    scopes: tuple[ScopeState, ...]
    subjects: tuple[SubjectState, ...]  # every subject checked, converged ones included
    findings: tuple[DriftItem, ...] = ()  # items about no subject: expired acknowledgements
    acknowledgements: tuple[Acknowledgement, ...] = ()
    waves: Mapping[str, str] = field(default_factory=dict)  # target -> wave, from MANIFEST rollout, when any
    wave_order: tuple[str, ...] = ()  # the waves in promotion order (MANIFEST rollout), when any
    partial: bool = False
    today: str = ""

    def no_data(self, target: str) -> str:
        """Why a target has no evidence at all: its cluster's dump, or the VMs' PuppetDB, was not given ("" when it
        was: its state is then what its subjects say)."""
        kind, _, rest = target.partition("/")
        unchecked = {(s.platform, s.scope) for s in self.scopes if s.state == NOT_CHECKED}
        cluster = rest.split("/")[0]
        if kind == "k8s" and (KUBERNETES, cluster) in unchecked:
            return f"no dump of cluster {cluster} given (--kubernetes)"
        if kind == "vm" and (PUPPET, "puppetdb") in unchecked:
            return "no PuppetDB or export given (--puppetdb, --puppet-facts)"
        return ""

    @property
    def failing(self) -> bool:
        """True when the run must exit 1: drift, failures, unknowns, unchecked scopes or pools (unless partial), expired
        acknowledgements. Pending hosts (within their lag) do not fail the run; they block `meshc promote`."""
        scopes = any(
            s.state in FAILING_STATES and not (self.partial and s.state == NOT_CHECKED) for s in self.scopes
        )
        subjects = any(
            s.state in FAILING_STATES and not (self.partial and s.state == NOT_CHECKED) for s in self.subjects
        )
        return scopes or subjects or any(not f.acknowledged for f in self.findings)
