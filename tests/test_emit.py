"""Canonical serialization: what dump_yaml writes reads back as the same data in every YAML reader we feed."""

from __future__ import annotations

import io
import json
import math
import random
import subprocess

import pytest
import yaml
from conftest import require_tool
from ruamel.yaml import YAML

from compiler.emit import dump_json, dump_yaml, literal_entry, yaml_string

# Characters that make YAML scalars ambiguous or break them, plus line breaks of every kind.
HOSTILE = list(":#-?{}[],&*!|>'\"%@`~=<\\ \t\n\r/._") + [
    "\u2028",
    "\u2029",
    "\x85",
    "\x7f",
    "\x9b",
    "\ufeff",
    "\x00",
    "\x1b",
    "é",
    "€",
    "😀",
]
WORDS = [
    "no",
    "yes",
    "on",
    "off",
    "y",
    "n",
    "true",
    "false",
    "null",
    "~",
    "1.10",
    "0x1F",
    "07",
    "1e3",
    ".inf",
    ".NaN",
    "12:30",
    "2021-01-01",
    "<<",
    "=",
    "-",
    "%{port}",
    "%{literal('%')}",
    "---",
    "...",
    "",
    " ",
    "a: b",
    "- a",
    "# c",
    "&x",
    "*x",
    "!t",
]


