"""Canonical serialization: the one way meshc turns data into bytes (JSON, block YAML), and the Artifact record.

The output tree itself (manifest, writer, lock, comparison, build cache) lives in `compiler.output`."""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

# A string is written plain only when no YAML 1.1 or 1.2 reader could take it for anything else.
_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_./-]*")
_YAML11_WORDS = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null"})
# Characters JSON leaves raw but YAML must escape: line breaks YAML 1.1 readers split on, and
# characters outside YAML's printable set (DEL, C1 controls, BOM, U+FFFE/U+FFFF) that readers reject.
_YAML_ESCAPE = re.compile("[\x7f-\x9f\u2028\u2029\ufeff\ufffe\uffff]")


@dataclass(frozen=True, kw_only=True, slots=True)
class Artifact:
    """One output file: its path under output/, its bytes, and the target (workload id) it belongs to.

    `value` is the data the bytes serialize (the very object, not a copy), so `meshc diff` compares
    data and never re-parses its own output: a JSON file's value, a multi-document YAML file's tuple
    of documents. Files rendered from templates have none (None) and are compared as text. The bytes
    alone decide equality (the value is what they say).
    """

    path: str
    data: bytes
    target: str | None = None
    value: Any = field(default=None, compare=False)


# ---------------------------------------------------------------- serialization


