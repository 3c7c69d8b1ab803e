"""Read a `kubectl get … -A -o yaml|json` dump of a cluster: its objects by (API group, kind, namespace, name).

Anything that is not a kubectl List of well-formed objects is one DumpError naming the file, line
and column; a file over MAX_DUMP_BYTES is refused before it is read.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml

from compiler.diagnostics import excerpt
from compiler.drift.model import (
    DriftInputError,
    read_capped,
)

# 1 GiB: a 1,000-service mesh's biggest cluster dumps to ~60 MB; anything near the cap is not a dump.
MAX_DUMP_BYTES = 1 << 30


# The kinds meshc writes, as `kubectl get` resource names, in one command (README "Drift"), in
# APPLY_ORDER: drift pairs the two up by position.
KUBECTL_KINDS = (
    "namespaces",
    "clusterroles",
    "serviceaccounts",
    "secrets",
    "rolebindings",
    "configmaps",
    "certificates.cert-manager.io",
    "services",
    "networkpolicies",
)
_LEADING_SPACE = re.compile(rb"\s*")
_STR = "tag:yaml.org,2002:str"
Key = tuple[str, str, str, str]  # (API group, kind, namespace or "", name)


class DumpError(DriftInputError):
    """A dump (or its file) that cannot be read as a kubectl List; `location` is `file[:line:col]`."""

    def __init__(self, location: str, message: str) -> None:
        super().__init__(location, message, "drift-dump")


@dataclass(frozen=True, kw_only=True, slots=True)
class Dump:
    """One cluster's live objects as read from a dump file, keyed by (group, kind, namespace, name)."""

    source: str
    objects: Mapping[Key, Mapping[str, Any]]


def read_dump_file(path: Path) -> bytes:
    """The bytes of a dump file, refusing more than MAX_DUMP_BYTES (pipes and /dev/fd paths work too)."""
    return read_capped(
        path,
        MAX_DUMP_BYTES,
        what="the dump",
        question="is this a kubectl dump of one cluster?",
        code="drift-dump",
    )


def parse_dump(source: str, raw: bytes) -> Dump:
    """Parse `kubectl get … -A -o yaml` or `-o json` output (a List); raise DumpError on anything else."""
    start = _LEADING_SPACE.match(raw)
    is_json = raw[start.end() if start else 0 :][:1] == b"{"
    data = _load_json(source, raw) if is_json else _load_yaml(source, _decode(source, raw))
    if (
        not isinstance(data, dict)
        or not str(data.get("kind", "")).endswith("List")
        or not isinstance(data.get("items"), list)
    ):
        kind = data.get("kind") if isinstance(data, dict) else type(data).__name__
        raise DumpError(
            _at(source, raw, ()),
            f"not a kubectl List (found {kind!r}); dump with `kubectl get {','.join(KUBECTL_KINDS)} -A -o yaml`",
        )
    objects: dict[Key, Mapping[str, Any]] = {}
    for index, item in enumerate(data["items"]):
        try:
            key = _item_key(index, item)
        except _ItemError as exc:
            raise DumpError(_at(source, raw, ("items", index, *exc.path)), exc.message) from None
        if key in objects:
            raise DumpError(
                _at(source, raw, ("items", index)),
                f"items[{index}]: {subject_of(key)} appears twice; dump one cluster once",
            )
        objects[key] = item
    return Dump(source=source, objects=objects)


class _ItemError(Exception):
    """What is wrong with a List item, and where in it (keys from the item down)."""

    def __init__(self, message: str, *path: str) -> None:
        super().__init__(message)
        self.message, self.path = message, path


def _at(source: str, raw: bytes, path: tuple[str | int, ...]) -> str:
    """`source:line:col` of the value at `path` (keys and indexes from the top) in a dump, found again for an error:
    orjson keeps no positions, and the data built from YAML nodes none either. `source` alone if not found."""
    try:
        loader = yaml.CSafeLoader(raw.decode("utf-8"))  # JSON is YAML too, as kubectl writes it
        try:
            node = loader.get_single_node()
        finally:
            loader.dispose()
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError):
        return source
    for step in path:
        if isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
            node = node.value[step]
        elif isinstance(node, yaml.MappingNode) and isinstance(step, str):
            found = [
                value for key, value in node.value if isinstance(key, yaml.ScalarNode) and key.value == step
            ]
            if not found:
                break  # a missing field: the place of what lacks it
            node = found[0]
        else:
            break
    return source if node is None else _where(source, node)


