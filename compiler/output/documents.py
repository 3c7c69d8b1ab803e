"""The document cache beside an output tree: each spec file's parsed, schema-valid Document by content hash.

`.<output>.meshc-documents` sits beside `output/`, next to the build cache. A rebuild after a
one-service edit would otherwise parse and schema-check all 1,000 files again, for one that changed.
Each line after the header records one Document as [sha256 of the file's bytes, file name, data,
spans, key spans], and is written only after a build whose whole spec passed every check, so a
recorded document is the parse of those bytes and passed the schema (and the file-name check) with
this code. The cross-file checks, lowering and rendering still run on the whole spec.

It is a hint, never trusted blindly, under the build cache's rules: the first line is the sha256 of
the rest (a truncated, corrupt or hand-edited file fails the check), the second names the format,
meshc's version and code fingerprint (another meshc's documents are not this one's parse), and every
line is checked for the shape meshc writes. A file that fails any of it is ignored as a whole, and
a path there that does not start like one of meshc's is neither read as one nor replaced.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from compiler import __version__
from compiler.diagnostics import Span
from compiler.output.cache import MAGIC as CACHE_MAGIC
from compiler.output.cache import cache_path, code_fingerprint
from compiler.output.disk import read_regular
from compiler.output.sealed import foreign, is_ours, replace_file, rewrite_file, sealed, unsealed

if TYPE_CHECKING:
    from compiler.spec.document import DataPath, Document

DOCUMENTS_FORMAT = 1
MAX_DOCUMENTS_BYTES = 256 << 20  # 1,000 services record ~3 MB; 10,000 ~30 MB
_MAGIC = b"meshc-documents"
_DEPTH = 40  # deeper than the parser's MAX_DEPTH: recorded data nested deeper is not a parse meshc wrote
Line = bytes | memoryview  # a record line: its bytes, or a view into the cache file as read


@dataclass(frozen=True, kw_only=True, slots=True)
class Known:
    """A recorded document whose file still holds the recorded bytes, and its line (rewritten verbatim)."""

    document: Document
    line: Line


class SpanTable(Mapping["DataPath", Span]):
    """A document's spans as recorded, each made a Span only when asked for.

    A build asks for a few spans per service (a model's positions) and all of them only to report an
    error; making 80,000 Span records for a 1,000-service spec on every rebuild cost as much as parsing.
    Keys are the JSON text of the path, so that `"0"` (a key) and `0` (an index) stay apart.
    """

    __slots__ = ("_file", "_raw")

    def __init__(self, file: str, raw: Mapping[str, list[int]]) -> None:
        self._file = file
        self._raw = raw

    def __getitem__(self, path: DataPath) -> Span:
        line, col = self._raw[orjson.dumps(list(path)).decode()]
        return Span(file=self._file, line=line, col=col)

    def __iter__(self) -> Iterator[DataPath]:
        return (tuple(orjson.loads(key)) for key in self._raw)

    def __len__(self) -> int:
        return len(self._raw)

    def recorded(self) -> Mapping[str, list[int]]:
        """The table as the cache file holds it."""
        return self._raw


def documents_path(real: Path) -> Path:
    """The document cache of an output directory, beside it."""
    return real.parent / f".{real.name}.meshc-documents"


def read_documents(real: Path, hashes: Mapping[str, str]) -> dict[str, Known]:
    """The recorded documents of the files whose sha256 (by name, in `hashes`) is the recorded one; {} if none or
    if the cache is not one this meshc wrote."""
    lines = _lines(real)
    if lines is None:
        return {}
    known: dict[str, Known] = {}
    for line in lines:
        record = _record(line)
        if record is None:
            return {}  # a line meshc does not write: the whole file is another's
        digest, name, document = record
        if hashes.get(name) == digest:
            known[name] = Known(document=document, line=line)
    return known


def _lines(real: Path) -> list[Line] | None:
    """The record lines of the document cache beside `real`, if its checksum and header are this meshc's."""
    path = documents_path(real)
    raw = read_regular(path, MAX_DOCUMENTS_BYTES) if is_ours(path, _MAGIC) else None
    if raw is None:
        return None
    if unsealed(_MAGIC, raw) is None:
        return None
    _, header, *lines = _split(raw)  # the seal's line, then the body's
    return lines if _is_ours_header(header) else None


def _split(raw: bytes) -> list[Line]:
    """`raw.split(b"\\n")` as views into `raw`, not copies: 2.3 ms and 800 page faults less of a one-service
    rebuild at 1,000 services (3.4 MB of lines, written back as they are)."""
    view, find, start = memoryview(raw), raw.find, 0
    lines: list[Line] = []
    while (end := find(b"\n", start)) >= 0:
        lines.append(view[start:end])
        start = end + 1
    lines.append(view[start:])
    return lines


# A record line starts `["<sha256>","<file name>",`, as `document_line` writes it.
_PREFIX = re.compile(rb'\["([0-9a-f]{64})","((?:[^"\\]|\\.)*)",')


def read_lines(real: Path, hashes: Mapping[str, str]) -> dict[str, Line] | None:
    """The recorded lines, unparsed, of the files whose sha256 (by name, in `hashes`) is the recorded one; None if
    the cache is not one this meshc wrote.

    For a partial build (compiler.partial), which parses only the few lines it needs (`parse_lines`) and
    writes the others back as they are: each line is checked for meshc's shape when it is parsed.
    """
    lines = _lines(real)
    if lines is None:
        return None
    found: dict[str, Line] = {}
    for line in lines:
        match = _PREFIX.match(line)
        if match is None:
            return None  # a line meshc does not write: the whole file is another's
        try:
            name = orjson.loads(b'"' + match[2] + b'"')
        except orjson.JSONDecodeError:
            return None
        if hashes.get(name) == match[1].decode():
            found[name] = line
    return found


def parse_lines(lines: Mapping[str, Line], names: Iterable[str]) -> dict[str, Document] | None:
    """The documents recorded on the lines of `names` (from `read_lines`); None if one is missing or not meshc's."""
    documents: dict[str, Document] = {}
    for name in names:
        line = lines.get(name)
        record = _record(line) if line is not None else None
        if record is None or record[1] != name:
            return None
        documents[name] = record[2]
    return documents


def _is_ours_header(header: Line) -> bool:
    try:
        body = orjson.loads(header)
    except orjson.JSONDecodeError:
        return False
    expected = {"format": DOCUMENTS_FORMAT, "meshc_version": __version__, "code": code_fingerprint()}
    return isinstance(body, dict) and body == expected


def _record(line: Line) -> tuple[str, str, Document] | None:
    """One line as (sha256, file name, Document), or None if it is not the shape meshc writes."""
    from compiler.spec.document import Document

    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not (isinstance(value, list) and len(value) == 5):
        return None
    digest, name, data, spans, key_spans = value
    if not (isinstance(digest, str) and isinstance(name, str) and _is_data(data, 0)):
        return None
    if not (_is_table(spans) and _is_table(key_spans)):
        return None
    document = Document(
        file=name, data=data, spans=SpanTable(name, spans), key_spans=SpanTable(name, key_spans)
    )
    return digest, name, document


def _is_data(value: Any, depth: int) -> bool:
    """Whether `value` is what the spec parser builds: str, int, bool, None, lists and str-keyed mappings."""
    if value is None or isinstance(value, (str, int)):  # bool is an int
        return True
    if depth > _DEPTH:
        return False
    if isinstance(value, list):
        return all(_is_data(item, depth + 1) for item in value)
    if isinstance(value, dict):
        return all(isinstance(key, str) and _is_data(item, depth + 1) for key, item in value.items())
    return False


def _is_table(value: Any) -> bool:
    return isinstance(value, dict) and all(
        type(v) is list and len(v) == 2 and type(v[0]) is int and type(v[1]) is int for v in value.values()
    )


def write_documents(
    real: Path,
    documents: Mapping[str, Document],
    hashes: Mapping[str, str],
    known: Mapping[str, Known],
    *,
    renamed: bool = False,
) -> bool:
    """Record the documents of a spec that passed every check, beside output directory `real`.

    `hashes`: file name -> sha256 of the bytes each document was parsed from; a document read from the
    cache (in `known`) keeps its line. Best effort, like the build cache: returns whether it was written.
    `renamed`: through a temporary file and a rename, never over the previous file (a forked worker, which the
    build kills if it fails, must not leave the cache cut short: sealed.rewrite_file).
    """
    lines: dict[str, Line] = {}
    for name, document in documents.items():
        found = known.get(name)
        if found is not None and found.document is document:
            lines[name] = found.line
        elif name in hashes:
            line = document_line(hashes[name], document)
            if line is not None:
                lines[name] = line
    return write_lines(real, lines, renamed=renamed)


def write_changed_lines(
    real: Path,
    lines: Mapping[str, Line],
    documents: Mapping[str, Document],
    changed: Iterable[str],
    hashes: Mapping[str, str],
) -> bool:
    """The document cache of a partial build: the recorded `lines` (`read_lines`) of the files still in `hashes`
    as they are, a new line for each file `changed` (its document in `documents`)."""
    kept = {name: line for name, line in lines.items() if name in hashes}
    for name in changed:
        kept.pop(name, None)
        line = document_line(hashes[name], documents[name])
        if line is not None:
            kept[name] = line
    return write_lines(real, kept)


def write_lines(real: Path, lines: Mapping[str, Line], *, renamed: bool = False) -> bool:
    """Write the document cache beside `real` from its record lines by file name (see `write_documents`)."""
    target = documents_path(real)
    if foreign(target, _MAGIC):
        return False
    header = orjson.dumps(
        {"format": DOCUMENTS_FORMAT, "meshc_version": __version__, "code": code_fingerprint()},
        option=orjson.OPT_SORT_KEYS,
    )
    body = b"\n".join([header, *(line for _, line in sorted(lines.items()))])
    return (replace_file if renamed else rewrite_file)(target, sealed(_MAGIC, body))


def document_line(digest: str, document: Document) -> bytes | None:
    """One document as a line; None for one JSON cannot hold exactly (an integer beyond 64 bits): it is parsed again."""
    try:
        return orjson.dumps(
            [digest, document.file, document.data, _table(document.spans), _table(document.key_spans)]
        )
    except (orjson.JSONEncodeError, TypeError):
        return None


def _table(spans: Mapping[DataPath, Span]) -> Mapping[str, list[int]]:
    if isinstance(spans, SpanTable):
        return spans.recorded()
    # loaded by now: a document was parsed (no-op builds stay yaml-free)
    from compiler.spec.document import Spans

    # the parser's positions as they are, not a Span made for each (0.036 s, not 0.101)
    if isinstance(spans, Spans):
        return {orjson.dumps(list(path)).decode(): list(at) for path, at in spans.positions().items()}
    return {orjson.dumps(list(path)).decode(): [span.line, span.col] for path, span in spans.items()}


def foreign_cache_notes(real: Path) -> tuple[str, ...]:
    """A sentence for each cache path beside output directory `real` that holds something meshc did not write."""
    return tuple(
        f"{path} is not a file meshc wrote, so meshc leaves it alone and keeps no {what} there; "
        "move it away to make rebuilds fast again"
        for path, magic, what in (
            (cache_path(real), CACHE_MAGIC, "build cache"),
            (documents_path(real), _MAGIC, "cache of parsed spec files"),
        )
        if foreign(path, magic)
    )
