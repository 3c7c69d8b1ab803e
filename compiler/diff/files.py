"""One output file's two versions compared: as the data a build serialized, as the data a parser reads from
bytes (files on disk), or, for files that hold no data (templates, text), line by line."""

from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import yaml

from compiler.diff.records import CHANGED, Change, DocumentDiff
from compiler.diff.values import diff_values, load_json
from compiler.emit import Artifact

MAX_TEXT_LINES = 400  # a changed text file's unified diff is cut after this many lines
DOCUMENT_START = "---\n"  # a stream of documents as meshc writes one: every document opened by `---`


@dataclass(frozen=True, kw_only=True, slots=True)
class OutputFile:
    """An output file as a diff keeps it: the sha256 of its bytes, to tell whether it changed, and its data to diff
    (a file without data keeps its bytes instead). A diff holds two builds: their data files' bytes, most of a
    build's memory, are not kept twice over."""

    path: str
    target: str | None
    digest: bytes
    value: Any = None
    text: bytes = b""  # the bytes of a file without data (a template), diffed by line


def output_file(artifact: Artifact) -> OutputFile:
    """What a diff keeps of one artifact."""
    return OutputFile(
        path=artifact.path,
        target=artifact.target,
        digest=hashlib.sha256(artifact.data).digest(),
        value=artifact.value,
        text=artifact.data if artifact.value is None else b"",
    )


def diff_output_file(old: OutputFile, new: OutputFile) -> DocumentDiff:
    """Two versions of one output file of a build: the data they serialize, or their lines if they hold none."""
    if (
        old.value is None or new.value is None
    ):  # one meshc built both: a path holds data in both or in neither
        return diff_text(new.path, old.text, new.text)
    # A JSON file's changes in the file's order: meshc writes its keys sorted.
    changes = _changes(_as_parsed(old.value), _as_parsed(new.value), sort_keys=new.path.endswith(".json"))
    return DocumentDiff(name=new.path, status=CHANGED, changes=changes)


def _changes(old: Any, new: Any, *, sort_keys: bool = False) -> tuple[Change, ...]:
    """The changes between the data of a file whose bytes differ: if `==` finds none, the data differs in a way
    it misses (1 and 1.0, true and 1), so look again strictly."""
    return diff_values(old, new, sort_keys=sort_keys) or diff_values(
        old, new, sort_keys=sort_keys, strict=True
    )


def _as_parsed(value: Any) -> Any:
    """A value as a parser reads its file: a stream's tuple of documents is a list."""
    return list(value) if isinstance(value, tuple) else value


def diff_file(path: str, old: bytes, new: bytes) -> DocumentDiff:
    """One file's two versions as bytes (files on disk): compared as data if both parse as JSON or YAML, else by line.

    Only `meshc check` reads files back, and only the stale or hand-edited ones, so PyYAML's C
    loader is fast enough.
    """
    before, after = parse_file(path, old), parse_file(path, new)
    if before is not None and after is not None:
        return DocumentDiff(name=path, status=CHANGED, changes=_changes(before[0], after[0]))
    return diff_text(path, old, new)


def diff_text(path: str, old: bytes, new: bytes) -> DocumentDiff:
    """A file's unified diff (one line of context), cut after MAX_TEXT_LINES lines."""
    lines = difflib.unified_diff(
        old.decode(errors="replace").splitlines(),
        new.decode(errors="replace").splitlines(),
        fromfile=f"a/{path}",
        tofile=f"b/{path}",
        n=1,
        lineterm="",
    )
    text = list(lines)
    if len(text) > MAX_TEXT_LINES:
        text = [*text[:MAX_TEXT_LINES], f"... {len(text) - MAX_TEXT_LINES} more diff lines cut"]
    return DocumentDiff(name=path, status=CHANGED, text=tuple(text))


def parse_file(path: str, data: bytes) -> tuple[Any] | None:
    """An output file's data (a 1-tuple, since the data may be None), or None if it is not JSON or YAML."""
    suffix = PurePosixPath(path).suffix
    try:
        if suffix == ".json":
            return (load_json(data),)
        if suffix in (".yaml", ".yml"):
            return (_load_yaml(data.decode()),)
    except (ValueError, yaml.YAMLError):  # UnicodeDecodeError is a ValueError
        return None
    return None


def _load_yaml(text: str) -> Any:
    """One document's data, or the list of a stream's documents (a file opened by `---`, as meshc writes Kubernetes
    files, or holding several)."""
    documents = list(yaml.load_all(text, Loader=yaml.CSafeLoader))
    return documents[0] if len(documents) == 1 and not text.startswith(DOCUMENT_START) else documents
