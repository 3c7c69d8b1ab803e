"""JSON Schema validation of spec documents, with errors mapped back to the spec's lines."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compiler.diagnostics import Diagnostic, close_match, did_you_mean, excerpt, quote, some_of, yaml_value
from compiler.spec.conform import Check, compile_schema

if TYPE_CHECKING:  # jsonschema loads when a spec is validated, not for every command line
    import jsonschema

    from compiler.spec.document import Document

SCHEMA_NAMES = ("mesh", "service")


@cache
def schema_text(name: str) -> str:
    """The published JSON Schema `name` ("mesh" or "service") as shipped in the package."""
    # Read beside this module, not through importlib.resources (meshc is never imported from a zip):
    # importing and walking it cost 6-8 ms of CPU in every process that validates, a one-service rebuild too.
    return (Path(__file__).parent / "schema" / f"{name}.schema.json").read_text("utf-8")


@cache
def prepared_schema(name: str) -> dict[str, Any]:
    """Schema `name` as both engines read it: local `$ref`s inlined, patterns in Python's dialect."""
    schema = json.loads(schema_text(name))
    # Resolving `$ref` through the registry on every node doubles jsonschema's validation time.
    prepared: dict[str, Any] = _python_patterns(_inline_refs(schema, schema.get("$defs", {})))
    return prepared


@cache
def _conforms(name: str) -> Check:
    return compile_schema(prepared_schema(name))


@cache
def _validator(name: str) -> jsonschema.protocols.Validator:
    import jsonschema

    # no check_schema here: the tests check the schemas against their metaschema
    schema = prepared_schema(name)
    return jsonschema.validators.validator_for(schema)(schema)


def _python_patterns(node: Any) -> Any:
    """`node` with each pattern's final `$` made `\\Z`: Python's `$` also matches before a final
    newline, JSON Schema's (ECMA-262) does not, and a name like "up\\n" must not pass as a label."""
    if isinstance(node, list):
        return [_python_patterns(item) for item in node]
    if not isinstance(node, dict):
        return node
    result = {key: _python_patterns(value) for key, value in node.items()}
    pattern = node.get("pattern")
    if isinstance(pattern, str) and pattern.endswith("$") and not pattern.endswith("\\$"):
        result["pattern"] = pattern[:-1] + "\\Z"
    return result


