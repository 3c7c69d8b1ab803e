"""The value differ: every difference between two plain data values (dicts, lists, scalars), as Change records.

Mappings are matched by key; lists of named things by their name (so inserting one cluster does
not shift every later one); lists of unique scalars, and lists whose items are alternatives of an
OR, as sets; other lists are aligned by content. A string holding JSON (a sidecar document in a
ConfigMap) is diffed as the data it holds.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from compiler.diff.records import ADDED, CHANGED, REMOVED, Change

_IDENT = re.compile(r"[A-Za-z_@$][\w@$-]*")

# Lists whose items are alternatives of an OR, so their position means nothing: Envoy RBAC
# `principals` and `permissions`, a NetworkPolicy rule's `from` peers.
_OR_LIST = re.compile(r"(?:^|\.)(?:principals|permissions|from)$")

KeyFn = Callable[[Any], Any]

# How list items are told apart, most specific first: (does it apply to an item, its key, its label).
_LIST_KEYS: tuple[tuple[Callable[[Any], bool], KeyFn, Callable[[Any], str]], ...] = (
    (lambda i: "name" in i, lambda i: i["name"], str),
    (lambda i: "service" in i, lambda i: i["service"], lambda k: f"service={k}"),
    (lambda i: "cluster_name" in i, lambda i: i["cluster_name"], lambda k: f"cluster_name={k}"),
    (
        lambda i: isinstance(i.get("metadata"), dict) and "name" in i["metadata"] and "kind" in i,
        lambda i: f"{i['kind']}/{i['metadata'].get('namespace', '')}/{i['metadata']['name']}".replace(
            "//", "/"
        ),
        str,
    ),
    (lambda i: "cluster" in i, lambda i: i["cluster"], lambda k: f"cluster={k}"),
    (lambda i: "@type" in i, lambda i: i["@type"], lambda k: f"@type={k}"),
)


def diff_values(old: Any, new: Any, *, sort_keys: bool = False, strict: bool = False) -> tuple[Change, ...]:
    """Every difference between two plain data values, as changes at paths like `a[name].b[0].c`.

    Changes come in the order of the keys as they stand (a YAML file's order); `sort_keys` lists a
    mapping's keys sorted instead, the order of a JSON file meshc writes. Equal subtrees are skipped
    by Python's `==`, which takes 1, 1.0 and true for one another; `strict` tells them apart, at the
    cost of serializing every subtree it compares (for data known to differ that `==` finds equal).
    """
    differ = _Differ(sort_keys=sort_keys, strict=strict)
    differ.diff(old, new, "")
    return tuple(differ.out)


class _Differ:
    """One diff's options and the changes found so far."""

    __slots__ = ("out", "sort_keys", "strict")

    def __init__(self, *, sort_keys: bool, strict: bool) -> None:
        self.sort_keys, self.strict = sort_keys, strict
        self.out: list[Change] = []

    def diff(self, old: Any, new: Any, path: str) -> None:
        # C-speed equality prunes every unchanged subtree
        if type(old) is type(new) and old == new and (not self.strict or _canonical(old) == _canonical(new)):
            return
        if isinstance(old, dict) and isinstance(new, dict):
            added = [k for k in new if k not in old]
            # as a parser of the file reads them: the old keys in order, then the new ones
            keys = [*sorted(old), *sorted(added)] if self.sort_keys else [*old, *added]
            self.keyed(old, new, keys, lambda key: _key_path(path, key))
        elif isinstance(old, list) and isinstance(new, list):
            self.lists(old, new, path)
        elif isinstance(old, str) and isinstance(new, str) and (embedded := _embedded(old, new)) is not None:
            self.diff(*embedded, path)  # e.g. a sidecar document held as JSON text in a ConfigMap
        else:
            self.out.append(Change(path=path or ".", kind=CHANGED, old=old, new=new))

    def keyed(
        self, old: Mapping[Any, Any], new: Mapping[Any, Any], keys: list[Any], child: Callable[[Any], str]
    ) -> None:
        """Entries matched by key, in the order of `keys`: removed, added, or diffed in place."""
        for key in keys:
            if key not in new:
                self.out.append(Change(path=child(key), kind=REMOVED, old=old[key]))
            elif key not in old:
                self.out.append(Change(path=child(key), kind=ADDED, new=new[key]))
            else:
                self.diff(old[key], new[key], child(key))

    def lists(self, old: list[Any], new: list[Any], path: str) -> None:
        keyed = _list_key(old, new)
        if keyed is not None:
            label, key = keyed
            before, after = {key(i): i for i in old}, {key(i): i for i in new}
            order = [*before, *(k for k in after if k not in before)]  # a list's own order, never sorted
            self.keyed(before, after, order, lambda name: f"{path}[{label(name)}]")
        elif _unique_scalars(old) and _unique_scalars(new):
            self.sets(old, new, path)
        elif _OR_LIST.search(path) and _unique_values(old) and _unique_values(new):
            self.value_sets(old, new, path)
        else:
            self.aligned(old, new, path)

    def aligned(self, old: list[Any], new: list[Any], path: str) -> None:
        """Unnamed items aligned by content (longest common subsequence), so one insertion is one `+`.

        Items replaced one for one are diffed inside, at their new index; the rest are added or removed.
        """
        matcher = difflib.SequenceMatcher(
            None, [_canonical(i) for i in old], [_canonical(i) for i in new], autojunk=False
        )
        for op, i1, i2, j1, j2 in matcher.get_opcodes():
            if op == "equal":
                continue
            paired = min(i2 - i1, j2 - j1) if op == "replace" else 0
            for k in range(paired):
                self.diff(old[i1 + k], new[j1 + k], f"{path}[{j1 + k}]")
            self.out += [
                Change(path=f"{path}[{i}]", kind=REMOVED, old=old[i]) for i in range(i1 + paired, i2)
            ]
            self.out += [Change(path=f"{path}[{j}]", kind=ADDED, new=new[j]) for j in range(j1 + paired, j2)]

    def sets(self, old: list[Any], new: list[Any], path: str) -> None:
        gone, came = set(old) - set(new), set(new) - set(old)
        self.out += [Change(path=path or ".", kind=REMOVED, old=item) for item in old if item in gone]
        self.out += [Change(path=path or ".", kind=ADDED, new=item) for item in new if item in came]
        if not gone and not came:  # same members, new order: order matters (failover lists), so say so
            self.out.append(Change(path=path or ".", kind=CHANGED, old=old, new=new))

    def value_sets(self, old: list[Any], new: list[Any], path: str) -> None:
        """Items matched by value, like `sets`: adding a client is one `+` of it, wherever it sorts."""
        before, after = {_canonical(i): i for i in old}, {_canonical(i): i for i in new}
        self.out += [
            Change(path=path or ".", kind=REMOVED, old=item)
            for key, item in before.items()
            if key not in after
        ]
        self.out += [
            Change(path=path or ".", kind=ADDED, new=item) for key, item in after.items() if key not in before
        ]
        if before.keys() == after.keys():  # same members, new order
            self.out.append(Change(path=path or ".", kind=CHANGED, old=old, new=new))


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _unique_values(items: list[Any]) -> bool:
    return len({_canonical(i) for i in items}) == len(items)


def _unique_scalars(items: list[Any]) -> bool:
    return all(isinstance(i, (str, int)) and not isinstance(i, bool) for i in items) and len(
        set(items)
    ) == len(items)


def _list_key(old: list[Any], new: list[Any]) -> tuple[Callable[[Any], str], KeyFn] | None:
    """The first key that names every item of both lists uniquely, or None (then items match by index)."""
    items = [*old, *new]
    if not items or not all(isinstance(i, dict) for i in items):
        return None
    for applies, key, label in _LIST_KEYS:
        if all(applies(i) for i in items) and _unique_names(old, key) and _unique_names(new, key):
            return label, key
    return None


def _unique_names(items: list[Any], key: KeyFn) -> bool:
    names = [key(i) for i in items]
    return all(isinstance(n, (str, int)) for n in names) and len(set(names)) == len(names)


def _key_path(path: str, key: Any) -> str:
    text = str(key)
    if _IDENT.fullmatch(text):
        return f"{path}.{text}" if path else text
    return f"{path}[{json.dumps(text)}]"


def _embedded(old: str, new: str) -> tuple[Any, Any] | None:
    """Both strings parsed as JSON containers, if both are; else None."""
    if old[:1] not in ("{", "[") or new[:1] not in ("{", "["):
        return None
    try:
        return load_json(old), load_json(new)
    except ValueError:
        return None


def load_json(text: str | bytes) -> Any:
    """orjson where it can (several times faster), the stdlib where it cannot (integers beyond 64 bits)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)
