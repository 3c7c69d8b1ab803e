"""The loader: scalars read as written, spans of every value and key, risky YAML rejected."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from compiler.diagnostics import Span, SpecError
from compiler.ir.lower import lower
from compiler.pipeline import validate_only
from compiler.spec.document import MAX_DEPTH, MAX_FILE_BYTES, LoadError, Spans, parse_document, resolve_plain
from compiler.spec.load import load_documents, read_tree


def parse(text: str | bytes) -> dict:
    return parse_document("f.yaml", text.encode() if isinstance(text, str) else text).data


def load_error(text: str | bytes) -> tuple[str, int, int]:
    with pytest.raises(LoadError) as info:
        parse_document("f.yaml", text.encode() if isinstance(text, str) else text)
    d = info.value.diagnostic
    return d.code, d.span.line, d.span.col


# ------------------------------------------------------------------ scalars


@pytest.mark.parametrize(
    ("plain", "value"),
    [
        # YAML 1.1 booleans and Norway: only true/false are booleans here
        ("no", "no"),
        ("yes", "yes"),
        ("on", "on"),
        ("off", "off"),
        ("y", "y"),
        ("n", "n"),
        ("NO", "NO"),
        ("true", True),
        ("True", True),
        ("false", False),
        ("FALSE", False),
        # versions, octal-looking and float-looking text stays text
        ("1.10", "1.10"),
        ("1.0", "1.0"),
        ("1e3", "1e3"),
        (".inf", ".inf"),
        ("0x1F", "0x1F"),
        ("0o7", "0o7"),
        ("07", "07"),
        ("1_000", "1_000"),
        ("12:30", "12:30"),
        ("2021-01-01", "2021-01-01"),
        # decimal integers are integers
        ("0", 0),
        ("8080", 8080),
        ("-3", -3),
        ("+5", 5),
        # nulls
        ("null", None),
        ("~", None),
        ("", None),
    ],
)
def test_plain_scalars(plain: str, value: object) -> None:
    assert resolve_plain(plain) == value and type(resolve_plain(plain)) is type(value)
    assert parse(f"k: {plain}\n") == {"k": value}


@pytest.mark.parametrize("literal", ["9" * 5001, "1" + "0" * 4400, "-" + "7" * 641, "+" + "9" * 700])
def test_an_integer_too_long_for_int_is_above_every_bound_and_prints_as_written(literal: str) -> None:
    # int() refuses more than 4,300 digits (ValueError, once an internal error, exit 3)
    value = resolve_plain(literal)
    assert isinstance(value, int) and abs(value) > 10**600
    assert (value < 0) == literal.startswith("-")
    assert str(value) == repr(value) == f"{value}" == literal.removeprefix("+")


def test_an_integer_as_long_as_any_int_limit_allows_stays_exact() -> None:
    assert resolve_plain("9" * 640) == int("9" * 640)


@pytest.mark.parametrize("quoted", ['"8080"', "'8080'", '"true"', "'no'", '"null"', '"1.10"', '""'])
def test_quoted_scalars_are_strings(quoted: str) -> None:
    assert parse(f"k: {quoted}\n") == {"k": quoted[1:-1]}


def test_block_scalars_and_flow_collections() -> None:
    data = parse("a: |\n  line 1\n  line 2\nb: >\n  folded\n  text\nc: [no, 1.10, 3]\nd: {x: yes}\n")
    assert data == {"a": "line 1\nline 2\n", "b": "folded text\n", "c": ["no", "1.10", 3], "d": {"x": "yes"}}


def test_keys_are_strings_as_written() -> None:
    assert parse("8080: a\nno: b\ntrue: c\n") == {"8080": "a", "no": "b", "true": "c"}


def test_datacenter_named_no_and_version_1_10_survive_the_pipeline(tmp_path: Path) -> None:
    spec = tmp_path / "spec"
    (spec / "services").mkdir(parents=True)
    (spec / "mesh.yaml").write_text(
        "mesh: m\ntrust_domain: m.mesh\ndatacenters:\n"
        "  no: {region: north, zookeeper: [zk.no:2181], failover: [yes]}\n"
        "  yes: {region: south, zookeeper: [zk.yes:2181], failover: [no]}\n"
    )
    (spec / "services" / "a.yaml").write_text(
        "service: a\nowner: team\ndescription: 1.10\nport: 8080\nmesh_port: 18080\nlocal_port: 7001\n"
        "deploy: {vm: {datacenters: [no, yes]}}\n"
    )
    checked = validate_only(read_tree(spec), "spec")
    assert list(checked.mesh.datacenters) == ["no", "yes"]
    assert checked.services["a"].description == "1.10"
    assert [w.id for w in lower(checked).workloads] == ["vm/a/no", "vm/a/yes"]


# ------------------------------------------------------------------ spans

SPANS = """\
# a comment
service: upload
deploy:
  vm: {datacenters: [sjc, iad]}
  kubernetes:
    - cluster: kube-a
      namespace: up
