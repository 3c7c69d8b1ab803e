"""Mutated specs never crash the compiler: each one compiles or fails with one-line, positioned diagnostics.

Three kinds of mutation, seeded and deterministic: YAML-level (a line dropped, duplicated or given a
value of another type, tabs, deep nesting, huge numbers), byte-level (control characters, NEL,
U+2028/U+2029, random bytes, truncation) and file-level (files removed, renamed, added; symlinks,
FIFOs, directories named x.yaml, services/ removed or made a file). Byte- and YAML-level mutants run
through the library and the CLI's own formatter; file-level mutants are written to disk and run
through `compiler.cli.main(["validate", …])` in-process, stderr captured. The suite runs 2,000;
`make fuzz` runs 20,000 (MESHC_FUZZ_SPECS=N for any other count).
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import re
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from compiler import cli
from compiler.diagnostics import SpecError, format_all
from compiler.pipeline import compile, spec_files, validate_only
from tests.conftest import EXAMPLE
from tests.test_invalid_specs import BASE

LINE = re.compile(r"^[^\n]+:\d+:\d+: error: [^\n]+  \[[a-z-]+\]$")
SUMMARY = re.compile(r"^Found \d+ errors? in \d+ files?$")
BREAKS = re.compile(rb"\r\n|\r|\n")
# 2,000 in the suite (the first half of the 4,000 it ran before, same seeds); `make fuzz` runs 20,000.
SPECS = int(os.environ.get("MESHC_FUZZ_SPECS", "2000"))
SHARDS = 4
COMPILE_EVERY = 4  # a quarter of the mutants that validate also go through lower, render and the backends

# Values chosen to hit every layer: YAML traps, wrong types, out-of-range ports, references to
# nothing, duplicate placements, clashing ports, localities that strand clients, huge numbers.
VALUES = (
    "0",
    "-1",
    "70000",
    "''",
    "null",
    "[]",
    "{}",
    "yes",
    "no",
    "on",
    "1.5",
    "x" * 70,
    "UPPER",
    "a b",
    "'%{x}'",
    "7102",
    "18080",
    "9901",
    "[sjc, sjc]",
    "[nowhere]",
    "{cluster: kube-sjc-a}",
    "[{service: upload}]",
    "0ms",
    "99999999s",
    "local",
    "global",
    "tcp",
    "grpc",
    "[{cluster: kube-sjc-a, namespace: x}, {cluster: kube-sjc-a}]",
    "'no'",
    "~",
    "!!str x",
    "&a x",
    "*a",
    "9" * 40,
    "-" + "9" * 30,
    "24h",
    "86401s",
    "999999999h",
    '"8080"',
    "true",
    "[" * 40 + "]" * 40,
    "{a: " * 40 + "1" + "}" * 40,
    "'" + "y" * 3000 + "'",
    "|\n  block",
    ">-",
    "? complex",
    "- list item",
    "@x",
    "`x`",
)
CHARACTERS = (
    "\x00",
    "\x01",
    "\x07",
    "\x0b",
    "\x0c",
    "\x1b",
    "\x7f",
    "\x85",
    "\x9b",
    "\u2028",
    "\u2029",
    "\ufffe",
    "\uffff",
    "\t",
    "\r",
    "\r\n",
    "\ufeff",
    "é",
    "\U0001f600",
    "\n",
    ":",
    "#",
    "'",
    '"',
    "{",
    "[",
    "&",
    "*",
    "!",
    "%",
    "\\",
)


# ---------------------------------------------------------------- in-memory mutations (YAML- and byte-level)


def _lines(data: bytes) -> list[str]:
    return data.decode("utf-8", errors="surrogateescape").split("\n")


def _join(lines: list[str]) -> bytes:
    return "\n".join(lines).encode("utf-8", errors="surrogateescape")


def yaml_mutation(data: bytes, rng: random.Random) -> bytes:
    """A structural edit: a line dropped, duplicated, re-typed, re-indented with a tab, or buried in nesting."""
    lines = _lines(data)
    at, roll = rng.randrange(len(lines)), rng.random()
    if roll < 0.15:
        del lines[at]
    elif roll < 0.55 and ":" in lines[at]:
        lines[at] = f"{lines[at].split(':', 1)[0]}: {rng.choice(VALUES)}"
    elif roll < 0.7:
        lines.insert(at, lines[rng.randrange(len(lines))])  # often a duplicate key
    elif roll < 0.8:
        lines[at] = "\t" + lines[at].lstrip(" ")
    elif roll < 0.9:
        depth = rng.choice((5, 31, 33, 200))
        lines.insert(at, "deep: " + "[" * depth + "]" * depth)
    else:
        lines[at] = " " * rng.randrange(1, 6) + lines[at]
    return _join(lines)


def byte_mutation(data: bytes, rng: random.Random) -> bytes:
    """A raw edit: a troublesome character inserted, random bytes, a byte flipped, or the file cut short."""
    roll = rng.random()
    at = rng.randrange(len(data) + 1)
    if roll < 0.5:
        return data[:at] + rng.choice(CHARACTERS).encode("utf-8", errors="surrogatepass") + data[at:]
    if roll < 0.7:
        return data[:at] + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9))) + data[at:]
    if roll < 0.85 and data:
        flip = rng.randrange(len(data))
        return data[:flip] + bytes([data[flip] ^ (1 << rng.randrange(8))]) + data[flip + 1 :]
    return data[:at]


def mutate(files: dict[str, bytes], rng: random.Random) -> dict[str, bytes]:
    """One to three random edits of random files (a service file may also disappear)."""
    files = dict(files)
    for _ in range(rng.randint(1, 3)):
        name = rng.choice(sorted(files))
        roll = rng.random()
        if roll < 0.6:
            files[name] = yaml_mutation(files[name], rng)
        elif roll < 0.95:
            files[name] = byte_mutation(files[name], rng)
        elif name != "mesh.yaml":
            del files[name]
    return files


# ---------------------------------------------------------------- file-level mutations (on disk)


def _clear(path: Path) -> None:
    """Remove whatever is at `path` (a link, never its target), so the next edit creates, never writes through."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.is_symlink() or path.exists():
        path.unlink()


