"""The fast schema check (spec.conform) answers what jsonschema answers: valid iff `iter_errors` yields nothing.

Compared over every document meshc ships or tests (the example, the 1,000-service synthetic mesh, the
invalid cases), over the 2,000 mutants of test_spec_fuzz (its own generator and seeds), over 2,000 seeded
edits of parsed data (values YAML never yields too: floats, tuples) and over hand-picked values per keyword
against small schemas. A valid document never imports jsonschema.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from benchmarks.synth import generate
from compiler.diagnostics import InternalError
from compiler.spec import schema
from compiler.spec.conform import compile_schema, json_equal, unique_items
from compiler.spec.document import LoadError, parse_document
from compiler.spec.load import MESH_FILE, spec_files
from tests.conftest import EXAMPLE, meshc_in_process
from tests.test_cli import _modules_after
from tests.test_invalid_specs import BASE, CASES, CASES_DIR
from tests.test_spec_fuzz import SHARDS, SPECS, mutate

Agreement = tuple[int, int]  # documents (valid, invalid) on which both engines agreed


def _schema_name(relative: str) -> str | None:
    """Which shipped schema a spec file is validated against (None: not a spec document)."""
    if relative == MESH_FILE:
        return "mesh"
    return "service" if relative.endswith(".yaml") else None


def _documents(files: Mapping[str, object]) -> Iterator[tuple[str, str, Any]]:
    """(file, schema name, data) of each spec file in `files` that parses; the others never reach the schema."""
    for relative, raw in sorted(files.items()):
        name = _schema_name(relative)
        if name is None or not isinstance(raw, bytes):
            continue
        try:
            yield relative, name, parse_document(relative, raw).data
        except LoadError:
            continue


def _jsonschema_valid(name: str, data: Any) -> bool:
    return next(iter(schema._validator(name).iter_errors(data)), None) is None


def _agree(documents: Iterator[tuple[str, str, Any]], context: str) -> Agreement:
    valid = invalid = 0
    for relative, name, data in documents:
        fast = schema._conforms(name)(data)
        assert fast == _jsonschema_valid(name, data), f"{context}: {relative}: fast check says {fast}"
        valid, invalid = (valid + 1, invalid) if fast else (valid, invalid + 1)
    return valid, invalid


# ---------------------------------------------------------------- (a) every document meshc ships or tests


def test_agrees_on_the_example_spec() -> None:
    valid, invalid = _agree(_documents(spec_files(EXAMPLE)), "mesh-spec")
    assert valid == len(list((EXAMPLE / "services").glob("*.yaml"))) + 1 and invalid == 0


def test_agrees_on_the_synthetic_1000_service_mesh(tmp_path: Path) -> None:
    spec = generate(tmp_path / "spec", 1000)
    assert _agree(_documents(spec_files(spec)), "synthetic mesh") == (1001, 0)


def test_agrees_on_every_invalid_case() -> None:
    valid = invalid = 0
    for case in CASES:
        found = _agree(_documents(spec_files(CASES_DIR / case)), case)
        valid, invalid = valid + found[0], invalid + found[1]
    assert invalid >= 15, "the schema cases (19 today) should reach the schema with an invalid document"
    assert valid > invalid, "most files of a case are valid: each case breaks one thing"


# ---------------------------------------------------------------- (b) the fuzzer's mutants


@pytest.mark.parametrize("shard", range(SHARDS))
def test_agrees_on_the_fuzzers_mutants(shard: int) -> None:
    # The very mutants test_spec_fuzz validates: its seeds, its bases, its generator.
    rng = random.Random(1000 + shard)
    example = {k: v for k, v in spec_files(EXAMPLE).items() if isinstance(v, bytes)}
    small = {name: text.encode() for name, text in BASE.items()}
    seen: set[tuple[str, bytes]] = set()  # an unchanged file is the same document: compare it once
    valid = invalid = 0
    for index in range(SPECS // SHARDS):
        files = mutate(example if index % 3 == 0 else small, rng)
        fresh = {rel: raw for rel, raw in files.items() if (rel, raw) not in seen}
        seen.update(fresh.items())
        found = _agree(_documents(fresh), f"seed {1000 + shard} mutant {index}")
        valid, invalid = valid + found[0], invalid + found[1]
    assert invalid > 150 and valid > 50, (valid, invalid)


# Values YAML never yields (floats, tuples) beside those it does: the fast check must judge them as jsonschema does.
POOL: tuple[Any, ...] = (
    None,
    True,
    False,
    0,
    1,
    -1,
    8080,
    8080.0,
    1.5,
    70000,
    "",
    "x",
    "x\n",
    "UPPER",
    "8080",
    "tcp",
    "sjc",
    "kube-sjc-a",
    [],
    [None],
    ["sjc"],
    ["sjc", "sjc"],
    [1, True],
    {},
    {"cluster": "kube-sjc-a"},
    (1,),
)


def _paths(data: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in items:
        yield from _paths(value, (*path, key))


def _edited(data: Any, path: tuple[Any, ...], rng: random.Random) -> Any:
    """A copy of `data` with the value at `path` replaced, removed, or given an unknown neighbour."""
    if not path:
        return rng.choice(POOL)
    head, *rest = path
    copy: Any = dict(data) if isinstance(data, dict) else list(data)
    if rest:
        copy[head] = _edited(copy[head], tuple(rest), rng)
    elif isinstance(copy, dict) and rng.random() < 0.2:
        del copy[head]
    elif isinstance(copy, dict) and rng.random() < 0.1:
        copy[head + "x"] = copy[head]
    else:
        copy[head] = _near(copy[head], rng) if rng.random() < 0.5 else rng.choice(POOL)
    return copy


def _near(value: Any, rng: random.Random) -> Any:
    """A value of the same JSON type as `value`, or just past one of its bounds: where valid meets invalid."""
    if isinstance(value, bool):
        return rng.choice((not value, int(value)))
    if isinstance(value, int):
        return rng.choice((float(value), value + 0.5, -value, value * 10, 0, 65535, 65536, 1))
    if isinstance(value, str):
        return rng.choice((value + "\n", value.upper(), "", value + "-", value[:1], "\n" + value, value * 2))
    if isinstance(value, list):
        return rng.choice((value + value, value[:1], [], value[::-1], [*value, 1.0]))
    if isinstance(value, dict):
        return rng.choice(({}, {key: value[key] for key in list(value)[:1]}))
    return value


def test_agrees_on_edited_data() -> None:
    # One to three edits of a parsed document's data at random places, 2,000 times, seeded.
    rng = random.Random(7)
    documents = list(_documents(spec_files(EXAMPLE)))
    valid = invalid = 0
    for index in range(2000):
        relative, name, data = rng.choice(documents)
        for _ in range(rng.randint(1, 3)):
            data = _edited(data, rng.choice(list(_paths(data))), rng)
        found = _agree(iter([(relative, name, data)]), f"edit {index}")
        valid, invalid = valid + found[0], invalid + found[1]
    assert invalid > 1000 and valid > 200, (valid, invalid)


# ---------------------------------------------------------------- (c) hand-picked values, keyword by keyword

ANNOTATIONS_ONLY = {
    "title": "t",
    "description": "d",
    "x-meshc-code": "c",
    "x-meshc-message": "m",
    "$comment": "c",
}
NAME = {"type": "string", "pattern": "^[a-z]([-a-z0-9]*[a-z0-9])?$"}
EDGES: list[tuple[dict[str, Any], list[Any]]] = [
    ({"type": "integer"}, [1, 1.0, 1.5, True, False, 0, None, "1", [1], {"a": 1}, -(10**40)]),
    ({"type": "number"}, [1, 1.0, float("inf"), True, None, "1.0"]),
    ({"type": "boolean"}, [True, False, 1, 0, "true", None]),
    ({"type": "string"}, ["", "x", 1, None, b"x", ["x"]]),
    ({"type": "object"}, [{}, {"a": 1}, [], None, "a"]),
    ({"type": "array"}, [[], [1], (), {}, None, "ab"]),
    ({"type": "null"}, [None, 0, "", False, []]),
    ({"type": ["string", "integer"]}, ["a", 1, True, 1.0, None]),
    ({"type": []}, [None, 1, "a"]),
    ({"enum": ["a", "b"]}, ["a", "b", "c", "", None, ["a"], 1]),
    ({"enum": [1, "1", None]}, [1, 1.0, True, "1", None, False, 0, [1]]),
    (
        {"enum": [[1, True], {"a": [1]}]},
        [[1, True], [1.0, True], [True, True], [1, 1], {"a": [1.0]}, {"a": [True]}],
    ),
    ({"enum": [False, 0]}, [False, 0, 0.0, None, True]),
    ({"minimum": 1, "maximum": 65535}, [0, 1, 65535, 65536, 1.5, 0.5, True, False, "0", None, float("nan")]),
    ({"type": "integer", "minimum": 1}, [0, 1, 2.0, 0.0, True, "2"]),
    ({"minLength": 1}, ["", "a", 0, [], None]),
    ({"minLength": 2}, ["é", "éé", "\U0001f600", "ab"]),
    ({"pattern": "^[a-z]+\\Z"}, ["abc", "abc\n", "ab1", "", 1, None]),
    ({"pattern": "b"}, ["abc", "ac", "", "\nb"]),
    (NAME, ["up", "up\n", "Up", "a-", "a-1", "", "a" * 70, 1]),
    ({"minItems": 1}, [[], [None], {}, "", None]),
    ({"minProperties": 1}, [{}, {"a": None}, [], None, ""]),
    ({"uniqueItems": True}, [[], ["a", "a"], ["a", "b"], [1, True], [0, False], [1, 1.0], [None, None]]),
    (
        {"uniqueItems": True},
        [[[1], [1.0]], [{"a": 1}, {"a": 1.0}], [{"a": 1}, {"a": True}], [[1, 2], [2, 1]]],
    ),
    ({"uniqueItems": True}, [["1", 1], [True, True], [False, None], [1.5, 1.5], "aa", {"a": 1}]),
    ({"uniqueItems": False}, [[1, 1], ["a", "a"]]),
    ({"items": {"type": "string"}}, [[], ["a"], ["a", 1], [["a"]], "ab", {"a": 1}]),
    ({"items": {"type": "array", "items": {"type": "integer"}}}, [[[1], []], [[1, [2]]], [[True]], [[1.0]]]),
    ({"items": False}, [[], [None], "x"]),
    ({"items": True}, [[], [None]]),
    ({"required": ["a", "b"]}, [{"a": 1, "b": None}, {"a": 1}, {}, [], "ab", None]),
    ({"properties": {"a": {"type": "integer"}}}, [{}, {"a": 1}, {"a": "1"}, {"b": "1"}, {"a": None}, []]),
    (
        {"properties": {"a": {"type": "integer"}}, "additionalProperties": False},
        [{}, {"a": 1}, {"a": 1, "b": 2}, {"b": None}, {"A": 1}, {"a ": 1}],
    ),
    (
        {"properties": {"a": True}, "additionalProperties": {"type": "string"}},
        [{"a": 1, "b": "x"}, {"b": 2}, {"a": None}, {}],
    ),
    ({"propertyNames": NAME}, [{}, {"ok": 1}, {"Not": 1}, {"up\n": 1}, {"": 1}, []]),
    (
        {
            "type": "object",
            "propertyNames": {"minLength": 2},
            "minProperties": 1,
            "additionalProperties": {"type": "integer"},
        },
        [{}, {"ab": 1}, {"a": 1}, {"ab": "1"}, [], None],
    ),
    (ANNOTATIONS_ONLY, [None, 1]),
    (True, [None, 1, {"a": []}]),
    (False, [None, 1, {}]),
]


@pytest.mark.parametrize(("rule", "values"), EDGES, ids=[str(rule)[:60] for rule, _ in EDGES])
def test_agrees_on_edge_cases(rule: dict[str, Any], values: list[Any]) -> None:
    check = compile_schema(rule)
    reference = jsonschema.Draft202012Validator(rule)
    for value in values:
        assert check(value) == reference.is_valid(value), f"{rule} on {value!r}"


def test_edge_cases_hold_both_answers() -> None:
    # The table above is only a test if each keyword meets values it accepts and values it rejects.
    one_answer = [True, False, {"type": []}, {"uniqueItems": False}, {"items": True}, ANNOTATIONS_ONLY]
    for rule, values in EDGES:
        answers = {compile_schema(rule)(value) for value in values}
        assert answers == {True, False} or rule in one_answer, rule


@pytest.mark.parametrize(
    ("name", "data", "valid"),
    [
        ("service", {**parse_document("b", BASE["services/b.yaml"].encode()).data, "port": 8080.0}, True),
        ("service", {**parse_document("b", BASE["services/b.yaml"].encode()).data, "port": True}, False),
        ("service", {**parse_document("b", BASE["services/b.yaml"].encode()).data, "port": "8080"}, False),
        ("service", {**parse_document("b", BASE["services/b.yaml"].encode()).data, "service": "b\n"}, False),
        ("service", {**parse_document("b", BASE["services/b.yaml"].encode()).data, "colour": "red"}, False),
        ("service", None, False),
        ("service", [], False),
        ("service", "service: b", False),
        ("mesh", {}, False),
        ("mesh", parse_document("m", BASE["mesh.yaml"].encode()).data, True),
    ],
)
def test_agrees_on_shipped_schemas_edge_cases(name: str, data: Any, valid: bool) -> None:
    assert schema._conforms(name)(data) is valid
    assert _jsonschema_valid(name, data) is valid


def test_json_equality() -> None:
    assert json_equal(1, 1.0) and json_equal([1, {"a": 2}], [1.0, {"a": 2.0}])
    assert not json_equal(1, True) and not json_equal(0, False) and not json_equal([1], [True])
    assert (
        not json_equal({"a": 1}, {"a": 1, "b": 2}) and not json_equal("1", 1) and not json_equal(None, False)
    )


def test_unique_items_where_jsonschema_sorts() -> None:
    # jsonschema sorts the items and compares neighbours; [1] and [True] sort as equals, so it misses the
    # second [1]. The fast check holds to JSON Schema (not unique), which is safe: a "no" hands the
    # document to jsonschema, whose answer stands. Our schemas ask uniqueItems of strings only.
    items = [[1], [True], [1]]
    assert not unique_items(items)
    assert jsonschema.Draft202012Validator({"uniqueItems": True}).is_valid(items)


# ---------------------------------------------------------------- keywords the fast check does not model


@pytest.mark.parametrize(
    "rule",
    [
        {"const": 1},
        {"properties": {"a": {"oneOf": [{"type": "string"}]}}},
        {"items": {"anyOf": []}},
        {"$ref": "https://example.com/other.json"},
        {"patternProperties": {"^a": True}},
        {"additionalProperties": {"format": "email"}},
        {"propertyNames": {"maxLength": 3}},
        {"type": "decimal"},
        {"type": "object", "properties": {"a": 1}},
        {"enum": "a"},
        ["type", "string"],
    ],
)
def test_an_unknown_keyword_fails_compilation(rule: Any) -> None:
    with pytest.raises(InternalError):
        compile_schema(rule)


def test_the_shipped_schemas_use_only_modelled_keywords() -> None:
    # A keyword added to a schema must be modelled by the fast check first: this fails before any build does.
    for name in schema.SCHEMA_NAMES:
        assert callable(compile_schema(schema.prepared_schema(name)))


# ---------------------------------------------------------------- what a valid build never pays for


def test_a_valid_build_never_imports_jsonschema(tmp_path: Path) -> None:
    loaded = _modules_after(EXAMPLE, tmp_path / "out")
    assert "compiler.spec.conform" in loaded  # the probe validated and built
    assert loaded & {"jsonschema", "referencing", "rpds", "attrs"} == set()


def test_an_invalid_document_still_gets_jsonschemas_diagnostics() -> None:
    doc = parse_document("services/b.yaml", (BASE["services/b.yaml"] + "colour: red\n").encode())
    found = [d.format() for d in schema.validate_document(doc, "service")]
    assert found == [
        "services/b.yaml:10:1: error: unknown key 'colour'; allowed here: service, owner, description, port, "
        "mesh_port, local_port, protocol, locality, restart_sensitive, health_check, deploy, dependencies  "
        "[unknown-key]"
    ]


def test_a_one_service_rebuild_never_imports_jsonschema(tmp_path: Path) -> None:
    spec, out = generate(tmp_path / "spec", 60, datacenters=3, clusters=4, deps=2, seed=5), tmp_path / "out"
    assert meshc_in_process("build", spec, "-o", out).returncode == 0
    edited = spec / "services" / "svc-0002.yaml"
    edited.write_text(edited.read_text().replace("port: 8080", "port: 8383", 1))
    loaded = _modules_after(spec, out, validate=False)
    assert {"compiler.partial", "compiler.spec.conform"} <= loaded  # the edited file was schema-checked
    # nor importlib.resources (the schemas are read beside their module) and the zipfile it loads
    assert loaded & {"jsonschema", "referencing", "rpds", "attrs", "importlib.resources", "zipfile"} == set()
