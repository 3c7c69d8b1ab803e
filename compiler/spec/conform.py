"""A shipped schema compiled once into small closures that answer one question fast: is this document valid?

Why it exists: nearly every spec document is valid, and jsonschema spends most of its time building a
validator per node and an error iterator per keyword. This check answers what jsonschema's Draft 2020-12
validator answers (valid iff `iter_errors` yields nothing) for the keywords our schemas use, so
spec.schema imports jsonschema only to explain a document this check rejects. It pays (CPU, 2 shared
cores): the 1,001 documents of the 1,000-service mesh take 0.018 s instead of jsonschema's 0.262 s
(`benchmarks/tricks.py --validate --repeat 5`, medians, interleaved), and a one-service rebuild's first
check takes 0.001 s instead of 0.039 s (jsonschema's import and validator; same command, fresh processes).

A keyword it does not model raises InternalError when the schema is compiled, never at a document.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from compiler.diagnostics import InternalError

Check = Callable[[Any], bool]

# Keywords that never change whether a document is valid.
_ANNOTATIONS = frozenset(
    {"$schema", "$id", "$comment", "title", "description", "x-meshc-code", "x-meshc-message"}
)
_OBJECT = frozenset({"properties", "additionalProperties", "required", "minProperties", "propertyNames"})
_ARRAY = frozenset({"items", "minItems", "uniqueItems"})
_STRING = frozenset({"pattern", "minLength"})
_NUMBER = frozenset({"minimum", "maximum"})
_KNOWN = _ANNOTATIONS | _OBJECT | _ARRAY | _STRING | _NUMBER | {"type", "enum"}


def compile_schema(schema: Any) -> Check:
    """The closure that tells whether a value is valid against `schema` (local `$ref`s already inlined)."""
    if schema is True:
        return _anything
    if schema is False:
        return _nothing
    if not isinstance(schema, dict):
        raise InternalError(f"a JSON Schema is a mapping or a boolean, not {schema!r}")
    unknown = sorted(set(schema) - _KNOWN)
    if unknown:
        raise InternalError(f"the fast schema check does not model the keyword {unknown[0]!r}")
    kind = schema.get("type")
    type_check = _type_check(kind) if "type" in schema else None
    checks: list[Check] = []
    for name, keywords, build in _SHAPES:
        if keywords & schema.keys():
            # A shape check that knows its type was required answers for `type` too: one call, not two.
            typed = kind == name
            checks.append(build(schema, typed))
            type_check = None if typed else type_check
    if type_check is not None:
        checks.insert(0, type_check)
    if "enum" in schema:
        checks.append(_enum_check(schema["enum"]))
    return _all_of(checks)


def _anything(value: Any) -> bool:
    return True


def _nothing(value: Any) -> bool:
    return False


def _all_of(checks: list[Check]) -> Check:
    if not checks:
        return _anything
    if len(checks) == 1:
        return checks[0]
    first, second, *rest = checks
    if not rest:
        return lambda value: first(value) and second(value)
    return lambda value: all(check(value) for check in checks)


# ---------------------------------------------------------------- type and enum


def _is_integer(value: Any) -> bool:
    # bool is an int to Python, not to JSON Schema; 1.0 is an integer to Draft 6 and later
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, numbers.Number)


_TYPES: dict[str, Check] = {
    "object": lambda value: isinstance(value, dict),
    "array": lambda value: isinstance(value, list),
    "string": lambda value: isinstance(value, str),
    "boolean": lambda value: isinstance(value, bool),
    "null": lambda value: value is None,
    "integer": _is_integer,
    "number": _is_number,
}


def _type_check(kind: Any) -> Check:
    names = [kind] if isinstance(kind, str) else kind
    if not isinstance(names, list) or any(name not in _TYPES for name in names):
        raise InternalError(f"the fast schema check does not know the type {kind!r}")
    if len(names) == 1:
        return _TYPES[names[0]]
    checks = [_TYPES[name] for name in names]
    return lambda value: any(check(value) for check in checks)


def _enum_check(choices: Any) -> Check:
    if not isinstance(choices, list):
        raise InternalError(f"enum must be a list, not {choices!r}")
    if all(isinstance(choice, str) for choice in choices):
        words = frozenset(choices)
        return lambda value: isinstance(value, str) and value in words
    return lambda value: any(json_equal(choice, value) for choice in choices)


def json_equal(one: Any, two: Any) -> bool:
    """Equality as JSON Schema (and jsonschema) defines it: 1 == 1.0, but true is not 1, inside lists too."""
    if one is two:
        return True
    if isinstance(one, str) or isinstance(two, str):
        return bool(one == two)
    if isinstance(one, bool) or isinstance(two, bool):
        return one is two
    if isinstance(one, Sequence) and isinstance(two, Sequence):
        return len(one) == len(two) and all(map(json_equal, one, two))
    if isinstance(one, Mapping) and isinstance(two, Mapping):
        return len(one) == len(two) and all(key in two and json_equal(v, two[key]) for key, v in one.items())
    return bool(one == two)


# ---------------------------------------------------------------- one check per JSON type's keywords


def _object_check(schema: dict[str, Any], typed: bool) -> Check:
    properties = {key: compile_schema(sub) for key, sub in schema.get("properties", {}).items()}
    extra = schema.get("additionalProperties", True)
    other = None if extra is True else compile_schema(extra)  # False compiles to _nothing
    required = frozenset(schema.get("required", ()))
    least: int = schema.get("minProperties", 0)
    names = compile_schema(schema["propertyNames"]) if "propertyNames" in schema else None

    def check(value: Any) -> bool:
        if not isinstance(value, dict):
            return not typed
        if len(value) < least or not value.keys() >= required:
            return False
        for key, item in value.items():
            sub = properties.get(key, other)
            if sub is not None and not sub(item):
                return False
        return names is None or all(names(key) for key in value)

    return check


def _array_check(schema: dict[str, Any], typed: bool) -> Check:
    items = schema.get("items", True)
    each = None if items is True else compile_schema(items)
    least: int = schema.get("minItems", 0)
    unique = bool(schema.get("uniqueItems", False))

    def check(value: Any) -> bool:
        if not isinstance(value, list):
            return not typed
        if len(value) < least or (each is not None and not all(map(each, value))):
            return False
        return not unique or unique_items(value)

    return check


def unique_items(items: list[Any]) -> bool:
    """No two items equal by json_equal (strings, all our schemas list, by hashing).

    jsonschema sorts items and compares neighbours, so it misses the second [1] in [[1], [True], [1]]; this
    answers "not unique" there, which costs only a jsonschema run: its "valid" then stands.
    """
    if all(isinstance(item, str) for item in items):
        return len(set(items)) == len(items)
    return not any(json_equal(item, later) for at, item in enumerate(items) for later in items[at + 1 :])


def _string_check(schema: dict[str, Any], typed: bool) -> Check:
    least: int = schema.get("minLength", 0)
    # jsonschema runs re.search: unanchored unless the pattern anchors itself
    search = re.compile(schema["pattern"]).search if "pattern" in schema else None

    def check(value: Any) -> bool:
        if not isinstance(value, str):
            return not typed
        return len(value) >= least and (search is None or search(value) is not None)

    return check


def _number_check(schema: dict[str, Any], typed: bool) -> Check:
    low, high = schema.get("minimum"), schema.get("maximum")

    def check(value: Any) -> bool:
        if not _is_number(value):
            return not typed
        # `not value < low`, as jsonschema compares, rather than `value >= low` (they differ for NaN)
        return (low is None or not value < low) and (high is None or not value > high)

    return check


_SHAPES: tuple[tuple[str, frozenset[str], Callable[[dict[str, Any], bool], Check]], ...] = (
    ("object", _OBJECT, _object_check),
    ("array", _ARRAY, _array_check),
    ("string", _STRING, _string_check),
    ("number", _NUMBER, _number_check),
)
