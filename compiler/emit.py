"""Canonical serialization, and the writer: atomic swap of the whole output tree plus MANIFEST.json."""

from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from compiler import __version__

MANIFEST = "MANIFEST.json"
MANIFEST_FORMAT = 1

# A string is written plain only when no YAML 1.1 or 1.2 reader could take it for anything else.
_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_./-]*")
_YAML11_WORDS = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null"})
# Characters JSON leaves raw but YAML must escape: line breaks YAML 1.1 readers split on, and
# characters outside YAML's printable set (DEL, C1 controls, BOM, U+FFFE/U+FFFF) that readers reject.
_YAML_ESCAPE = re.compile("[\x7f-\x9f\u2028\u2029\ufeff\ufffe\uffff]")


@dataclass(frozen=True, kw_only=True, slots=True)
class Artifact:
    """One output file: its path under output/, its bytes, and the target (workload id) it belongs to."""

    path: str
    data: bytes
    target: str | None = None


# ---------------------------------------------------------------- serialization

def dump_json(data: Any) -> bytes:
    """Canonical JSON: sorted keys, two-space indent, UTF-8, trailing newline.

    orjson, because the stdlib's C encoder is skipped whenever `indent` is set, and the
    pure-Python one was a third of a 1,000-service build; the bytes are the same.
    """
    return orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def dump_yaml(data: Any) -> bytes:
    """Canonical block YAML for dicts, lists, str, int, float, bool and None; keys keep insertion order."""
    lines: list[str] = []
    if isinstance(data, (dict, list)) and data:
        _block(data, 0, lines)
    else:
        lines.append(_scalar(data, 2))  # a top-level literal block still needs indented lines
    return ("\n".join(lines) + "\n").encode()


@functools.lru_cache(maxsize=1 << 16)  # a pure function; manifests repeat a few thousand strings a million times
def yaml_string(value: str) -> str:
    """A string as a YAML scalar: plain where unambiguous in YAML 1.1 and 1.2, else double-quoted."""
    if _PLAIN.fullmatch(value) and value.lower() not in _YAML11_WORDS:
        return value
    quoted = json.dumps(value, ensure_ascii=False)
    return _YAML_ESCAPE.sub(lambda match: f"\\u{ord(match.group()):04x}", quoted)


def _block(data: dict | list, indent: int, lines: list[str]) -> None:
    pad = " " * indent
    if isinstance(data, dict):
        for key, value in data.items():
            _entry(f"{pad}{yaml_string(str(key))}:", value, indent, lines)
    else:
        for item in data:
            if isinstance(item, dict) and item:
                start = len(lines)
                _block(item, indent + 2, lines)
                lines[start] = f"{pad}- {lines[start][indent + 2:]}"
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
    text = format(Decimal(repr(value)), "f")  # repr is the shortest text that reads back as the same float
    return text if "." in text else text + ".0"


def _literal_ok(value: str) -> bool:
    """Multi-line text reads best as a literal block, if it has nothing a block cannot hold."""
    # One C-level isprintable() over the text: a per-character loop here dominated big builds.
    return ("\n" in value.rstrip("\n") and not value.startswith((" ", "\n"))
            and value.replace("\n", "").replace("\t", "").isprintable())


def _literal(value: str, indent: int) -> str:
    body = value.rstrip("\n")
    trailing = len(value) - len(body)
    chomp = "-" if trailing == 0 else ("" if trailing == 1 else "+")
    pad = " " * indent
    lines = body.split("\n") + [""] * max(trailing - 1, 0)
    if "" not in lines:  # the common case (embedded JSON): indent with one C-level replace
        return f"|{chomp}\n{pad}" + "\n".join(lines).replace("\n", "\n" + pad)
    return f"|{chomp}\n" + "\n".join(f"{pad}{line}" if line else "" for line in lines)


# ---------------------------------------------------------------- writing

@dataclass(frozen=True, kw_only=True, slots=True)
class WriteResult:
    """What a write changed: files written (new or different bytes) and files removed."""

    changed: bool
    written: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class TreeStatus:
    """How an output tree differs from what the spec renders."""

    stale: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()
    hand_edited: tuple[str, ...] = ()

    @property
    def clean(self) -> bool:
        return not (self.stale or self.missing or self.extra or self.hand_edited)


def manifest(artifacts: Sequence[Artifact], rollout: Mapping[str, Any] | None = None) -> bytes:
    """MANIFEST.json: format, meshc version, sha256 of every file, the files of every target, and the rollout if one is in force."""
    targets: dict[str, list[str]] = {}
    for artifact in artifacts:
        if artifact.target is not None:
            targets.setdefault(artifact.target, []).append(artifact.path)
    return dump_json({
        "format": MANIFEST_FORMAT,
        "meshc_version": __version__,
        "files": {a.path: hashlib.sha256(a.data).hexdigest() for a in artifacts},
        "targets": {target: sorted(paths) for target, paths in targets.items()},
        **({"rollout": rollout} if rollout is not None else {}),
    })


