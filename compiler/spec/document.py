"""Parse one spec file's YAML into a Document: plain data and a source map (data path -> span), refusing risky YAML.

The YAML is read event by event with libyaml's parser rather than through a constructor, so
that every value keeps its position, duplicate keys and aliases are caught, and scalars are
resolved by our own rules: only `true`/`false`, decimal integers and `null` are anything but
strings, so a datacenter named `no` or a version `1.10` stays the string it looks like.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

import yaml

from compiler.diagnostics import Diagnostic, Span, quote
from compiler.spec import MAX_FILE_BYTES as MAX_FILE_BYTES

DataPath = tuple[str | int, ...]

# libyaml's parser when PyYAML was built with it (yaml.CParser is not exported at the top level).
_Parser = getattr(yaml, "CSafeLoader", None)
# Real specs nest about 6 levels; the limit keeps hostile input from exhausting the Python stack.
MAX_DEPTH = 32
_INT = re.compile(r"[-+]?(0|[1-9][0-9]*)")
_NULLS = frozenset({"null", "Null", "NULL", "~", ""})
_BOOLS = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}


# A position as the parser records it: 1-based line and column.
Position = tuple[int, int]


class Spans(Mapping[DataPath, Span]):
    """A document's positions by data path, each made a Span record only when asked for.

    A 1,000-service spec holds ~70,000 positions and a build asks for a few per service: making a Span
    for each as the parser met it put the parse at 0.18 s CPU instead of 0.13 (medians of 5
    interleaved processes).
    """

    __slots__ = ("_file", "_positions")

    def __init__(self, file: str, positions: Mapping[DataPath, Position]) -> None:
        self._file = file
        self._positions = positions

    def __getitem__(self, path: DataPath) -> Span:
        line, col = self._positions[path]
        return Span(file=self._file, line=line, col=col)

    def get(self, path: DataPath, default: Any = None) -> Any:  # one lookup, no KeyError for a miss
        """The span at `path`, or `default`."""
        found = self._positions.get(path)
        return default if found is None else Span(file=self._file, line=found[0], col=found[1])

    def __iter__(self) -> Iterator[DataPath]:
        return iter(self._positions)

    def __len__(self) -> int:
        return len(self._positions)

    def positions(self) -> Mapping[DataPath, Position]:
        """The (line, col) of every path, without making Span records (for a caller that wants them all)."""
        return self._positions


@dataclass(frozen=True, kw_only=True, slots=True)
class Document:
    """One spec file's data with the span of every value and of every mapping key."""

    file: str
    data: Any
    spans: Mapping[DataPath, Span] = field(default_factory=dict)
    key_spans: Mapping[DataPath, Span] = field(default_factory=dict)

    def span(self, path: DataPath) -> Span:
        """The span of the value at `path`, or of its nearest ancestor that has one."""
        for cut in range(len(path), -1, -1):
            found = self.spans.get(path[:cut])
            if found is not None:
                return found
        return Span(file=self.file)

    def key_span(self, path: DataPath) -> Span:
        """The span of the mapping key that holds `path` (falls back to the value's span)."""
        return self.key_spans.get(path) or self.span(path)


class LoadError(Exception):
    """A file could not be read as spec YAML."""

    def __init__(self, diagnostic: Diagnostic) -> None:
        self.diagnostic = diagnostic
        super().__init__(diagnostic.format())


def parse_document(name: str, raw: bytes) -> Document:
    """Parse one spec file's bytes into a Document; raise LoadError with a positioned diagnostic."""
    if len(raw) > MAX_FILE_BYTES:
        raise LoadError(
            _error(
                name,
                1,
                1,
                "file-too-large",
                f"file is larger than {MAX_FILE_BYTES // 1024} KiB; split it or trim it",
            )
        )
    text = _decode(name, raw)
    _check_characters(name, text)
    builder = _Builder(name)
    try:
        parser = _loader_class()(text)
        try:
            builder.run(iter(parser.get_event, None))  # get_event gives None after the stream ends
        finally:
            parser.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = _position(text, mark)
        raise LoadError(_error(name, line, col, "yaml-syntax", _syntax_message(exc, text, mark))) from None
    except yaml.YAMLError as exc:  # libyaml reader errors carry no mark object
        raise LoadError(
            _error(name, 1, 1, "yaml-syntax", f"invalid YAML: {str(exc).splitlines()[0]}")
        ) from None
    if builder.documents == 0 or builder.root is None:
        raise LoadError(_error(name, 1, 1, "file-empty", "file is empty; it must hold one YAML mapping"))
    return Document(
        file=name,
        data=builder.root,
        spans=Spans(name, builder.spans),
        key_spans=Spans(name, builder.key_spans),
    )


