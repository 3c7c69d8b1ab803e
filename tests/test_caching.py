"""meshc's one caching story: a Memo owned by one stage, and the garbage collector paused only by the command line."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import EXAMPLE

import compiler.cli as cli
from compiler.memo import Memo
from compiler.pipeline import compile_dir


def test_memo_builds_once_per_key() -> None:
    memo, calls = Memo(), []

    def build(x: int) -> list[int]:
        calls.append(x)
        return [x]

    first = memo.once(("k", 1), build, 1)
    assert memo.once(("k", 1), build, 99) is first  # the key decides, not the arguments
    assert memo.once(("k", 2), build, 2) == [2]
    assert calls == [1, 2]


def test_memo_keeps_id_keyed_arguments_alive() -> None:
    # A key holding id(document) stays unique only while the document lives; the Memo holds it.
    memo = Memo()
    memo.once(("json", id(doc := {"a": 1})), repr, doc)
    ident = id(doc)
    del doc
    fresh = [{"b": 2} for _ in range(1000)]
    assert all(id(other) != ident for other in fresh)


@pytest.fixture
def collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


def test_library_compile_leaves_the_collector_alone(
    collector_on: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse() -> None:
        raise AssertionError("library code paused the garbage collector")

    monkeypatch.setattr(gc, "disable", refuse)
    assert compile_dir(EXAMPLE).artifacts
    assert gc.isenabled()


def test_the_command_line_pauses_the_collector_for_the_command(
    collector_on: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[bool] = []
    real = cli.validate_only

    def validate_only(*args: Any) -> Any:
        seen.append(gc.isenabled())
        return real(*args)

    monkeypatch.setattr(cli, "validate_only", validate_only)
    assert cli.main(["validate", str(EXAMPLE)]) == 0
    assert seen == [False] and gc.isenabled()  # paused while the command ran, resumed after
    assert "ok" in capsys.readouterr().out


def test_the_collector_resumes_after_a_failing_command(
    collector_on: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["validate", str(tmp_path / "absent")]) == 2
    assert gc.isenabled()
