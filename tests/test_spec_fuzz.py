"""Mutated specs never crash the compiler: each one compiles or fails with positioned diagnostics."""

from __future__ import annotations

import random

import pytest

from compiler.diagnostics import SpecError
from compiler.pipeline import compile, spec_files
from tests.conftest import EXAMPLE

# Values chosen to hit every layer: YAML traps, wrong types, out-of-range ports, references to
# nothing, duplicate placements, clashing ports, localities that strand clients.
VALUES = ("0", "-1", "70000", "''", "null", "[]", "{}", "yes", "no", "1.5", "x" * 70, "UPPER", "a b", "'%{x}'", "7102",
          "18080", "9901", "[sjc, sjc]", "[nowhere]", "{cluster: kube-sjc-a}", "[{service: upload}]", "0ms", "99999999s",
          "local", "global", "tcp", "grpc", "[{cluster: kube-sjc-a, namespace: x}, {cluster: kube-sjc-a}]", "'no'", "~",
          "!!str x", "&a x", "*a")


def mutate(files: dict[str, bytes], rng: random.Random) -> dict[str, bytes]:
    """One to three random edits: a line dropped, a value replaced, a line duplicated, a service file removed."""
    files = dict(files)
    for _ in range(rng.randint(1, 3)):
        name = rng.choice(sorted(files))
        lines = files[name].decode().split("\n")
        at, roll = rng.randrange(len(lines)), rng.random()
        if roll < 0.2:
            del lines[at]
        elif roll < 0.7 and ":" in lines[at]:
            lines[at] = f"{lines[at].split(':', 1)[0]}: {rng.choice(VALUES)}"
        elif roll < 0.85:
            lines.insert(at, lines[rng.randrange(len(lines))])
        elif name != "mesh.yaml":
            del files[name]
            continue
        files[name] = "\n".join(lines).encode()
    return files


@pytest.mark.parametrize("seed", range(4))
def test_mutated_specs_compile_or_fail_with_positions(seed: int) -> None:
    rng = random.Random(seed)
    base = spec_files(EXAMPLE)
    failures = 0
    for _ in range(60):
        files = mutate(base, rng)
        try:
            compile(files, "mesh-spec")
        except SpecError as error:
            failures += 1
            assert error.diagnostics
            for diagnostic in error.diagnostics:
                assert diagnostic.span.file.removeprefix("mesh-spec/") in files, diagnostic.format()
                assert diagnostic.span.line >= 1 and diagnostic.span.col >= 1, diagnostic.format()
    assert failures > 30, "the mutations should mostly break the spec; otherwise this test tests little"
