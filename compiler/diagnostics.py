"""Source spans, diagnostics, the registry of error codes and their formatting."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True, kw_only=True, slots=True)
class Span:
    """A position in a spec file; line and col are 1-based, as editors show them."""

    file: str
    line: int = 1
    col: int = 1

    def __str__(self) -> str:
        return f"{escape(self.file)}:{self.line}:{self.col}"


# One registry so every code is documented once and tests can check they are all used.
CODES: dict[str, str] = {
    # load
    "yaml-syntax": "the file is not well-formed YAML",
    "yaml-duplicate-key": "a mapping repeats a key",
    "yaml-alias": "anchors and aliases are not allowed in the spec",
    "yaml-tag": "explicit YAML tags are not allowed in the spec",
    "yaml-multi-document": "a spec file holds exactly one YAML document",
    "file-encoding": "spec files must be UTF-8",
    "yaml-character": "a control character, or NEL/U+2028/U+2029 that parsers and editors read differently",
    "file-too-large": "a spec file is larger than the limit",
    "file-missing": "a required spec file or directory is missing",
    "file-empty": "a spec file has no content",
    "file-unreadable": "a spec file or services/ cannot be read (permission denied, I/O error)",
    "file-type": (
        "a spec entry is a FIFO, socket, device or directory where a file belongs, "
        "or a file where services/ belongs"
    ),
    "file-symlink": (
        "a spec file or services/ is a symbolic link "
        "(git stores links as links: build and diff would disagree)"
    ),
    "symlink-escape": (
        "a spec file or services/ is a symbolic link that leaves the spec directory; it is never followed"
    ),
    "no-services": "services/ holds no service file: no data is not an empty mesh",
    "service-name-mismatch": "a service file's name differs from its `service:` key",
    # schema
    "schema": "the value does not match the spec schema",
    "unknown-key": "a key the schema does not define",
    "missing-key": "a required key is missing",
    "port-range": "a port is outside 1-65535",
    "invalid-duration": "a duration is not written like 250ms, 2s, 5m or 1h, or is outside its range",
    "invalid-cidr": "an off-cluster range is not an IPv4 CIDR the Kubernetes API server accepts",
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
    "tcp-http-policy": (
        "a dependency on a tcp service sets timeout, retries.per_try_timeout or retries.on, "
        "which TCP proxying cannot apply"
    ),
    "certificate-renewal": "certificates.renew_before is not shorter than certificates.duration",
    "health-check-timing": "a health check's timeout is longer than its interval",
    "health-check-vm-only": "a service running on Kubernetes only sets health_check, which only Nerve on VMs reads",
    "sidecar-path": "a sidecar directory is `/` or not a normalized absolute path (`.`, `..`, `//`, a trailing `/`)",
    "sidecar-overlap": "sidecar.config_dir and sidecar.runtime_dir are the same directory or one is inside the other",
    "sidecar-system-dir": "a sidecar directory is the machine's (/tmp, /etc, /var/run…), which the module takes over",
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
    # drift inputs (what runs, read by `meshc drift`): one line naming the URL or file
    "drift-rendering": "a built tree's data file lacks what drift compares (rebuild with this meshc)",
    "puppetdb-unreachable": "PuppetDB cannot be reached, refused the request, or its TLS material cannot be loaded",
    "puppetdb-response": "PuppetDB answered something that is not its query API's JSON",
    "puppetdb-export": "a PuppetDB export file is unreadable, truncated or not the documented shape",
    "hiera-tree": "the deployed hiera tree given to --hiera cannot be read",
    # meshc drift: its inputs besides the spec
    "drift-dump": "a cluster dump given to `meshc drift` is not a readable `kubectl get -o yaml|json` List",
    "drift-acknowledgement": "the drift acknowledgements file is malformed",
    "drift-usage": "a `meshc drift` option names a cluster the spec does not have, or gives nothing to check",
    # internal: never a spec error; violations are raised as InternalError (exit 3)
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
        """One line, always: whatever a file name or message holds is escaped."""
        return f"{self.span}: {self.severity}: {escape(self.message)}  [{self.code}]"

    def sort_key(self) -> tuple[str, int, int, str, str]:
        return (self.span.file, self.span.line, self.span.col, self.code, self.message)


def error(span: Span, code: str, message: str) -> Diagnostic:
    """An error diagnostic at `span`."""
    return Diagnostic(span=span, code=code, message=message)


class SpecError(Exception):
    """Raised by library code when the spec is invalid; carries every diagnostic found.

    Constructing one with an `internal` diagnostic raises InternalError instead.
    """

    def __init__(self, diagnostics: Iterable[Diagnostic]) -> None:
        self.diagnostics = tuple(sorted(diagnostics, key=Diagnostic.sort_key))
        bugs = [d for d in self.diagnostics if d.code == "internal"]
        if bugs:  # whoever collected them, a meshc bug is never the spec's fault: exit 3, not 2
            raise internal_error(bugs)
        super().__init__(f"{len(self.diagnostics)} error(s) in the spec")


class EnvironmentFailure(Exception):
    """The machine, not the spec, stopped meshc: a path it cannot read or write (exit 4)."""

    def __init__(self, path: str, cause: str) -> None:
        self.path, self.cause = path, cause
        super().__init__(f"{path}: {cause}")


class InternalError(Exception):
    """A bug in meshc: an invariant of the rendering does not hold (exit 3)."""


class UnknownService(LookupError):
    """A command names a service that is not in the spec (a usage error, exit 2)."""


def unknown_service(name: str, known: Iterable[str]) -> UnknownService:
    """The error for a service `name` not among `known`: the closest name, else some of the spec's services; and
    where `name` is a directory, how a spec directory is given (`meshc graph mesh-spec` took it for a service)."""
    import os.path  # only where a name is unknown

    names = sorted(known)
    hint = did_you_mean(name, names) or f"; the spec's services: {some_of(names, 8)}"
    if os.path.isdir(name):
        hint += f"; {quote(name)} is a directory: a spec directory is given as --spec {excerpt(name)}"
    return UnknownService(f"unknown service {quote(name)}{hint}")


def some_of(names: Sequence[str], shown: int) -> str:
    """The first `shown` names, comma-separated, and how many there are in all where some are left out."""
    return ", ".join(names[:shown]) + (f", … ({len(names)} in all)" if len(names) > shown else "")


def internal_error(diagnostics: Iterable[Diagnostic]) -> InternalError:
    """An InternalError listing violated invariants, one `file:line:col` line each (where in the spec they arose)."""
    return InternalError("\n".join(d.format() for d in sorted(diagnostics, key=Diagnostic.sort_key)))


def at_revision(diagnostics: Sequence[Diagnostic], revision: str | None) -> tuple[Diagnostic, ...]:
    """Diagnostics whose files are named `REV:path`, git's own name for a file at a revision."""
    if revision is None:
        return tuple(diagnostics)
    return tuple(replace(d, span=replace(d.span, file=f"{revision}:{d.span.file}")) for d in diagnostics)