def _inline_refs(node: Any, defs: dict[str, Any]) -> Any:
    """`node` with every `{"$ref": "#/$defs/x", ...}` merged with definition x (our schemas are not recursive)."""
    if isinstance(node, list):
        return [_inline_refs(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    inlined = {key: _inline_refs(value, defs) for key, value in node.items() if key not in ("$ref", "$defs")}
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return {**_inline_refs(defs[ref.removeprefix("#/$defs/")], defs), **inlined}
    return inlined if "$ref" not in node else node


def validate_document(doc: Document, name: str) -> Iterator[Diagnostic]:
    """Every schema violation of `doc` against schema `name`, each at its spec position."""
    if _conforms(name)(doc.data):
        return  # jsonschema (its import, its validator, its walk) only explains a document the fast check rejects
    errors = _validator(name).iter_errors(doc.data)
    seen: set[Diagnostic] = set()
    for error in sorted(errors, key=lambda e: (list(map(str, e.absolute_path)), e.validator)):
        for diagnostic in _diagnostics(doc, error, prepared_schema(name)):
            # jsonschema reports `required` once per missing key, we name them all at once
            if diagnostic not in seen:
                seen.add(diagnostic)
                yield diagnostic


def _diagnostics(
    doc: Document, error: jsonschema.ValidationError, root: Mapping[str, Any]
) -> Iterator[Diagnostic]:
    path = tuple(error.absolute_path)
    where = _describe(path)
    instance: Any = error.instance  # the document's data at `path`: any JSON value
    if error.validator == "additionalProperties" and isinstance(instance, dict):
        allowed = _subschema(error).get("properties", {})
        for key in _unknown_keys(instance, _subschema(error)):
            # no close match: the keys this mapping takes, so the fix is a look away, not a README search
            hint = did_you_mean(key, allowed) or (
                f"; allowed here: {some_of(list(allowed), 12)}" if allowed else ""
            )
            message = f"unknown key {quote(key)}{where and ' in ' + where}{hint}"
            yield Diagnostic(span=doc.key_span((*path, key)), code="unknown-key", message=message)
        return
    if error.validator == "required" and isinstance(instance, dict):
        required: Any = error.validator_value  # the schema's list of required keys
        # One typo, one line: a key missing because it was misspelt is named by the misspelling's unknown-key
        # diagnostic ("did you mean 'mesh_port'?"), at the typo; reported missing too, it would be twice.
        allowed = _subschema(error).get("properties", {})
        misspelt = {close_match(key, allowed) for key in _unknown_keys(instance, _subschema(error))}
        for missing in [key for key in required if key not in instance and key not in misspelt]:
            yield Diagnostic(
                span=doc.span(path),
                code="missing-key",
                message=f"missing required key {quote(missing)}{where and ' in ' + where}",
            )
        return
    # Most errors are best reported at the value; a bad mapping key is reported at the key.
    span = doc.key_span((*path, instance)) if _is_key_error(error) else doc.span(path)
    code = _subschema(error).get("x-meshc-code", "schema")
    message = _message(error, _slot(doc, error, root))
    yield Diagnostic(span=span, code=code, message=f"{where or 'document'}: {message}")


@dataclass(frozen=True, kw_only=True, slots=True)
class _Slot:
    """Where a failing value sits, as far as its fix depends on it: whether it was left empty (`owner:`, as
    opposed to a written `null`), and `removal`, the advice to remove it ("remove the key"), or None where the
    schema needs it there (a required key, a list at its minimum length) or it is a name of the user's own."""

    empty: bool
    removal: str | None


def _slot(doc: Document, error: jsonschema.ValidationError, root: Mapping[str, Any]) -> _Slot:
    path = tuple(error.absolute_path)
    # The loader gives an empty value its key's position (it has no text of its own); a written null keeps its own.
    # A list item has no key: `-` and `- null` look alike, and both are an item with no value.
    key_span = doc.key_spans.get(path)
    empty = error.instance is None and (key_span is None or key_span == doc.spans.get(path))
    return _Slot(empty=empty, removal=_removal(doc, path, list(error.absolute_schema_path), root))


def _removal(
    doc: Document, path: tuple[Any, ...], schema_path: Sequence[Any], root: Mapping[str, Any]
) -> str | None:
    """The advice to remove the value (`remove the key`, `remove the item`) where the schema does without it,
    else None."""
    if not path or len(schema_path) < 3:
        return None
    if isinstance(path[-1], int) and schema_path[-2] == "items":
        items = _value_at(doc.data, path[:-1])
        least = _schema_at(root, schema_path[:-2]).get("minItems", 0)
        return "remove the item" if isinstance(items, list) and len(items) - 1 >= least else None
    if schema_path[-3] == "properties" and schema_path[-2] == path[-1]:
        required = _schema_at(root, schema_path[:-3]).get("required", [])
        return None if path[-1] in required else "remove the key"
    return None  # a key of the user's naming (a datacenter, a cluster): removing it is no fix for its value


def _schema_at(root: Mapping[str, Any], schema_path: Sequence[Any]) -> Mapping[str, Any]:
    """The subschema at a jsonschema schema path of `root`, or {} should the path lead nowhere."""
    node: Any = root
    for part in schema_path:
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            return {}
    return node if isinstance(node, Mapping) else {}


def _value_at(data: Any, path: Sequence[Any]) -> Any:
    for part in path:
        data = data[part]
    return data


def _unknown_keys(instance: dict[str, Any], schema: Mapping[str, Any]) -> list[str]:
    """The keys of a mapping that its schema does not allow (none where it allows any other key), sorted."""
    if schema.get("additionalProperties", True) is not False:
        return []
    return sorted(set(instance) - set(schema.get("properties", {})))


def _subschema(error: jsonschema.ValidationError) -> Mapping[str, Any]:
    """The schema that failed; `{}` when it is a boolean schema (no keywords to read)."""
    return error.schema if isinstance(error.schema, Mapping) else {}


def _is_key_error(error: jsonschema.ValidationError) -> bool:
    return any(part == "propertyNames" for part in error.absolute_schema_path)


_TYPE_NAMES = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "a whole number",
    "boolean": "true or false",
}
# Words other YAML readers take for booleans; meshc reads only true and false, so these stay strings.
_YAML11_BOOLS = frozenset({"yes", "no", "on", "off", "y", "n"})


def _message(error: jsonschema.ValidationError, slot: _Slot) -> str:
    """What is wrong with the value, in YAML's words (`null`, `true`, `'8080'`), never Python's."""
    custom = _subschema(error).get("x-meshc-message")
    value: Any = error.instance
    rule: Any = error.validator_value
    if _is_key_error(error):
        return f"name {quote(str(value))} {custom or 'is not allowed'}"
    unitless = _unitless_duration(value, _subschema(error))
    if unitless is not None:
        return unitless
    if (
        value is None
        and error.validator in ("type", "enum")
        and not _null_as_text(rule, _subschema(error), slot)
    ):
        return _no_value(_subschema(error), slot)
    if error.validator == "type":
        return _type_message(value, rule, _subschema(error))
    if custom:
        return f"{yaml_value(value)} {custom}"
    if error.validator == "enum":
        choices = [str(choice) for choice in rule]
        return f"{yaml_value(value)} is not one of {', '.join(choices)}{did_you_mean(str(value), choices)}"
    return _bound_message(str(error.validator), value, rule)


# A duration's units in the order a suggestion tries them: seconds are what a bare number most often means, and
# where seconds do not fit, a certificate lifetime of 720 means hours sooner than minutes.
_DURATION_UNITS = ("s", "h", "m", "ms")


def _unitless_duration(value: Any, schema: Mapping[str, Any]) -> str | None:
    """For a duration written as a bare number (`3`, or `'3'` once quoted): that it needs a unit, with the first
    unit that makes it valid here; None for any other value. Every duration definition of the schemas carries
    the code invalid-duration, so this holds for each duration field, present and future."""
    if schema.get("x-meshc-code") != "invalid-duration" or isinstance(value, bool):
        return None
    digits = str(value) if isinstance(value, int) else value
    if not isinstance(digits, str) or not re.fullmatch(r"-?[0-9]+", digits):
        return None
    pattern = schema.get("pattern")
    fits = [digits + unit for unit in _DURATION_UNITS if pattern and re.search(pattern, digits + unit)]
    if fits:
        return f"{yaml_value(value)} has no unit; a duration needs one of ms, s, m or h: write {fits[0]}, for example"
    custom = schema.get("x-meshc-message", "must be a duration")
    return f"{yaml_value(value)} has no unit (ms, s, m or h), and {custom}"


def _null_as_text(rule: Any, schema: Mapping[str, Any], slot: _Slot) -> bool:
    """Whether a null is best answered as text meant: written out (`service: null`, not left empty) where a string
    belongs and the string 'null' would be valid there."""
    return not slot.empty and rule == "string" and _valid("null", schema)


def _no_value(schema: Mapping[str, Any], slot: _Slot) -> str:
    """For a key or item with no value (`owner:`, `- `): that it needs one, and what it takes; `[]` or `{}`, and
    removing it, only where the schema takes that (a list that must hold an item, a required key, take neither)."""
    what = "has no value" if slot.empty else "is null (no value)"
    removal = f", or {slot.removal}" if slot.removal else ""
    kind = schema.get("type")
    for empty, name in (([], "list"), ({}, "mapping")):
        if kind == ("array" if name == "list" else "object") and _valid(empty, schema):
            return f"{what}; write {yaml_value(empty)} for an empty {name}{removal}"
    return f"{what}; it needs {_wanted(schema)}{removal}"


def _wanted(schema: Mapping[str, Any]) -> str:
    """What a value must be, in a YAML author's words: `a string (must be a DNS-1123 label…)`, `one of a, b`."""
    custom = schema.get("x-meshc-message")
    if "enum" in schema:
        return "one of " + ", ".join(str(choice) for choice in schema["enum"])
    kind = schema.get("type")
    wanted = _TYPE_NAMES.get(kind, "a value") if isinstance(kind, str) else "a value"
    if kind == "object" and schema.get("required"):
        wanted += f" with the key{'s' if len(schema['required']) > 1 else ''} {', '.join(schema['required'])}"
    least = schema.get("minItems", 0) if kind == "array" else 0
    if least:
        wanted += f" of at least {least} item{'s' if least != 1 else ''}"
    return wanted + (f" ({custom})" if custom else "")


def _valid(value: Any, schema: Mapping[str, Any]) -> bool:
    """Whether `value` passes `schema` (a failing value's own subschema): a fix is offered only if it does."""
    return not _errors(value, schema)


def _errors(value: Any, schema: Mapping[str, Any]) -> list[jsonschema.ValidationError]:
    import jsonschema  # already loaded: only a document the fast check rejects gets here

    return list(jsonschema.validators.validator_for(schema)(schema).iter_errors(value))


def _still_wrong(value: Any, schema: Mapping[str, Any]) -> str | None:
    """What is wrong with `value`, a fix of a failing value, against its subschema; None if nothing is."""
    errors = _errors(value, schema)
    return _message(errors[0], _Slot(empty=False, removal=None)) if errors else None


def _type_message(value: Any, rule: Any, schema: Mapping[str, Any]) -> str:
    wanted = _TYPE_NAMES.get(rule, str(rule))
    custom = schema.get("x-meshc-message")
    if isinstance(value, str) and rule == "integer" and re.fullmatch(r"[-+]?[0-9]+", value.strip()):
        return _text_number(value.strip(), schema)
    if isinstance(value, str) and rule == "boolean" and value.lower() in ("true", "false"):
        return f"{yaml_value(value)} is a quoted string, not true or false; remove the quotes"
    if isinstance(value, str) and rule == "boolean" and value.lower() in _YAML11_BOOLS:
        return f"{yaml_value(value)} is a string to meshc (only true and false are booleans); write true or false"
    if rule == "string" and (value is None or isinstance(value, bool) or isinstance(value, int)):
        return _scalar_as_text(value, schema)
    fix = _reshaped(value, schema)
    shown = f": {yaml_value(fix)}" if fix is not None else ""
    return f"{yaml_value(value)} should be {wanted}" + (f" ({custom})" if custom else "") + shown


def _text_number(digits: str, schema: Mapping[str, Any]) -> str:
    """For a whole number that is text: quoted (`'8080'`), or written with a leading zero (`08080`), which meshc
    reads as text, quoted or not (compiler.spec.document: a YAML 1.1 reader takes `0755` for octal, a YAML 1.2
    one for decimal, so meshc takes it for neither). The message must not assume quotes the user did not write,
    and offers to remove the quotes or the zeros only where the number is then valid; else it says what is wrong
    with the number too."""
    from compiler.spec.document import resolve_plain  # the loader's rule: a huge literal stays a long integer

    sign, unsigned = ("-" if digits.startswith("-") else ""), digits.lstrip("+-")
    number = resolve_plain(sign + (unsigned.lstrip("0") or "0"))
    if unsigned.startswith("0") and len(unsigned) > 1:
        problem = f"{excerpt(digits)} has a leading zero, which makes it text to meshc, not a number"
        fix = f"write {number}"
    else:
        problem, fix = f"{yaml_value(digits)} is a quoted string, not a number", "remove the quotes"
    wrong = _still_wrong(number, schema)
    return f"{problem}; {fix}" if wrong is None else f"{problem}, and as a number, {wrong}"


def _scalar_as_text(value: Any, schema: Mapping[str, Any]) -> str:
    """For a number, true, false or null where a string belongs: to quote it, where the quoted text is valid there;
    else what the field takes (`namespace: 123`: quoted, '123' is still no DNS label)."""
    text = yaml_value(value)
    wrong = _still_wrong(
        "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value), schema
    )
    if wrong is None:
        return f"{text} is not a string; if you mean the text {text}, quote it: '{text}'"
    return f"{text} is not a string, and quoting it would not do: {wrong}"


def _reshaped(value: Any, schema: Any) -> Any:
    """`value` as `schema` most likely wants it written, or None where no fix is that plain.

    A name where a list belongs means a list of it (`datacenters: sjc`: `[sjc]`; `sjc, iad`: both), a mapping
    there a list of one. A name where a mapping belongs is the value of its one required key: a dependency
    written as a bare name, `- thumbnailer`, is `{service: thumbnailer}`.
    """
    kind = schema.get("type") if isinstance(schema, Mapping) else None
    if kind == "array" and isinstance(value, (str, dict)) and value:
        parts = (
            [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else [value]
        )
        items = schema.get("items")
        if isinstance(items, Mapping) and items.get("type") == "object":
            each = [part if isinstance(part, dict) else _reshaped(part, items) for part in parts]
            return each if parts and all(part is not None for part in each) else None
        return parts or None
    required = schema.get("required", []) if kind == "object" else []
    if not isinstance(value, str) or not value.strip() or len(required) != 1:
        return None
    # the key's own shape too: `vm: sjc` is {datacenters: [sjc]}
    inner = schema.get("properties", {}).get(required[0])
    shaped: Any = (
        _reshaped(value, inner)
        if isinstance(inner, Mapping) and inner.get("type") == "array"
        else value.strip()
    )
    return None if shaped is None else {required[0]: shaped}


def _bound_message(validator: str, value: Any, rule: Any) -> str:
    """Messages for the bounds our schemas set, worded for a YAML author."""
    messages = {
        "minimum": lambda: f"{yaml_value(value)} is less than the minimum, {rule}",
        "maximum": lambda: f"{yaml_value(value)} is more than the maximum, {rule}",
        "minLength": lambda: (
            "must not be empty" if rule == 1 else f"{yaml_value(value)} is shorter than {rule} characters"
        ),
        "minItems": lambda: f"{yaml_value(value)} must hold at least {rule} item{'s' if rule != 1 else ''}",
        "minProperties": lambda: (
            f"{yaml_value(value)} must hold at least {rule} entr{'ies' if rule != 1 else 'y'}"
        ),
        "uniqueItems": lambda: f"{yaml_value(value)} lists {_first_repeat(value)} more than once; keep one",
        "pattern": lambda: f"{yaml_value(value)} is not allowed here",
    }
    return messages.get(validator, lambda: f"{yaml_value(value)} is not allowed here ({validator})")()


def _first_repeat(items: Any) -> str:
    seen: list[Any] = []
    for item in items if isinstance(items, list) else ():
        if item in seen:
            return yaml_value(item)
        seen.append(item)
    return "an item"


def _describe(path: tuple[Any, ...]) -> str:
    """A data path as a user reads it: `dependencies[1].retries.attempts`."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text
