"""Types and style are enforced: mypy, `ruff check` and `ruff format --check` run clean over the repository.

The tools are the versions pinned in pyproject.toml's test extras, run from this interpreter's environment
(`python -m`), so the suite never depends on whatever ruff or mypy is on PATH; a missing one fails the
test, it never skips. Their configuration is pyproject.toml's ([tool.ruff], [tool.mypy]).
"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import tomllib

import pytest

from tests.conftest import ROOT


def run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m <tool> ...` at the repository root, capturing its report."""
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )


def report(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n{result.stdout}{result.stderr}"


def test_ruff_lint_is_clean() -> None:
    result = run_tool("ruff", "check", "--no-cache", "--output-format", "concise", ".")
    assert result.returncode == 0, report(result)


def test_ruff_format_is_clean() -> None:
    result = run_tool("ruff", "format", "--no-cache", "--check", ".")
    assert result.returncode == 0, report(result)


def test_ruff_reads_every_module_and_test() -> None:
    """An exclude pattern without its `./` matches a directory of that name anywhere: "output" once left
    compiler/output/ unlinted and unformatted, and the two tests above passed over it."""
    result = run_tool("ruff", "check", "--no-cache", "--show-files", ".")
    assert result.returncode == 0, report(result)
    read = {line.strip() for line in result.stdout.splitlines()}
    ours = {
        str(path)
        for pattern in ("compiler/**/*.py", "tests/*.py", "benchmarks/*.py")
        for path in ROOT.glob(pattern)
    }
    assert ours - read == set(), sorted(ours - read)[:10]


def test_mypy_is_clean() -> None:
    result = run_tool("mypy")  # files, strictness and cache: [tool.mypy] in pyproject.toml
    assert result.returncode == 0 and result.stdout.startswith("Success: no issues found"), report(result)


@pytest.mark.parametrize("tool", ["ruff", "mypy"])
def test_the_tools_are_the_pinned_versions(tool: str) -> None:
    """A stale venv would lint with other rules: `make build` reinstalls when pyproject.toml changes."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"]
    pins = {m[1].lower(): m[2] for m in (re.fullmatch(r"([\w.-]+)==(\S+)", spec) for spec in extras) if m}
    assert importlib.metadata.version(tool) == pins[tool]