def close_match(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to `name`, if one is close enough to be what was meant."""
    import difflib  # only where a name is unknown: not in every command's start (1.1 ms)

    close = difflib.get_close_matches(name, sorted(candidates), n=1, cutoff=0.6)
    return close[0] if close else None


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """A ` (did you mean 'x'?)` suffix for the closest candidate, or ''."""
    close = close_match(name, candidates)
    return f" (did you mean {quote(close)}?)" if close is not None else ""


# Characters that would break a diagnostic's single line or hide in a terminal: every C0 control (a tab
# too: in a file name it reads as spaces, and it splits a line that tools cut at tabs), DEL, C1 controls
# (NEL among them), Unicode line/paragraph separators, noncharacters, and the lone surrogates that stand
# for the bytes of a file name that is not UTF-8.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\ufffe\uffff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# A user value in a message is cut to this many characters (a DNS label, 63, fits whole):
# a diagnostic names, it does not echo.
MAX_EXCERPT = 64


def escape(text: str) -> str:
    """`text` with line breaks, tabs and control characters written as escapes (`\\n`, `\\t`, `\\x00`, `\\u2028`)."""
    return _UNPRINTABLE.sub(
        lambda m: _NAMED.get(
            m.group(), f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}"
        ),
        text,
    )


def excerpt(text: str, limit: int = MAX_EXCERPT) -> str:
    """`text` cut to `limit` characters (marked with `…`) and escaped."""
    return escape(text if len(text) <= limit else text[: limit - 1] + "…")


def quote(text: str) -> str:
    """A user's name or string in a message: single-quoted, as YAML quotes it, cut and escaped."""
    return "'" + excerpt(text).replace("'", "''") + "'"


def yaml_value(value: Any, limit: int = MAX_EXCERPT) -> str:
    """A value as a YAML reader writes it (`null`, `true`, `8080`, `'8080'`, `[a, b]`), cut to a short excerpt."""
    text = _flow(value)
    return (
        excerpt(text, limit)
        if isinstance(value, (list, dict)) or not isinstance(value, str)
        else quote(value)
    )


def yaml_items(items: Sequence[Any], shown: int = 8) -> str:
    """Items as YAML writes them in a flow list, without its brackets (`expires, reason`), as many as `shown`."""
    return some_of([excerpt(_flow(item)) for item in items], shown)


def yaml_type(value: Any) -> str:
    """What a YAML reader calls a value's kind, as a message names it: `a string`, `a list`, `nothing`."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):  # before int: a bool is an int to Python
        return "true or false"
    kinds = ((str, "a string"), (int, "a number"), (list, "a list"), (dict, "a mapping"))
    return next((name for kind, name in kinds if isinstance(value, kind)), "a value")


def _flow(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return (
            value
            if _PLAIN.fullmatch(value) and value.lower() not in ("null", "true", "false")
            else "'" + value.replace("'", "''") + "'"
        )
    if isinstance(value, list):
        return "[" + ", ".join(_flow(item) for item in value[:8]) + (", …]" if len(value) > 8 else "]")
    if isinstance(value, dict):
        items = [f"{_flow(key)}: {_flow(item)}" for key, item in list(value.items())[:8]]
        return "{" + ", ".join(items) + (", …}" if len(value) > 8 else "}")
    return str(value)


# A string that YAML would read back as the same string when written bare inside a flow collection.
_PLAIN = re.compile(r"[A-Za-z_/.][A-Za-z0-9_./-]*")


def format_all(diagnostics: Iterable[Diagnostic]) -> str:
    """All diagnostics, one per line, then a count, as mypy prints them."""
    found = list(diagnostics)
    lines = [d.format() for d in found]
    files = len({d.span.file for d in found})  # not the text before the first ':': `REV:path` names hold one
    lines.append(
        f"Found {len(lines)} error{'s' if len(lines) != 1 else ''} in {files} file{'s' if files != 1 else ''}"
    )
    return "\n".join(lines)
