"""The document cache beside output/: a rebuild parses and schema-checks only the spec files that changed,
and a document cache that is corrupt, truncated, forged, from another meshc or not meshc's is never used."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from benchmarks.synth import generate
from compiler import incremental, targets
from compiler.diagnostics import SpecError
from compiler.output import documents as doccache
from compiler.output.disk import read_tree
from compiler.pipeline import compile_dir
from compiler.spec import document as spec_document
from compiler.spec import schema
from compiler.spec.load import spec_files


def known(spec: Path, out: Path) -> dict[str, doccache.Known]:
    files = spec_files(spec)
    return doccache.read_documents(out, targets.file_hashes(files, spec.as_posix().rstrip("/")))


@pytest.fixture
def built(tmp_path: Path) -> tuple[Path, Path]:
    spec = generate(tmp_path / "spec", 8, datacenters=2, clusters=2, deps=2, seed=3)
    out = tmp_path / "out"
    incremental.build_output(spec, out)
    assert doccache.documents_path(out).is_file()
    return spec, out


def edit_port(spec: Path, name: str = "svc-0001") -> None:
    path = spec / "services" / f"{name}.yaml"
    path.write_text(path.read_text().replace("port: 8080", "port: 8181", 1))


class Counted:
    """Counts the files parsed and schema-checked during a build."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.parsed: list[str] = []
        self.validated: list[str] = []
        parse, validate = spec_document.parse_document, schema.validate_document

        def counted_parse(name: str, raw: bytes) -> spec_document.Document:
            self.parsed.append(name)
            return parse(name, raw)

        def counted_validate(doc: spec_document.Document, kind: str) -> object:
            self.validated.append(doc.file)
            return validate(doc, kind)

        monkeypatch.setattr(spec_document, "parse_document", counted_parse)
        monkeypatch.setattr("compiler.spec.checks.validate_document", counted_validate)


def test_a_one_file_edit_parses_and_schema_checks_that_file_only(
    built: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, out = built
    edit_port(spec)
    counted = Counted(monkeypatch)
    assert incremental.build_output(spec, out).changed
    edited = f"{spec.as_posix()}/services/svc-0001.yaml"
    assert counted.parsed == [edited] and counted.validated == [edited]
    assert read_tree(out) == compile_dir(spec).tree()
    assert set(known(spec, out)) == {f"{spec.as_posix()}/{name}" for name in spec_files(spec)}


def test_without_the_cache_every_file_is_parsed(
    built: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, out = built
    doccache.documents_path(out).unlink()
    edit_port(spec)
    counted = Counted(monkeypatch)
    incremental.build_output(spec, out)
    assert len(counted.parsed) == len(spec_files(spec)) == len(counted.validated)


def test_an_invalid_edit_reports_what_a_clean_build_reports(built: tuple[Path, Path]) -> None:
    """A recorded, valid file beside an edited, invalid one: the cross-file checks still see every file."""
    spec, out = built
    path = spec / "services" / "svc-0002.yaml"
    path.write_text(
        path.read_text().replace("dependencies:\n", "dependencies:\n  - service: no-such-svc\n", 1)
    )
    with pytest.raises(SpecError) as clean:
        compile_dir(spec)
    with pytest.raises(SpecError) as built_error:
        incremental.build_output(spec, out)
    assert built_error.value.diagnostics == clean.value.diagnostics


def rewrite(out: Path, change: Callable[[list[bytes]], list[bytes]]) -> None:
    """Change the cache's lines and give it a valid checksum: a well-formed file that says something else."""
    path = doccache.documents_path(out)
    lines = change(path.read_bytes().partition(b"\n")[2].split(b"\n"))
    body = b"\n".join(lines)
    path.write_bytes(b"meshc-documents " + hashlib.sha256(body).hexdigest().encode() + b"\n" + body)


def forge(line: bytes, edit: Callable[[list[object]], None]) -> bytes:
    record = orjson.loads(line)
    edit(record)
    return orjson.dumps(record)


def _set_data(record: list[object], value: object) -> None:
    record[2] = value


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda p: p.write_bytes(b"meshc-documents \x00garbage\xff"), id="corrupt"),
        pytest.param(lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), id="truncated"),
        pytest.param(lambda p: p.write_bytes(p.read_bytes().replace(b"8080", b"8081", 1)), id="hand-edited"),
        pytest.param(lambda p: p.write_bytes(b""), id="empty"),
    ],
)
def test_a_damaged_document_cache_is_ignored(
    built: tuple[Path, Path], damage: Callable[[Path], None]
) -> None:
    spec, out = built
    damage(doccache.documents_path(out))
    assert known(spec, out) == {}
    edit_port(spec)
    incremental.build_output(spec, out)
    assert read_tree(out) == compile_dir(spec).tree()