def render_tree(artifacts: Sequence[Artifact], rollout: Mapping[str, Any] | None = None) -> dict[str, bytes]:
    """The complete file tree of a build, manifest included, checking paths are safe and unique."""
    files: dict[str, bytes] = {}
    for artifact in sorted(artifacts, key=lambda a: a.path):
        _check_path(artifact.path)
        if artifact.path in files or artifact.path == MANIFEST:
            raise ValueError(f"two artifacts claim {artifact.path}")
        files[artifact.path] = artifact.data
    files[MANIFEST] = manifest(sorted(artifacts, key=lambda a: a.path), rollout)
    return files


def _check_path(path: str) -> None:
    parts = path.split("/")
    if path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"unsafe artifact path {path!r}")


def read_tree(root: Path) -> dict[str, bytes]:
    """Every regular file under `root` as relative posix path -> bytes ({} if root is absent)."""
    if not root.is_dir():
        return {}
    files = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames:
            path = Path(dirpath, name)
            files[path.relative_to(root).as_posix()] = path.read_bytes()
    return files


def write_tree(out: Path, files: Mapping[str, bytes]) -> WriteResult:
    """Make `out` hold exactly `files`, atomically: the old tree stays whole until one rename swaps it.

    Unchanged files are hard-linked into the staging tree, so a one-service change writes one
    service's files. A build whose bytes equal what is there writes nothing at all.
    """
    out = out.absolute()
    _recover(out)
    old = read_tree(out)
    written = tuple(sorted(p for p, data in files.items() if old.get(p) != data))
    removed = tuple(sorted(set(old) - set(files)))
    if not written and not removed:
        return WriteResult(changed=False)
    staging = out.parent / f".{out.name}.meshc-new-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    for directory in sorted({(staging / path).parent for path in files}):
        directory.mkdir(parents=True, exist_ok=True)
    changed = set(written)
    for path, data in files.items():
        if path in changed:
            (staging / path).write_bytes(data)
        else:
            os.link(out / path, staging / path)
    _swap(staging, out)
    return WriteResult(changed=True, written=written, removed=removed)


def _recover(out: Path) -> None:
    """Undo what a build killed between the two renames of the fallback swap left behind."""
    parked = out.parent / f".{out.name}.meshc-old"
    if parked.is_dir() and not out.exists():
        os.rename(parked, out)
    shutil.rmtree(parked, ignore_errors=True)
    for stale in out.parent.glob(f".{out.name}.meshc-new-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if not pid.isdigit() or not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _swap(staging: Path, out: Path) -> None:
    """Put `staging` at `out`; the previous tree is removed after. Exchange is one atomic syscall on Linux."""
    os.sync()  # the new tree is on disk before it becomes the tree
    if out.exists() and _exchange(staging, out):
        shutil.rmtree(staging)
        return
    parked = out.parent / f".{out.name}.meshc-old"
    if out.exists():
        os.rename(out, parked)
    os.rename(staging, out)
    shutil.rmtree(parked, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return result == 0


def compare_tree(out: Path, files: Mapping[str, bytes]) -> TreeStatus:
    """Compare `out` with the tree a build would write; tell stale files from hand-edited ones.

    A file that differs from the new rendering but matches the hash the committed manifest
    recorded is stale (the spec changed, nobody rebuilt); one that matches neither was edited by hand.
    """
    actual = read_tree(out)
    recorded = _recorded_hashes(actual.get(MANIFEST, b""))
    stale, edited = [], []
    for path in sorted(set(files) & set(actual)):
        if path == MANIFEST or files[path] == actual[path]:
            continue
        if recorded.get(path) == hashlib.sha256(actual[path]).hexdigest():
            stale.append(path)
        else:
            edited.append(path)
    missing = sorted(set(files) - set(actual))
    extra = sorted(set(actual) - set(files))
    if MANIFEST in files and MANIFEST in actual and files[MANIFEST] != actual[MANIFEST] and not (stale or edited or missing or extra):
        stale.append(MANIFEST)
    return TreeStatus(stale=tuple(stale), missing=tuple(missing), extra=tuple(extra), hand_edited=tuple(edited))


def _recorded_hashes(raw: bytes) -> dict[str, str]:
    try:
        return dict(json.loads(raw).get("files", {}))
    except (ValueError, AttributeError):
        return {}