def dump_json(data: Any) -> bytes:
    """Canonical JSON: sorted keys, two-space indent, UTF-8, trailing newline.

    orjson, because the stdlib's C encoder is skipped whenever `indent` is set, and the
    pure-Python one was a third of a 1,000-service build; the bytes are the same.
    """
    return orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def canonical_json(value: Any) -> bytes:
    """The one byte form meshc hashes: compact JSON, sorted keys, UTF-8 (stable across Python versions)."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def content_digest(value: Any) -> str:
    """sha256 hex of `canonical_json(value)`: equal data, equal digest, on every machine."""
    return hashlib.sha256(canonical_json(value)).hexdigest()


def dump_yaml(data: Any) -> bytes:
    """Canonical block YAML for dicts, lists, str, int, float, bool and None; keys keep insertion order."""
    lines: list[str] = []
    if isinstance(data, (dict, list)) and data:
        _block(data, 0, lines)
    else:
        lines.append(_scalar(data, 2))  # a top-level literal block still needs indented lines
    return ("\n".join(lines) + "\n").encode()


# Output repeats a few thousand keys and names a million times. At 1,000 services the backends take
# 1.42 s CPU with this cache and 1.73 s without (medians of 5, `python benchmarks/tricks.py`).
@functools.lru_cache(maxsize=1 << 16)
def yaml_string(value: str) -> str:
    """A string as a YAML scalar: plain where unambiguous in YAML 1.1 and 1.2, else double-quoted."""
    if _PLAIN.fullmatch(value) and value.lower() not in _YAML11_WORDS:
        return value
    quoted = json.dumps(value, ensure_ascii=False)
    return _YAML_ESCAPE.sub(lambda match: f"\\u{ord(match.group()):04x}", quoted)


def _block(data: dict[str, Any] | list[Any], indent: int, lines: list[str]) -> None:
    # Strings, ints and non-empty containers take a fast path here (`type() is`, then the general
    # `_entry`): objects of a 1,000-service Kubernetes tree emit in 0.25-0.27 s, not 0.37-0.42 s
    # (best of 5, 32,576 objects without their ConfigMap data). Subclasses go the general way.
    pad = " " * indent
    inner = indent + 2
    append = lines.append
    if isinstance(data, dict):
        for key, value in data.items():
            head = f"{pad}{yaml_string(key if type(key) is str else str(key))}:"
            kind = type(value)
            if kind is str:
                literal = "\n" in value and _literal_ok(value)
                append(f"{head} {_literal(value, inner) if literal else yaml_string(value)}")
            elif kind is int:
                append(f"{head} {value}")
            elif (kind is dict or kind is list) and value:
                append(head)
                _block(value, inner, lines)
            else:
                _entry(head, value, indent, lines)
    else:
        for item in data:
            if type(item) is str:
                literal = "\n" in item and _literal_ok(item)
                append(f"{pad}- {_literal(item, inner) if literal else yaml_string(item)}")
            elif isinstance(item, dict) and item:
                start = len(lines)
                _block(item, inner, lines)
                lines[start] = f"{pad}- {lines[start][inner:]}"
            else:
                _entry(f"{pad}-", item, indent, lines)


def _entry(head: str, value: Any, indent: int, lines: list[str]) -> None:
    if isinstance(value, (dict, list)) and value:
        lines.append(head)
        _block(value, indent + 2, lines)
    else:
        lines.append(f"{head} {_scalar(value, indent + 2)}")


def _scalar(value: Any, indent: int) -> str:
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, str):
        return _literal(value, indent) if _literal_ok(value) else yaml_string(value)
    if value == {}:
        return "{}"
    if value == []:
        return "[]"
    raise TypeError(f"cannot serialize {type(value).__name__} to YAML")


def _float(value: float) -> str:
    """Floats always with a dot and no exponent: YAML 1.1 (Psych) reads `1e-05` as a string."""
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError("NaN and infinity are not valid in meshc output")
    from decimal import Decimal  # only where a float is written (a few per build): not in every start (1 ms)

    text = format(Decimal(repr(value)), "f")  # repr is the shortest text that reads back as the same float
    return text if "." in text else text + ".0"


def _literal_ok(value: str) -> bool:
    """Multi-line text reads best as a literal block, if it has nothing a block cannot hold."""
    # One C-level isprintable() over the text: a per-character loop here dominated big builds.
    return (
        "\n" in value.rstrip("\n")
        and not value.startswith((" ", "\n"))
        and value.replace("\n", "").replace("\t", "").isprintable()
    )


# Every ASCII byte a literal block may hold as it is: printable ones, line feed and tab.
_LITERAL_ASCII = bytes([9, 10, *range(0x20, 0x7F)])


def literal_entry(key: str, text: str, indent: int) -> bytes | None:
    """`key: text` of a block mapping at `indent` as dump_yaml writes it, for ASCII text that is a literal block;
    None otherwise (the caller takes the general path).

    For the sidecar documents in ConfigMaps (JSON text, most of a build's bytes): one C-level pass over
    the text's bytes instead of _literal_ok's two replaces, isprintable and the str round trip
    (str.isascii is a flag, not a scan). Backends of 1,000 services, CPU, 8 interleaved runs: 1.10-1.24 s
    (median 1.18), not 1.26-1.48 s (median 1.36).
    """
    if not text.isascii() or text.startswith((" ", "\n")):
        return None
    data = text.encode()
    body = data.rstrip(b"\n")
    trailing = len(data) - len(body)
    if trailing > 1 or b"\n" not in body or b"\n\n" in body or body.translate(None, _LITERAL_ASCII):
        return None  # one line, kept empty lines, or a character a literal block cannot hold: the general way
    pad = b" " * (indent + 2)
    return b"".join(
        (
            b" " * indent,
            yaml_string(key).encode(),
            b": |-\n" if trailing == 0 else b": |\n",
            pad,
            body.replace(b"\n", b"\n" + pad),
            b"\n",
        )
    )


def _literal(value: str, indent: int) -> str:
    body = value.rstrip("\n")
    trailing = len(value) - len(body)
    chomp = "-" if trailing == 0 else ("" if trailing == 1 else "+")
    pad = " " * indent
    if trailing <= 1 and "\n\n" not in body:
        # The common case (embedded JSON, no empty line): indent with one C-level replace, without
        # splitting into lines first. A 55 kB document: 105 us, not 330 us (timeit, best of 5).
        return f"|{chomp}\n{pad}" + body.replace("\n", "\n" + pad)
    lines = body.split("\n") + [""] * max(trailing - 1, 0)
    return f"|{chomp}\n" + "\n".join(f"{pad}{line}" if line else "" for line in lines)
