"""Source spans, diagnostics, the registry of error codes and their formatting."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True, slots=True)
class Span:
    """A position in a spec file; line and col are 1-based, as editors show them."""

    file: str
    line: int = 1
    col: int = 1

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


# One registry so every code is documented once and tests can check they are all used.
CODES: dict[str, str] = {
    # load
    "yaml-syntax": "the file is not well-formed YAML",
    "yaml-duplicate-key": "a mapping repeats a key",
    "yaml-alias": "anchors and aliases are not allowed in the spec",
    "yaml-tag": "explicit YAML tags are not allowed in the spec",
    "yaml-multi-document": "a spec file holds exactly one YAML document",
    "file-encoding": "spec files must be UTF-8",
    "file-too-large": "a spec file is larger than the limit",
    "file-missing": "a required spec file or directory is missing",
    "file-empty": "a spec file has no content",
    "service-name-mismatch": "a service file's name differs from its `service:` key",
    # schema
    "schema": "the value does not match the spec schema",
    "unknown-key": "a key the schema does not define",
    "missing-key": "a required key is missing",
    "port-range": "a port is outside 1-65535",
    "invalid-duration": "a duration is not written like 250ms, 2s, 5m or 1h",
    "stray-file": "a file in services/ that is not a .yaml service file",
    # semantics
    "unknown-datacenter": "a reference to a datacenter that mesh.yaml does not define",
    "unknown-cluster": "a reference to a cluster that mesh.yaml does not define",
    "unknown-dependency": "a dependency on a service that has no file in services/",
    "duplicate-local-port": "two services claim the same mesh-wide local_port",
    "port-clash": "two ports of one workload are equal",
    "invalid-name": "a name is not a DNS-1123 label safe as a path component",
    "failover-unknown": "a failover list names an unknown datacenter",
    "failover-self": "a failover list names its own datacenter",
    "failover-duplicate": "a failover list names a datacenter twice",
    "failover-unreachable": "a client cannot reach every datacenter a failover dependency runs in",
    "local-unavailable": "a `local` dependency does not run in a datacenter where a client runs",
    "self-dependency": "a service depends on itself",
    "duplicate-dependency": "a service lists the same dependency twice",
    "retry-budget": "per-try timeout × attempts exceeds the request timeout",
    "no-placement": "a service is placed nowhere",
    "duplicate-placement": "a service is placed twice in one cluster or datacenter",
    # rollout (canary waves)
    "rollout-duplicate-wave": "two waves of the wave policy have the same name",
    "rollout-unknown-name": "a wave matches a datacenter, cluster or service that the spec does not define",
    "rollout-uncovered": "a target belongs to no wave: the last wave must match every target left",
    "rollout-file": "rollout.yaml is not a mapping of `hold` and `pins` as documented",
    "rollout-unknown-wave": "rollout.yaml pins a wave the wave policy does not define",
    "rollout-pin-missing": "a wave other than the first has no pin in rollout.yaml",
    "rollout-pin-unknown": "a pin is not a full commit id of the repository",
    "rollout-pin-order": "a wave's pin is not an ancestor of (or equal to) the revision of the wave before it",
    "rollout-no-policy": "rollout.yaml exists but mesh.yaml has no wave policy",
    "rollout-inventory": "the host inventory is not a list of {certname, service, datacenter}",
    "rollout-unsafe": "a state the rollout passes through breaks a client-server pair",
    # backends
    "object-too-large": "a generated Kubernetes object is too large for `kubectl apply` (256 KiB annotation limit)",
    "reserved-namespace": "a service is placed in the namespace meshc keeps for external discovery readers",
    # internal
    "internal": "a compiler bug: an invariant of the rendering does not hold",
}


@dataclass(frozen=True, kw_only=True, slots=True)
class Diagnostic:
    """One finding about the spec, printed as `file:line:col: error: message  [code]`."""

    span: Span
    code: str
    message: str
    severity: str = "error"

    def __post_init__(self) -> None:
        if self.code not in CODES:
            raise ValueError(f"unregistered diagnostic code {self.code!r}")

    def format(self) -> str:
        return f"{self.span}: {self.severity}: {self.message}  [{self.code}]"

    def sort_key(self) -> tuple[str, int, int, str, str]:
        return (self.span.file, self.span.line, self.span.col, self.code, self.message)


class SpecError(Exception):
    """Raised by library code when the spec is invalid; carries every diagnostic found."""

    def __init__(self, diagnostics: Iterable[Diagnostic]) -> None:
        self.diagnostics = tuple(sorted(diagnostics, key=Diagnostic.sort_key))
        super().__init__(f"{len(self.diagnostics)} error(s) in the spec")


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """A ` (did you mean 'x'?)` suffix for the closest candidate, or ''."""
    close = difflib.get_close_matches(name, sorted(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def format_all(diagnostics: Iterable[Diagnostic]) -> str:
    """All diagnostics, one per line, then a count, as mypy prints them."""
    found = list(diagnostics)
    lines = [d.format() for d in found]
    files = len({d.span.file for d in found})  # not the text before the first ':': `REV:path` names hold one
    lines.append(f"Found {len(lines)} error{'s' if len(lines) != 1 else ''} in {files} file{'s' if files != 1 else ''}")
    return "\n".join(lines)