# What YAML allows in a stream (its "printable" set), minus NEL, U+2028 and U+2029: YAML 1.1 parsers
# (libyaml) count those as line breaks, YAML 1.2 and editors do not, so text after one inside a
# comment would be read as YAML nobody sees, and every later line number would be off.
@functools.cache  # compiled when first needed: 7 ms, in every process that parses a file otherwise
def _not_allowed() -> re.Pattern[str]:
    return re.compile("[^\t\n\r\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


# What of ASCII is allowed: tab, line feed, carriage return and the printable characters.
_ALLOWED_ASCII = bytes([9, 10, 13, *range(0x20, 0x7F)])
_BREAKS = re.compile("\r\n|\r|\n")  # YAML's line breaks, once NEL, U+2028 and U+2029 are refused
_CHARACTER_NAMES = {
    "\x85": "NEL (next line)",
    "\u2028": "U+2028 (line separator)",
    "\u2029": "U+2029 (paragraph separator)",
}


def _check_characters(name: str, text: str) -> None:
    """Refuse a character YAML forbids or reads as a line break where editors see none, at its real position."""
    if text.isascii() and not text.encode("ascii").translate(None, _ALLOWED_ASCII):
        return  # most spec files: one C-level pass, no pattern to compile
    found = _not_allowed().search(text)
    if found is None:
        return
    char, at = found.group(), found.start()
    line = len(_BREAKS.findall(text, 0, at)) + 1
    col = at - (max(text.rfind("\n", 0, at), text.rfind("\r", 0, at)) + 1) + 1
    what = _CHARACTER_NAMES.get(char)
    message = (
        f"{what} is a line break to some YAML parsers and not to others or to editors; "
        "use a plain newline or remove it"
        if what
        else f"control character U+{ord(char):04X} is not allowed in YAML; "
        "remove it (write it as an escape in a double-quoted string)"
    )
    raise LoadError(_error(name, line, col, "yaml-character", message))


def _position(text: str, mark: Any) -> tuple[int, int]:
    """1-based line and column of a libyaml mark, counted in the text itself and never past its end.

    libyaml puts an error at the end of a file without a final newline on a line after the last one.
    """
    index = getattr(mark, "index", None)
    if not isinstance(index, int):
        return (mark.line + 1, mark.column + 1) if mark else (1, 1)
    body = text.removeprefix("\ufeff")  # libyaml's index does not count the byte-order mark
    at = min(index, len(body))
    if at == len(body) and body.endswith(("\n", "\r")):
        at -= (
            2 if body.endswith("\r\n") else 1
        )  # the end of the file: point at the last line, not at one past it
    breaks = _BREAKS.findall(body, 0, at)
    line_start = max(body.rfind("\n", 0, at), body.rfind("\r", 0, at)) + 1
    return len(breaks) + 1, at - line_start + 1


def _syntax_message(exc: yaml.MarkedYAMLError, text: str, mark: Any) -> str:
    """libyaml's complaint, with the fix for the mistake behind the most common one."""
    at = getattr(mark, "index", None)
    if isinstance(at, int) and text.removeprefix("\ufeff")[at : at + 1] == "\t":
        return "tabs cannot indent YAML (and cannot start a value); indent with spaces"
    return f"invalid YAML: {exc.problem or exc.context}"


def _loader_class() -> type:
    return yaml.CSafeLoader if _Parser is not None else yaml.SafeLoader


def _decode(name: str, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = before.count(b"\n") + 1
        col = exc.start - (before.rfind(b"\n") + 1) + 1
        raise LoadError(
            _error(
                name,
                line,
                col,
                "file-encoding",
                f"byte 0x{raw[exc.start]:02x} is not UTF-8; save the file as UTF-8",
            )
        ) from None


def _error(name: str, line: int, col: int, code: str, message: str) -> Diagnostic:
    return Diagnostic(span=Span(file=name, line=line, col=col), code=code, message=message)


# int() refuses a decimal literal longer than sys.get_int_max_str_digits() (CPython's guard: converting one
# takes time quadratic in its length); 640 is the lowest that limit can be set to, so int() never refuses a
# shorter one. The widest number a spec allows has 7 digits.
LONGEST_INT = 640


class LongInteger(int):
    """An integer literal too long to convert (see LONGEST_INT), standing for the smallest number with as many
    digits, which is above every bound a schema sets, and printed as written: a range error quotes the user's
    value, not a ValueError from converting it back to text. Two such literals of one length compare equal,
    which no check can mind: no integer that long is valid anywhere."""

    text: str

    def __new__(cls, literal: str) -> LongInteger:
        text = literal.removeprefix("+")
        magnitude = 10 ** (len(text.lstrip("-")) - 1)
        number = super().__new__(cls, -magnitude if text.startswith("-") else magnitude)
        number.text = text
        return number

    def __repr__(self) -> str:
        return self.text

    def __str__(self) -> str:
        return self.text

    def __format__(self, spec: str) -> str:
        return format(self.text, spec)


def resolve_plain(value: str) -> Any:
    """Our scalar rules for unquoted YAML scalars (see the module docstring)."""
    if value in _NULLS:
        return None
    if value in _BOOLS:
        return _BOOLS[value]
    if _INT.fullmatch(value):
        return int(value) if len(value) <= LONGEST_INT else LongInteger(value)
    return value


class _Builder:
    """Builds plain data from parser events, recording a span for each value and key."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.root: Any = None
        self.documents = 0
        self.spans: dict[DataPath, Position] = {}
        self.key_spans: dict[DataPath, Position] = {}

    def run(self, events: Iterator[yaml.Event]) -> None:
        for event in events:
            if isinstance(event, yaml.DocumentStartEvent):
                self.documents += 1
                if self.documents > 1:
                    self._fail(
                        event,
                        "yaml-multi-document",
                        "a spec file holds one YAML document; remove the extra `---`",
                    )
            elif isinstance(event, yaml.NodeEvent):
                self.root = self._node(event, events, ())

    def _position(self, event: yaml.Event) -> Position:
        mark = event.start_mark
        if mark is None:  # the parser marks every event; a hand-made one points at the file's start
            return (1, 1)
        return (mark.line + 1, mark.column + 1)

    def _fail(self, event: yaml.Event, code: str, message: str) -> NoReturn:
        line, col = self._position(event)
        raise LoadError(_error(self.name, line, col, code, message))

    def _node(self, event: yaml.Event, events: Iterator[yaml.Event], path: DataPath) -> Any:
        if len(path) >= MAX_DEPTH:
            self._fail(
                event,
                "yaml-syntax",
                f"values are nested deeper than {MAX_DEPTH} levels; the spec never needs that many",
            )
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            self._fail(
                event, "yaml-alias", "anchors and aliases (&name, *name) are not allowed; write the value out"
            )
        tag = _explicit_tag(event)
        if tag is not None:
            self._fail(event, "yaml-tag", f"explicit tag {quote(tag)} is not allowed; write the plain value")
        self.spans[path] = self._position(event)
        if (
            isinstance(event, yaml.ScalarEvent)
            and not event.value
            and not event.style
            and path in self.key_spans
        ):
            # An empty value (`dependencies:`) has no text to point at: libyaml marks it after the colon, past
            # the end of the line, or on the line after a `? key`. Its key is what the user reads and fixes.
            self.spans[path] = self.key_spans[path]
        if isinstance(event, yaml.ScalarEvent):
            return resolve_plain(event.value) if not event.style else event.value
        if isinstance(event, yaml.SequenceStartEvent):
            return self._sequence(events, path)
        return self._mapping(events, path)

    def _sequence(self, events: Iterator[yaml.Event], path: DataPath) -> list[Any]:
        items: list[Any] = []
        for event in events:
            if isinstance(event, yaml.SequenceEndEvent):
                return items
            items.append(self._node(event, events, (*path, len(items))))
        return items

    def _mapping(self, events: Iterator[yaml.Event], path: DataPath) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for event in events:
            if isinstance(event, yaml.MappingEndEvent):
                return result
            if not isinstance(event, yaml.ScalarEvent):
                self._fail(event, "yaml-syntax", "mapping keys must be plain names, not lists or mappings")
            if event.anchor or _explicit_tag(event) is not None:
                self._fail(
                    event,
                    "yaml-alias" if event.anchor else "yaml-tag",
                    "anchors and tags are not allowed on keys",
                )
            key = event.value
            child = (*path, key)
            if key in result:
                first_line = self.key_spans[child][0]
                self._fail(
                    event,
                    "yaml-duplicate-key",
                    f"duplicate key {quote(key)} (first defined at line {first_line}); remove one",
                )
            self.key_spans[child] = self._position(event)
            result[key] = self._node(next(events), events, child)
        return result


def _explicit_tag(event: yaml.Event) -> str | None:
    # A scalar with any tag was tagged by hand; a collection's tag is explicit when not implicit.
    if isinstance(event, yaml.ScalarEvent):
        return event.tag or None
    if isinstance(event, yaml.CollectionStartEvent) and not event.implicit:
        return event.tag or None
    return None