def random_string(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.3:
        return rng.choice(WORDS)
    alphabet = HOSTILE + list("abcXYZ019")
    text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
    if roll < 0.5:  # multi-line text, the literal-block path
        text = "\n".join(
            rng.choice(WORDS + [text, "line"]) for _ in range(rng.randint(2, 4))
        ) + "\n" * rng.randint(0, 3)
    return text


def random_data(rng: random.Random, depth: int = 0) -> object:
    roll = rng.random()
    if depth < 3 and roll < 0.2:
        return {random_string(rng): random_data(rng, depth + 1) for _ in range(rng.randint(0, 4))}
    if depth < 3 and roll < 0.35:
        return [random_data(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return rng.choice(
        [
            random_string(rng),
            random_string(rng),
            rng.randint(-(10**12), 10**12),
            rng.choice([True, False, None]),
            rng.uniform(-1e6, 1e6),
            rng.random() * 10 ** rng.randint(-12, 12),
        ]
    )


def ruamel_load(data: bytes) -> object:
    return YAML(typ="safe", pure=True).load(io.BytesIO(data))


CASES = [random_data(random.Random(seed)) for seed in range(400)]


@pytest.mark.parametrize("seed", range(0, 400, 40))
def test_round_trip_pyyaml_yaml11(seed: int) -> None:
    for data in CASES[seed : seed + 40]:
        assert yaml.safe_load(dump_yaml(data)) == data, dump_yaml(data)


@pytest.mark.parametrize("seed", range(0, 400, 40))
def test_round_trip_ruamel_yaml12(seed: int) -> None:
    for data in CASES[seed : seed + 40]:
        assert ruamel_load(dump_yaml(data)) == data, dump_yaml(data)


@pytest.mark.consumer
def test_round_trip_psych() -> None:
    """Puppet reads hiera data with Ruby's Psych (YAML 1.1): feed it a batch and compare."""
    ruby = require_tool("ruby")
    rng = random.Random(11)
    batch = {f"k{i}": random_string(rng) for i in range(300)} | {
        "words": WORDS,
        "floats": [1e-05, 0.1, 2.5e-07, 1e20, -0.0],
    }
    script = "require 'yaml'; require 'json'; puts JSON.generate(YAML.safe_load(STDIN.read))"
    result = subprocess.run(
        [ruby, "-e", script], input=dump_yaml(batch), capture_output=True, check=True, timeout=60
    )
    assert json.loads(result.stdout) == batch


def test_every_single_character_round_trips() -> None:
    for code in [*range(0x300), 0x2028, 0x2029, 0xFEFF, 0xFFFE, 0xFFFF, 0xE000, 0x1F600]:
        for text in (chr(code), f"a{chr(code)}b", f"x\n{chr(code)}\ny"):
            assert yaml.safe_load(dump_yaml({text: text})) == {text: text}, hex(code)


@pytest.mark.parametrize(
    ("text", "written"),
    [
        ("upload", "upload"),
        ("/etc/mesh", '"/etc/mesh"'),  # a leading slash is quoted, to keep the plain rule simple
        ("kube-sjc-a", "kube-sjc-a"),
        ("no", '"no"'),
        ("No", '"No"'),
        ("on", '"on"'),
        ("y", '"y"'),
        ("null", '"null"'),
        ("1.10", '"1.10"'),
        ("8080", '"8080"'),
        ("07", '"07"'),
        ("", '""'),
        ("~", '"~"'),
        ("%{port}", '"%{port}"'),
        ("a: b", '"a: b"'),
        ("- a", '"- a"'),
        ("x\u2028y", '"x\\u2028y"'),
        ("tab\there", '"tab\\there"'),
        ('quote"s', '"quote\\"s"'),
    ],
)
def test_yaml_string(text: str, written: str) -> None:
    assert yaml_string(text) == written


def test_block_layout() -> None:
    data = {"a": {"b": [1, {"c": "no", "d": []}, [2, 3]], "e": {}}, "f": "two\nlines\n", "g": None, "h": 1.5}
    assert dump_yaml(data).decode() == (
        "a:\n"
        "  b:\n"
        "    - 1\n"
        '    - c: "no"\n'
        "      d: []\n"
        "    -\n"
        "      - 2\n"
        "      - 3\n"
        "  e: {}\n"
        "f: |\n"
        "  two\n"
        "  lines\n"
        "g: null\n"
        "h: 1.5\n"
    )


def test_key_order_is_insertion_order() -> None:
    assert dump_yaml({"b": 1, "a": 2}) == b"b: 1\na: 2\n"


def test_top_level_scalars_and_empties() -> None:
    assert dump_yaml({}) == b"{}\n"
    assert dump_yaml([]) == b"[]\n"
    assert dump_yaml("no") == b'"no"\n'
    assert yaml.safe_load(dump_yaml(7)) == 7


def test_lf_only_and_trailing_newline() -> None:
    for data in CASES:
        written = dump_yaml(data)
        assert written.endswith(b"\n") and b"\r" not in written


@pytest.mark.parametrize(
    "value", [0.1, 1 / 3, 1e-05, 2.5e-07, 1e-10, 1e20, 1e300, -0.0, 100.0, 123456789.125, 5e-324]
)
def test_floats_have_a_dot_and_no_exponent(value: float) -> None:
    written = dump_yaml({"x": value}).decode()
    assert "e" not in written.lower().removeprefix("x") and "." in written
    assert yaml.safe_load(written)["x"] == value
    assert math.copysign(1, yaml.safe_load(written)["x"]) == math.copysign(1, value)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_floats_are_refused(value: float) -> None:
    with pytest.raises(ValueError):
        dump_yaml({"x": value})


def test_unsupported_types_are_refused() -> None:
    with pytest.raises(TypeError):
        dump_yaml({"x": {1, 2}})


def test_dump_json_is_canonical() -> None:
    assert dump_json({"b": [1, "é"], "a": {"d": True, "c": None}}) == (
        '{\n  "a": {\n    "c": null,\n    "d": true\n  },\n  "b": [\n    1,\n    "é"\n  ]\n}\n'.encode()
    )
    assert dump_json({"a": 1, "b": 2}) == dump_json({"b": 2, "a": 1})


def test_literal_entry_writes_what_dump_yaml_writes_or_declines() -> None:
    """The ConfigMap fast path: the very bytes of the general emitter, or None where it must take the general way."""
    rng = random.Random(7)
    pieces = [*HOSTILE, "{", '  "a": 1,', "x", "\n", "\n\n", "\t", "é", "\x7f", "\x01"]
    texts = [
        '{\n  "a": 1\n}\n',  # dump_json's own shape: the case the fast path is for
        '{\n  "a": 1\n}',
        "a\nb\n\n",
        "a\n\nb\n",
        " lead\nx\n",
        "\nlead\n",
        "one line\n",
        "tab\tin\nit\n",
        "del\x7f\nx\n",
        "ctl\x01\nx\n",
        "caf\u00e9\nx\n",
        *("".join(rng.choice(pieces) for _ in range(rng.randrange(1, 12))) for _ in range(3000)),
    ]
    taken = 0
    for key in ("bootstrap.json", "no", "a b"):
        for text in texts:
            general = dump_yaml({"data": {key: text}}).removeprefix(b"data:\n")
            fast = literal_entry(key, text, 2)
            if fast is not None:
                taken += 1
                assert fast == general, (key, text)
    assert taken > 100  # the fast path is taken, not always declined
    assert literal_entry("k", "caf\u00e9\nx\n", 2) is None  # non-ASCII: the general way
    assert literal_entry("k", "del\x7f\nx\n", 2) is None  # not printable: quoted by the general way