def put(path: Path, data: bytes) -> None:
    """Write a new file at `path`: O_EXCL|O_NOFOLLOW, so a mutant's symlink or FIFO is replaced, not written through."""
    _clear(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _symlink(target: str) -> Callable[[Path, str], None]:
    def make(root: Path, relative: str) -> None:
        _clear(root / relative)
        # An absolute target outside the spec: a file of the test's own, in the work directory beside the spec.
        (root / relative).symlink_to(str(root.parent / "secret") if target == "<outside>" else target)

    return make


def _fifo(root: Path, relative: str) -> None:
    _clear(root / relative)
    os.mkfifo(root / relative)


def _socket(root: Path, relative: str) -> None:
    _clear(root / relative)
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(root / relative))


def _directory(root: Path, relative: str) -> None:
    _clear(root / relative)
    (root / relative).mkdir()


def _remove(root: Path, relative: str) -> None:
    _clear(root / relative)


def _garbage(root: Path, relative: str) -> None:
    put(root / relative, bytes(range(256)))


FILE_EDITS: tuple[Callable[[Path, str], None], ...] = (
    _symlink("<outside>"),
    _symlink("../mesh.yaml"),
    _symlink("nowhere.yaml"),
    _symlink("loop.yaml"),
    _fifo,
    _socket,
    _directory,
    _remove,
    _garbage,
)
NEW_NAMES = (
    "c.yaml",
    "new\nline.yaml",
    "tab\there.yaml",
    "x.yml",
    "README",
    "..yaml",
    "loop.yaml",
    "é.yaml",
    "-.yaml",
    "a" * 200 + ".yaml",
)


def file_mutation(root: Path, rng: random.Random) -> None:
    """Edit the spec tree on disk: files removed, renamed, added, replaced by links, FIFOs or directories."""
    try:
        _file_mutation(root, rng)
    # an edit that does not apply to what an earlier edit left (a directory to unlink…): skip it
    except OSError:
        pass


def _file_mutation(root: Path, rng: random.Random) -> None:
    roll = rng.random()
    services = root / "services"
    names = sorted(p.name for p in services.iterdir()) if services.is_dir() else []
    if roll < 0.06:
        _clear(services)
    elif roll < 0.1:
        put(services, b"service: a\n")
    elif roll < 0.14:
        rng.choice(FILE_EDITS)(root, "mesh.yaml")
    elif roll < 0.3 and names:
        source, target = services / rng.choice(names), services / rng.choice(NEW_NAMES)
        if source != target:
            _clear(target)
            os.rename(source, target)
    elif roll < 0.45:
        put(services / rng.choice(NEW_NAMES), yaml_mutation(BASE["services/b.yaml"].encode(), rng))
    else:
        rng.choice(FILE_EDITS)(root, f"services/{rng.choice([*names, *NEW_NAMES])}")


# ---------------------------------------------------------------- the checks


@dataclass(frozen=True, kw_only=True, slots=True)
class Outcome:
    """How one mutant fared: valid, or the stderr a user would read."""

    valid: bool
    stderr: str