def _decode(source: str, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        col = exc.start - raw.rfind(b"\n", 0, exc.start)
        raise DumpError(f"{source}:{line}:{col}", f"byte 0x{raw[exc.start]:02x} is not UTF-8") from None


def _load_json(source: str, raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise DumpError(f"{source}:{exc.lineno}:{exc.colno}", f"invalid JSON: {exc.msg}") from None


def _load_yaml(source: str, text: str) -> Any:
    """libyaml composes the node tree; construct turns it into data (twice as fast as PyYAML's constructor
    on a dump)."""
    loader = yaml.CSafeLoader(text)
    try:
        node = loader.get_single_node()
        return None if node is None else construct(source, loader, node, set())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise DumpError(where, f"invalid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise DumpError(source, f"invalid YAML: {exc}") from None
    except RecursionError:
        raise DumpError(source, "YAML nested too deeply to be a kubectl dump") from None
    finally:
        loader.dispose()


def construct(source: str, loader: yaml.CSafeLoader, node: yaml.Node, seen: set[int]) -> Any:
    """Plain data from a node; strings directly, other scalars by the safe constructor; aliases and complex
    keys refused."""
    if isinstance(node, yaml.ScalarNode):
        return node.value if node.tag == _STR else _scalar(source, loader, node)
    if id(node) in seen:  # an alias: kubectl writes none, and an alias bomb would expand in the comparison
        raise DumpError(
            _where(source, node), "YAML anchors and aliases are not allowed in a dump (kubectl writes none)"
        )
    seen.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        return [construct(source, loader, item, seen) for item in node.value]
    found = {}
    for key, value in node.value:
        if not isinstance(key, yaml.ScalarNode):
            raise DumpError(_where(source, key), "a mapping key that is not a scalar")
        found[construct(source, loader, key, seen)] = construct(source, loader, value, seen)
    return found


def _scalar(source: str, loader: yaml.CSafeLoader, node: yaml.ScalarNode) -> Any:
    """A scalar the safe constructor reads; its ValueError (int() of a number over Python's 4,300 digits, a date
    like 2026-13-01) is the dump's fault, not meshc's."""
    try:
        return loader.construct_object(node)
    except ValueError:
        kind = node.tag.rpartition(":")[2]  # tag:yaml.org,2002:int -> int
        raise DumpError(
            _where(source, node),
            f"cannot read {excerpt(node.value)} as a YAML {kind}; kubectl writes none like it",
        ) from None


def _where(source: str, node: yaml.Node) -> str:
    return f"{source}:{node.start_mark.line + 1}:{node.start_mark.column + 1}"


def _item_key(index: int, item: Any) -> Key:
    """(group, kind, namespace, name) of one List item, checking the fields the comparison relies on."""
    where = f"items[{index}]"
    if not isinstance(item, dict):
        raise _ItemError(f"{where}: not an object")
    api_version, kind, meta = item.get("apiVersion"), item.get("kind"), item.get("metadata")
    if not isinstance(api_version, str) or not isinstance(kind, str) or not api_version or not kind:
        raise _ItemError(f"{where}: lacks apiVersion or kind")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"]:
        raise _ItemError(f"{where} ({kind}): lacks metadata.name", "metadata", "name")
    if not isinstance(meta.get("namespace", ""), str):
        raise _ItemError(
            f"{where} ({kind} {meta['name']}): metadata.namespace is not a string", "metadata", "namespace"
        )
    for field in ("labels", "annotations"):
        values = meta.get(field) or {}
        if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
            raise _ItemError(
                f"{where} ({kind} {meta['name']}): metadata.{field} is not a map of strings",
                "metadata",
                field,
            )
    return (api_version.rpartition("/")[0], kind, meta.get("namespace", ""), meta["name"])


def object_key(obj: Mapping[str, Any]) -> Key:
    """(group, kind, namespace or "", name): how an object is found again whatever API version `get` returned."""
    meta = obj["metadata"]
    return (obj["apiVersion"].rpartition("/")[0], obj["kind"], meta.get("namespace", ""), meta["name"])


def subject_of(key: Key) -> str:
    """How drift names an object: `<Kind>/<namespace or _>/<name>`."""
    return f"{key[1]}/{key[2] or '_'}/{key[3]}"