dependencies:
  - service: é-x
    timeout: "2s"
"""


def test_value_spans() -> None:
    doc = parse_document("spec/services/upload.yaml", SPANS.encode())
    at = {path: (span.line, span.col) for path, span in doc.spans.items()}
    assert at[()] == (2, 1)  # the root mapping starts at its first key, after the comment
    assert at[("service",)] == (2, 10)
    assert at[("deploy", "vm")] == (4, 7)
    assert at[("deploy", "vm", "datacenters", 0)] == (4, 22)
    assert at[("deploy", "vm", "datacenters", 1)] == (4, 27)
    assert at[("deploy", "kubernetes", 0)] == (6, 7)
    assert at[("deploy", "kubernetes", 0, "namespace")] == (7, 18)
    assert at[("dependencies", 0, "service")] == (9, 14)
    assert at[("dependencies", 0, "timeout")] == (10, 14)  # a quoted scalar starts at its quote
    assert all(span.file == "spec/services/upload.yaml" for span in doc.spans.values())


def test_an_empty_value_is_at_its_key() -> None:
    # libyaml marks it after the colon: past the end of `dependencies:`, or on a line after `? b` that does not exist
    doc = parse_document("f.yaml", b"dependencies:\nowner:  # none\nx: {a: }\n? b\n")
    at = {path: (span.line, span.col) for path, span in doc.spans.items()}
    assert at[("dependencies",)] == (1, 1)
    assert at[("owner",)] == (2, 1)
    assert at[("x", "a")] == (3, 5)
    assert at[("b",)] == (4, 3)
    quoted = parse_document("f.yaml", b"a: ''\n")  # an empty string has its quotes to point at
    assert quoted.span(("a",)) == Span(file="f.yaml", line=1, col=4)


def test_key_spans() -> None:
    doc = parse_document("f.yaml", SPANS.encode())
    assert doc.key_span(("deploy",)) == Span(file="f.yaml", line=3, col=1)
    assert doc.key_span(("deploy", "vm", "datacenters")) == Span(file="f.yaml", line=4, col=8)
    assert doc.key_span(("dependencies", 0, "timeout")) == Span(file="f.yaml", line=10, col=5)
    # list items have no key: the value's span stands in
    assert doc.key_span(("deploy", "kubernetes", 0)) == Span(file="f.yaml", line=6, col=7)


def test_span_falls_back_to_nearest_ancestor() -> None:
    doc = parse_document("f.yaml", SPANS.encode())
    assert doc.span(("dependencies", 0, "retries", "attempts")) == doc.span(("dependencies", 0))
    assert doc.span(("nothing", "here")) == doc.span(())


def test_spans_answer_a_missing_path_with_the_default_and_give_every_position() -> None:
    doc = parse_document("f.yaml", SPANS.encode())
    assert doc.spans.get(("nothing",)) is None and doc.spans.get(("nothing",), "x") == "x"
    assert ("nothing",) not in doc.spans and doc.spans.get(("service",)) == Span(
        file="f.yaml", line=2, col=10
    )
    assert isinstance(doc.spans, Spans)  # positions kept as numbers, made Span records when asked for
    positions = doc.spans.positions()
    assert positions == {path: (span.line, span.col) for path, span in doc.spans.items()}
    assert len(positions) == len(doc.spans) == 15


def test_columns_count_characters_not_bytes() -> None:
    doc = parse_document("f.yaml", "é: [x, {b: ü}]\n".encode())
    assert (doc.spans[("é", 1, "b")].line, doc.spans[("é", 1, "b")].col) == (1, 12)


def test_crlf_and_bom() -> None:
    doc = parse_document("f.yaml", b"\xef\xbb\xbfa: 1\r\nb: [x, y]\r\n")
    assert doc.data == {"a": 1, "b": ["x", "y"]}
    assert doc.spans[("b", 1)] == Span(file="f.yaml", line=2, col=8)


# ------------------------------------------------------------------ rejected YAML


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: &x 1\nb: 2\n", ("yaml-alias", 1, 4)),
        ("a: [1]\nb: *x\n", ("yaml-alias", 2, 4)),  # rejected as an alias before anyone asks what it names
        ("&x a: 1\n", ("yaml-alias", 1, 1)),
        ("a: !!str 1\n", ("yaml-tag", 1, 4)),
        ("a: !custom x\n", ("yaml-tag", 1, 4)),
        ("a: !!seq [1]\n", ("yaml-tag", 1, 4)),
        ("a: 1\nb: 2\na: 3\n", ("yaml-duplicate-key", 3, 1)),
        ("a: {x: 1, x: 2}\n", ("yaml-duplicate-key", 1, 11)),
        ("a: 1\n---\nb: 2\n", ("yaml-multi-document", 2, 1)),
        ("", ("file-empty", 1, 1)),
        ("# only a comment\n", ("file-empty", 1, 1)),
        ("---\n...\n", ("file-empty", 1, 1)),
        (
            "a: [1\n",
            ("yaml-syntax", 1, 6),
        ),  # at the end of the last line, never on a line past the end of the file
        ("a: [1", ("yaml-syntax", 1, 6)),
        ("a: 1\rb: [\r\n", ("yaml-syntax", 2, 5)),  # a lone CR is a YAML line break, as libyaml counts it
        ("a:\n\tb: 1\n", ("yaml-syntax", 2, 1)),
        ("? [a]\n: 1\n", ("yaml-syntax", 1, 3)),
        ("a: 1\n: 2\n", ("yaml-syntax", 2, 1)),
    ],
)
def test_rejected(text: str, expected: tuple[str, int, int]) -> None:
    assert load_error(text) == expected


def test_not_utf8() -> None:
    assert load_error(b"a: 1\nb: caf\xe9\n") == ("file-encoding", 2, 7)


def test_too_large_is_checked_before_parsing() -> None:
    assert load_error(b"a: [" * (MAX_FILE_BYTES // 4 + 1)) == ("file-too-large", 1, 1)


def test_nesting_limit() -> None:
    assert load_error("a: " + "[" * MAX_DEPTH + "]" * MAX_DEPTH + "\n")[0] == "yaml-syntax"
    depth = MAX_DEPTH - 2  # the root mapping and `a` take two levels
    assert parse("a: " + "[" * depth + "]" * depth + "\n")["a"] is not None


def test_alias_of_a_null_anchor_is_still_an_alias() -> None:
    assert load_error("a: &x\nb: *x\n") == ("yaml-alias", 1, 4)


# ------------------------------------------------------------------ files


def test_read_tree_reads_mesh_and_services_only(tmp_path: Path) -> None:
    (tmp_path / "services").mkdir()
    (tmp_path / "mesh.yaml").write_text("mesh: m\n")
    (tmp_path / "services" / "a.yaml").write_text("service: a\n")
    (tmp_path / "services" / ".a.yaml.swp").write_text("editor junk")
    (tmp_path / "services" / "sub").mkdir()
    (tmp_path / "README.md").write_text("docs")
    assert read_tree(tmp_path) == {"mesh.yaml": b"mesh: m\n", "services/a.yaml": b"service: a\n"}


def test_read_tree_stops_reading_past_the_limit(tmp_path: Path) -> None:
    (tmp_path / "mesh.yaml").write_bytes(b"#" * (3 * MAX_FILE_BYTES))
    assert len(read_tree(tmp_path)["mesh.yaml"]) == MAX_FILE_BYTES + 1


def test_load_documents_names_files_as_the_user_does() -> None:
    docs = load_documents({"mesh.yaml": b"mesh: m\n", "services/a.yaml": b"service: a\n"}, "my/spec")
    assert sorted(docs) == ["my/spec/mesh.yaml", "my/spec/services/a.yaml"]
    assert docs["my/spec/services/a.yaml"].spans[("service",)].file == "my/spec/services/a.yaml"


def test_load_documents_collects_every_file_error() -> None:
    with pytest.raises(SpecError) as info:
        load_documents(
            {"services/a.yaml": b"a: &x 1\n", "services/b.yaml": b"", "services/c.yml": b"x: 1\n"}, "s"
        )
    assert [(d.span.file, d.code) for d in info.value.diagnostics] == [
        ("s/mesh.yaml", "file-missing"),
        ("s/services/a.yaml", "yaml-alias"),
        ("s/services/b.yaml", "file-empty"),
        ("s/services/c.yml", "stray-file"),
    ]


# ------------------------------------------------------------------ reading the files


@pytest.mark.parametrize("size", [0, 1, 4095, MAX_FILE_BYTES, MAX_FILE_BYTES + 1, 3 * MAX_FILE_BYTES])
def test_spec_files_are_read_whole_up_to_the_limit_plus_one_byte(tmp_path: Path, size: int) -> None:
    (tmp_path / "services").mkdir()
    (tmp_path / "mesh.yaml").write_bytes(b"#" * size)
    (tmp_path / "services/a.yaml").write_bytes(b"a: 1\n")
    files = read_tree(tmp_path)
    assert files["mesh.yaml"] == b"#" * min(size, MAX_FILE_BYTES + 1)
    assert files["services/a.yaml"] == b"a: 1\n"


@pytest.mark.parametrize("stated", [0, 10, 99])
def test_a_file_longer_than_fstat_said_is_read_on(tmp_path: Path, stated: int) -> None:
    """The file grew between fstat and read: the reader does not stop at the size fstat gave."""
    from compiler.spec.load import _read_capped

    path = tmp_path / "f.yaml"
    path.write_bytes(bytes(range(100)) * 2000)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert _read_capped(fd, stated, 150_001) == (bytes(range(100)) * 2000)[:150_001]
    finally:
        os.close(fd)