def assert_one_line_each(stderr: str, context: str) -> None:
    """Every line a diagnostic `file:line:col: error: …  [code]`, then the summary: nothing else."""
    lines = stderr.rstrip("\n").split("\n")
    assert SUMMARY.match(lines[-1]), f"{context}: no summary line:\n{stderr}"
    for line in lines[:-1]:
        assert LINE.match(line), f"{context}: not a one-line diagnostic: {line!r}"
    assert len(set(lines)) == len(lines), f"{context}: a diagnostic printed twice:\n{stderr}"


def run_in_memory(files: dict[str, bytes], context: str, compile_it: bool) -> Outcome:
    """The library on a file tree, formatted by the CLI's formatter; any exception but SpecError is a bug."""
    try:
        (compile if compile_it else validate_only)(files, "spec")
    except SpecError as error:
        assert error.diagnostics, context
        for diagnostic in error.diagnostics:
            relative = diagnostic.span.file.removeprefix("spec/")
            assert relative in files or relative in ("mesh.yaml", "services"), (
                f"{context}: {diagnostic.format()}"
            )
            raw = files.get(relative)
            if isinstance(raw, bytes):  # never past the end of the file
                assert diagnostic.span.line <= len(BREAKS.findall(raw)) + 1, (
                    f"{context}: {diagnostic.format()}"
                )
        return Outcome(valid=False, stderr=format_all(error.diagnostics))
    return Outcome(valid=True, stderr="")


def run_cli(root: Path, context: str) -> Outcome:
    """`meshc validate DIR` in-process, as the console script runs it; exit 3 is an internal error."""
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = cli.main(["validate", str(root)])
    assert code in (0, 2), f"{context}: exit {code}\n{err.getvalue()}"
    assert "internal error" not in err.getvalue() and "Traceback" not in err.getvalue(), context
    return Outcome(valid=code == 0, stderr=err.getvalue())


def fuzz_in_memory(seed: int, count: int) -> tuple[int, int]:
    rng = random.Random(seed)
    example = {k: v for k, v in spec_files(EXAMPLE).items() if isinstance(v, bytes)}
    small = {name: text.encode() for name, text in BASE.items()}
    valid = failed = 0
    for index in range(count):
        base = example if index % 3 == 0 else small  # the example for breadth, the small spec for speed
        files = mutate(base, rng)
        outcome = run_in_memory(files, f"seed {seed} mutant {index}", compile_it=False)
        if outcome.valid:
            valid += 1
            if valid % COMPILE_EVERY == 0:
                run_in_memory(files, f"seed {seed} mutant {index} (compile)", compile_it=True)
        else:
            failed += 1
            assert_one_line_each(outcome.stderr, f"seed {seed} mutant {index}")
    return valid, failed


def fuzz_on_disk(seed: int, count: int, workdir: Path) -> tuple[int, int]:
    rng = random.Random(seed)
    valid = failed = 0
    secret = workdir / "secret"
    secret.write_text("never-echoed: this must not appear in any diagnostic\n")
    for index in range(count):
        root = workdir / f"m{index}"
        for relative, text in BASE.items():
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            put(root / relative, text.encode())
        for _ in range(rng.randint(1, 2)):
            file_mutation(root, rng)
        outcome = run_cli(root, f"seed {seed} disk mutant {index}")
        assert "never-echoed" not in outcome.stderr
        if outcome.valid:
            valid += 1
        else:
            failed += 1
            assert_one_line_each(outcome.stderr, f"seed {seed} disk mutant {index}")
        shutil.rmtree(root)
    # nothing wrote through a link
    assert secret.read_text() == "never-echoed: this must not appear in any diagnostic\n"
    return valid, failed


@pytest.mark.parametrize("shard", range(SHARDS))
def test_mutated_specs_fail_with_one_line_diagnostics(shard: int) -> None:
    per_shard = SPECS // SHARDS
    valid, failed = fuzz_in_memory(1000 + shard, per_shard * 17 // 20)
    assert failed > valid, "the mutations should mostly break the spec; otherwise this test tests little"
    assert valid > per_shard // 40, "some mutants should stay valid, so later stages run too"


@pytest.mark.parametrize("shard", range(SHARDS))
def test_mutated_spec_trees_fail_with_one_line_diagnostics(shard: int, tmp_path: Path) -> None:
    per_shard = SPECS // SHARDS
    valid, failed = fuzz_on_disk(2000 + shard, per_shard - per_shard * 17 // 20, tmp_path)
    assert failed > valid * 3