@pytest.mark.parametrize(
    "forgery",
    [
        pytest.param(
            lambda ls: [ls[0].replace(b'"meshc_version":"', b'"meshc_version":"0.0.0-', 1), *ls[1:]],
            id="version",
        ),
        pytest.param(
            lambda ls: [orjson.dumps({**orjson.loads(ls[0]), "code": "0" * 64}), *ls[1:]], id="code"
        ),
        pytest.param(
            lambda ls: [*ls[:-1], forge(ls[-1], lambda r: _set_data(r, {"port": 8080.0}))], id="float"
        ),
        pytest.param(lambda ls: [*ls[:-1], forge(ls[-1], lambda r: r.pop())], id="shape"),
        pytest.param(
            lambda ls: [*ls[:-1], forge(ls[-1], lambda r: r.__setitem__(3, {"[]": [1]}))], id="span"
        ),
        pytest.param(lambda ls: [*ls, b"{}"], id="extra-line"),
    ],
)
def test_a_document_cache_meshc_would_not_write_is_ignored_whole(
    built: tuple[Path, Path], forgery: Callable[[list[bytes]], list[bytes]]
) -> None:
    spec, out = built
    assert known(spec, out)
    rewrite(out, forgery)
    assert known(spec, out) == {}


def test_a_recorded_document_is_used_only_for_the_same_bytes(built: tuple[Path, Path]) -> None:
    spec, out = built
    name = f"{spec.as_posix()}/services/svc-0001.yaml"
    assert name in known(spec, out)
    edit_port(spec)
    assert name not in known(spec, out) and len(known(spec, out)) == len(spec_files(spec)) - 1


def test_a_document_json_cannot_hold_is_parsed_each_time(tmp_path: Path) -> None:
    """An integer beyond 64 bits (a port the schema refuses anyway, in a field it ignores) is not recorded."""
    document = spec_document.parse_document(
        "x/services/a.yaml", b"service: a\nnote: 123456789012345678901234567890\n"
    )
    assert doccache.document_line("0" * 64, document) is None  # the encoder's one refusal
    small = spec_document.parse_document("x/services/a.yaml", b"service: a\nport: 8080\n")
    assert doccache.document_line("0" * 64, small) is not None


def test_a_span_table_answers_like_the_parser_s_spans() -> None:
    document = spec_document.parse_document(
        "x/services/a.yaml", b'service: a\n"0": [x, {"1": y}]\nlist:\n  - 0\n  - "0"\n'
    )
    line = doccache.document_line("0" * 64, document)
    assert line is not None
    record = orjson.loads(line)
    table = doccache.SpanTable(document.file, record[3])
    assert dict(table) == dict(document.spans) and len(table) == len(document.spans)
    assert table[("0", 1, "1")] == document.spans[("0", 1, "1")]
    assert ("0", "1") not in table and (0,) not in table  # a key "0" and an index 0 stay apart


@pytest.mark.parametrize("raw", [b"", b"\n", b"a", b"a\n", b"a\nb", b"\n\na\n\nbc\n", "é\nü".encode()])
def test_the_cache_s_lines_are_its_split_as_views(raw: bytes) -> None:
    assert [bytes(line) for line in doccache._split(raw)] == raw.split(b"\n")


def test_a_sealed_file_is_written_in_pieces_over_a_longer_one(tmp_path: Path) -> None:
    # The seal and the body go out one after the other (no megabyte copy joins them); written in place over a
    # longer file, what is left of it past the new end is cut off, and the seal still holds.
    from compiler.output.sealed import rewrite_file, sealed, unsealed

    target = tmp_path / "cache"
    target.write_bytes(b"x" * 1000)
    assert rewrite_file(target, sealed(b"magic", b"body\n"))
    raw = target.read_bytes()
    assert raw.startswith(b"magic ") and raw.endswith(b"\nbody\n") and unsealed(b"magic", raw) == b"body\n"
