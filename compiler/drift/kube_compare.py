"""Compare one object meshc renders with its live copy, field by field.

What is compared: every field meshc emits, after normalizing both sides (empty values equal absent
ones, lists compared as sets — every list meshc emits is one —, Go durations by value, the API
version ignored: `get` returns the group's preferred version, which the API server converts to).
What is reported as *extra*: fields and keys inside what meshc emits that the live object has and
meshc does not (a ConfigMap data key added with `kubectl edit` survives every client-side apply),
except the fields API servers and controllers set, listed per kind in SERVER_FIELDS. Labels and
annotations: meshc's own values must match; other tools' keys are not drift (controllers and
admission webhooks add them all the time), but an extra key under meshc's own prefixes is.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import orjson

from compiler.diagnostics import escape
from compiler.diff import diff_values
from compiler.drift.model import (
    EXTRA,
    MODIFIED,
)

# Label and annotation prefixes that are meshc's: an unexpected key under them is drift.
OWN_PREFIXES = ("meshc.dev/", "meshc.io/")


# Per kind, the fields API servers and controllers add to meshc's objects: never extra. Paths are
# dotted, `[]` standing for every list item. Top-level `status` is dropped for every kind.
SERVER_FIELDS: Mapping[str, frozenset[str]] = {
    "Namespace": frozenset({"spec"}),  # spec.finalizers: [kubernetes]
    "ServiceAccount": frozenset({"secrets", "imagePullSecrets"}),  # token and image-pull controllers
    "Secret": frozenset({"data"}),  # the token controller writes token, ca.crt and namespace
    "RoleBinding": frozenset({"subjects[].apiGroup"}),
    "Service": frozenset(
        {
            "spec.clusterIPs",
            "spec.ipFamilies",
            "spec.ipFamilyPolicy",
            "spec.internalTrafficPolicy",
            "spec.sessionAffinity",
            "spec.type",
        }
    ),
}


# Defaults the API server fills in when a field is left out, applied to both sides so that a field
# meshc stops emitting does not read as drift: (kind, list path, item key, default or "=port").
ITEM_DEFAULTS: tuple[tuple[str, str, str, Any], ...] = (
    ("Service", "spec.ports", "protocol", "TCP"),
    ("Service", "spec.ports", "targetPort", "=port"),
    ("NetworkPolicy", "spec.ingress[].ports", "protocol", "TCP"),
)
DURATION_FIELDS = frozenset({("Certificate", "spec.duration"), ("Certificate", "spec.renewBefore")})
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_DURATION_NS = {
    "ns": 1,
    "us": 10**3,
    "µs": 10**3,
    "ms": 10**6,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
}
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def compare_object(expected: Mapping[str, Any], live: Mapping[str, Any]) -> list[tuple[str, str, Any, Any]]:
    """(kind, path, expected, live) for every field meshc emits that differs, and every extra one inside them."""
    kind = expected["kind"]
    out: list[tuple[str, str, Any, Any]] = []
    _compare_metadata(expected["metadata"], live.get("metadata") or {}, out)
    body = {k: v for k, v in expected.items() if k not in ("apiVersion", "kind", "metadata")}
    rest = {k: v for k, v in live.items() if k not in ("apiVersion", "kind", "metadata", "status")}
    _compare(kind, _normalize(kind, body, ""), _normalize(kind, rest, ""), "", "", out)
    return out


def _compare_metadata(
    expected: Mapping[str, Any], live: Mapping[str, Any], out: list[tuple[str, str, Any, Any]]
) -> None:
    for field in ("labels", "annotations"):
        want, got = expected.get(field) or {}, live.get(field) or {}
        for key, value in want.items():
            if got.get(key) != value:
                out.append((MODIFIED, f"metadata.{field}[{key}]", value, got.get(key)))
        for key in sorted(set(got) - set(want)):
            if key.startswith(OWN_PREFIXES):
                out.append((EXTRA, f"metadata.{field}[{key}]", None, got[key]))


def _compare(
    kind: str, want: Any, got: Any, path: str, pattern: str, out: list[tuple[str, str, Any, Any]]
) -> None:
    if want == got:
        return
    if isinstance(want, dict) and isinstance(got, dict):
        _compare_keyed(kind, want, got, lambda key: (_child(path, key), _child(pattern, key)), out)
    elif isinstance(want, list) and isinstance(got, list) and _named(want) and _named(got):
        _compare_keyed(
            kind,
            {i["name"]: i for i in want},
            {i["name"]: i for i in got},
            lambda name: (f"{path}[{escape(str(name))}]", f"{pattern}[]"),
            out,
        )  # e.g. spec.ports[mesh].port
    elif isinstance(want, str) and isinstance(got, str) and want[:1] in ("{", "[") and got[:1] in ("{", "["):
        out += [
            (MODIFIED, path + _suffix(c.path), c.old, c.new) for c in diff_values(want, got)
        ]  # JSON documents (ConfigMap data)
    else:
        out.append((MODIFIED, path, want, got))


def _compare_keyed(
    kind: str,
    want: Mapping[str, Any],
    got: Mapping[str, Any],
    child: Callable[[str], tuple[str, str]],
    out: list[tuple[str, str, Any, Any]],
) -> None:
    """Entries by key: absent live (modified to nothing), extra live (unless a server field), or compared in place."""
    for key in [*want, *sorted(k for k in got if k not in want)]:
        path, pattern = child(key)
        if key not in got:
            out.append((MODIFIED, path, want[key], None))
        elif key not in want:
            if pattern not in SERVER_FIELDS.get(kind, ()):
                out.append((EXTRA, path, None, got[key]))
        else:
            _compare(kind, want[key], got[key], path, pattern, out)


def _suffix(path: str) -> str:
    return "" if path == "." else (path if path.startswith("[") else f".{path}")


def _child(path: str, key: Any) -> str:
    text = escape(str(key))  # a live key reaches the operator's terminal: no control characters
    if not path:
        return text if _IDENT.fullmatch(text) else f"[{text}]"
    return f"{path}.{text}" if _IDENT.fullmatch(text) else f"{path}[{text}]"


def _named(items: list[Any]) -> bool:
    names = [i.get("name") for i in items if isinstance(i, dict)]
    return (
        len(names) == len(items) and all(isinstance(n, str) for n in names) and len(set(names)) == len(names)
    )


def _normalize(kind: str, value: Any, pattern: str) -> Any:
    """Empty values dropped, server fields inside list items dropped, defaults filled, lists as sorted sets,
    durations by value."""
    if isinstance(value, dict):
        value = _with_defaults(kind, value, pattern)
        # str(k): a YAML dump may hold keys JSON cannot (`1: x`); what is reported must stay JSON
        return {str(k): _normalize(kind, v, _child(pattern, k)) for k, v in value.items() if not _empty(v)}
    if isinstance(value, list):
        items = [_normalize(kind, item, pattern + "[]") for item in value]
        if _named(items):
            return items  # matched by name in _compare
        return sorted(items, key=lambda item: orjson.dumps(item, option=orjson.OPT_SORT_KEYS))
    if (kind, pattern) in DURATION_FIELDS and isinstance(value, str):
        return _duration(value)
    if isinstance(
        value, (set, frozenset)
    ):  # YAML's !!set: sorted, so the report does not depend on PYTHONHASHSEED
        return sorted(map(str, value))
    if not isinstance(value, (str, int, float)) and value is not None:  # bool is an int
        return str(value)  # YAML's !!binary, !!set, timestamps: compared and reported as text
    return value


def _with_defaults(kind: str, item: dict[str, Any], pattern: str) -> dict[str, Any]:
    if pattern.endswith("[]"):
        server = SERVER_FIELDS.get(kind, frozenset())
        item = {k: v for k, v in item.items() if f"{pattern}.{k}" not in server}
        for default_kind, path, key, default in ITEM_DEFAULTS:
            if default_kind == kind and f"{path}[]" == pattern and key not in item:
                item = {**item, key: item.get("port") if default == "=port" else default}
    return item


def _empty(value: Any) -> bool:
    return value is None or value == {} or value == []


def _duration(text: str) -> str:
    """A Go duration (`720h`, `720h0m0s`, `43200m`) in the largest unit that holds it exactly, so equal
    durations compare equal."""
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return text  # not a duration: compared as written
    nanoseconds = sum(Decimal(number) * _DURATION_NS[unit] for number, unit in parts)
    for unit in ("h", "m", "s", "ms", "us"):
        if nanoseconds % _DURATION_NS[unit] == 0:
            return f"{nanoseconds // _DURATION_NS[unit]}{unit}"
    return f"{nanoseconds}ns"
