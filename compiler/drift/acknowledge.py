"""Known drift: the spec repository's drift-acknowledgements.yaml accepts named drift items until a date.

    acknowledgements:
      - match: "kubernetes/kube-sjc-a/ConfigMap/upload/upload-mesh-envoy#extra:data[debug.json]"
        reason: "INC-4711: debug listener, removed after the incident"
        expires: 2026-12-31

`match` is an item id as `meshc drift --format json` prints it, or a pattern over ids where `*`
matches any run of characters and nothing else is special (ids hold brackets:
`kubernetes/kube-sjc-a/*#extra:metadata.annotations[meshc.dev/*]`). An acknowledgement holds up to
and including its `expires` day; after it, it accepts nothing and is itself a failing finding, so
known drift cannot quietly become permanent.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Sequence
from dataclasses import replace

from compiler.diagnostics import yaml_items, yaml_type, yaml_value
from compiler.drift.model import Acknowledgement, DriftInputError
from compiler.spec.document import Document, LoadError, parse_document

FILE_NAME = "drift-acknowledgements.yaml"
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_KEYS = ("match", "reason", "expires")


class AcknowledgementError(DriftInputError):
    """A malformed acknowledgements file: every problem found, one line each, with the position of what is wrong."""

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        location, message = problems[0]
        super().__init__(location, message, "drift-acknowledgement")
        self.problems = tuple(problems)
        self.args = ("\n".join(f"{where}: error: {what}  [{self.code}]" for where, what in self.problems),)


def read_acknowledgements(name: str, raw: bytes, today: datetime.date) -> tuple[Acknowledgement, ...]:
    """Parse the file; each entry marked expired when `today` is past its date. Raise AcknowledgementError naming
    every malformed entry (a file fixed one error per run would take as many runs as it has errors)."""
    try:
        document = parse_document(name, raw)
    except LoadError as exc:
        raise AcknowledgementError([(str(exc.diagnostic.span), exc.diagnostic.message)]) from None
    data = document.data
    if (
        not isinstance(data, dict)
        or set(data) != {"acknowledgements"}
        or not isinstance(data["acknowledgements"], list)
    ):
        raise AcknowledgementError(
            [
                (
                    str(document.span(())),
                    "expected one key, `acknowledgements:`, holding a list of {match, reason, expires}",
                )
            ]
        )
    problems: list[tuple[str, str]] = []
    entries = [
        _entry(document, index, entry, today, problems)
        for index, entry in enumerate(data["acknowledgements"])
    ]
    if problems:
        raise AcknowledgementError(problems)
    return tuple(entry for entry in entries if entry is not None)


def _entry(
    document: Document, index: int, entry: object, today: datetime.date, problems: list[tuple[str, str]]
) -> Acknowledgement | None:
    """One entry, or None with its problems added to `problems`: every problem it has, so that a key missing or
    extra does not hide a bad value beside it (a fix would otherwise take one run per problem)."""
    path: tuple[str | int, ...] = ("acknowledgements", index)
    if not isinstance(entry, dict):
        problems.append((str(document.span(path)), f"{_SHAPE} (found {yaml_type(entry)})"))
        return None
    before = len(problems)
    missing, extra = [key for key in _KEYS if key not in entry], sorted(set(entry) - set(_KEYS))
    if missing or extra:
        problems.append((str(document.span(path)), _keys_problem(list(entry), missing, extra)))
    for key in (key for key in _KEYS if key in entry):
        problem = _value_problem(key, entry[key])
        if problem is not None:
            problems.append((str(document.span((*path, key))), problem))
    expires = _date(entry.get("expires"))
    if len(problems) > before or expires is None:
        return None
    return Acknowledgement(
        match=entry["match"],
        reason=entry["reason"],
        expires=entry["expires"],
        location=str(document.span(path)),
        expired=today > expires,
    )


_SHAPE = "an acknowledgement has exactly the keys match, reason, expires"


def _keys_problem(keys: list[str], missing: list[str], extra: list[str]) -> str:
    """`… (found expires, reason; add match)`: the keys as written, and what to add and remove."""
    found = f"found {yaml_items(sorted(keys))}" if keys else "found no keys"
    fixes = [f"add {yaml_items(missing)}"] * bool(missing) + [f"remove {yaml_items(extra)}"] * bool(extra)
    return f"{_SHAPE} ({found}; {' and '.join(fixes)})"


def _value_problem(key: str, value: object) -> str | None:
    """What is wrong with the value of `key` (match, reason or expires), in YAML's words; None if nothing is."""
    wanted = "a date written YYYY-MM-DD" if key == "expires" else "a non-empty string"
    if value is None:
        return f"`{key}` has no value; it needs {wanted}"
    if key == "expires" and _date(value) is None:
        shown = yaml_value(value) if isinstance(value, (str, int)) else yaml_type(value)
        return f"`expires` must be {wanted}, not {shown}"
    if key == "expires":
        return None
    if isinstance(value, str) and value.strip():
        return None
    if isinstance(value, str):
        return f"`{key}` must be {wanted}"
    quoted = f"; if you mean the text {yaml_value(value)}, quote it" if isinstance(value, int) else ""
    return f"`{key}` must be {wanted}, not {yaml_type(value)}{quoted}"


def _date(text: object) -> datetime.date | None:
    """A date written YYYY-MM-DD, or None (for anything else, a number or a list too)."""
    if not isinstance(text, str):
        return None
    try:
        return datetime.date.fromisoformat(text) if _DATE.fullmatch(text) else None
    except ValueError:
        return None


def acknowledge(item_id: str, acknowledgements: Sequence[Acknowledgement]) -> Acknowledgement | None:
    """The first unexpired acknowledgement whose match accepts this item id, or None."""
    for ack in acknowledgements:
        if not ack.expired and _pattern(ack.match).fullmatch(item_id):
            return ack
    return None


def _pattern(match: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in match.split("*")), re.DOTALL)


def mark_used(acknowledgements: Sequence[Acknowledgement], used: set[str]) -> tuple[Acknowledgement, ...]:
    """The acknowledgements with `used` set for those whose location is in `used`."""
    return tuple(replace(ack, used=ack.location in used) for ack in acknowledgements)
