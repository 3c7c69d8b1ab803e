"""JSON Schema validation of spec documents, with errors mapped back to the spec's lines."""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import cache
from importlib import resources
from typing import Any

import jsonschema

from compiler.diagnostics import Diagnostic, did_you_mean
from compiler.spec.load import Document

SCHEMA_NAMES = ("mesh", "service")


@cache
def schema_text(name: str) -> str:
    """The published JSON Schema `name` ("mesh" or "service") as shipped in the package."""
    return resources.files("compiler.spec").joinpath(f"schema/{name}.schema.json").read_text("utf-8")


@cache
def _validator(name: str) -> jsonschema.protocols.Validator:
    schema = json.loads(schema_text(name))
    cls = jsonschema.validators.validator_for(schema)  # the schemas are checked against their metaschema in the tests
    # Resolving `$ref` through the registry on every node doubles validation time, so the
    # validator gets the same schema with each local `$ref` replaced by its definition.
    return cls(_python_patterns(_inline_refs(schema, schema.get("$defs", {}))))


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
    errors = _validator(name).iter_errors(doc.data)
    for error in sorted(errors, key=lambda e: (list(map(str, e.absolute_path)), e.validator)):
        yield from _diagnostics(doc, error)


def _diagnostics(doc: Document, error: jsonschema.ValidationError) -> Iterator[Diagnostic]:
    path = tuple(error.absolute_path)
    where = _describe(path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = error.schema.get("properties", {})
        for key in sorted(set(error.instance) - set(allowed)):
            message = f"unknown key {key!r}{where and ' in ' + where}{did_you_mean(key, allowed)}"
            yield Diagnostic(span=doc.key_span((*path, key)), code="unknown-key", message=message)
        return
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        yield Diagnostic(span=doc.span(path), code="missing-key", message=f"missing required key {missing!r}{where and ' in ' + where}")
        return
    # Most errors are best reported at the value; a bad mapping key is reported at the key.
    span = doc.key_span((*path, error.instance)) if _is_key_error(error) else doc.span(path)
    code = error.schema.get("x-meshc-code", "schema") if isinstance(error.schema, dict) else "schema"
    yield Diagnostic(span=span, code=code, message=f"{where or 'document'}: {_message(error)}")


def _is_key_error(error: jsonschema.ValidationError) -> bool:
    return any(part == "propertyNames" for part in error.absolute_schema_path)


def _message(error: jsonschema.ValidationError) -> str:
    custom = error.schema.get("x-meshc-message") if isinstance(error.schema, dict) else None
    if _is_key_error(error):
        return f"name {error.instance!r} {custom or 'is not allowed'}"
    if custom:
        return f"{error.instance!r} {custom}"
    if error.validator == "type":
        return f"{error.instance!r} should be of type {error.validator_value}"
    if error.validator == "enum":
        return f"{error.instance!r} is not one of {', '.join(map(str, error.validator_value))}{did_you_mean(str(error.instance), map(str, error.validator_value))}"
    return error.message


def _describe(path: tuple[Any, ...]) -> str:
    """A data path as a user reads it: `dependencies[1].retries.attempts`."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text
