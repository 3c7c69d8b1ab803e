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
from typing import NoReturn

from compiler.drift.model import Acknowledgement, DriftInputError
from compiler.spec.document import Document, LoadError, parse_document

FILE_NAME = "drift-acknowledgements.yaml"
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_KEYS = ("match", "reason", "expires")


class AcknowledgementError(DriftInputError):
    """A malformed acknowledgements file, with the position of what is wrong."""

    def __init__(self, location: str, message: str) -> None:
        super().__init__(location, message, "drift-acknowledgement")


def read_acknowledgements(name: str, raw: bytes, today: datetime.date) -> tuple[Acknowledgement, ...]:
    """Parse the file; each entry marked expired when `today` is past its date. Raise AcknowledgementError."""
    try:
        document = parse_document(name, raw)
    except LoadError as exc:
        raise AcknowledgementError(str(exc.diagnostic.span), exc.diagnostic.message) from None
    data = document.data
    if (
        not isinstance(data, dict)
        or set(data) != {"acknowledgements"}
        or not isinstance(data["acknowledgements"], list)
    ):
        _fail(
            document, (), "expected one key, `acknowledgements:`, holding a list of {match, reason, expires}"
        )
    return tuple(
        _entry(document, index, entry, today) for index, entry in enumerate(data["acknowledgements"])
    )


def _entry(document: Document, index: int, entry: object, today: datetime.date) -> Acknowledgement:
    path: tuple[str | int, ...] = ("acknowledgements", index)
    if not isinstance(entry, dict) or set(entry) != set(_KEYS):
        keys = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
        _fail(
            document, path, f"an acknowledgement has exactly the keys match, reason, expires (found {keys})"
        )
    for key in _KEYS:
        if not isinstance(entry[key], str) or not entry[key].strip():
            _fail(document, (*path, key), f"`{key}` must be a non-empty string")
    expires = _date(document, (*path, "expires"), entry["expires"])
    return Acknowledgement(
        match=entry["match"],
        reason=entry["reason"],
        expires=entry["expires"],
        location=str(document.span(path)),
        expired=today > expires,
    )


def _date(document: Document, path: tuple[str | int, ...], text: str) -> datetime.date:
    try:
        if _DATE.fullmatch(text):
            return datetime.date.fromisoformat(text)
    except ValueError:
        pass
    _fail(document, path, f"`expires` must be a date written YYYY-MM-DD, not {text!r}")
    raise AssertionError  # unreachable: _fail raises


def _fail(document: Document, path: tuple[str | int, ...], message: str) -> NoReturn:
    raise AcknowledgementError(str(document.span(path)), message)


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
