"""The example CI workflow and the pre-commit hooks run real meshc commands that parse and work."""

from __future__ import annotations

import re
import shlex

import pytest
import yaml

from compiler.cli import _parser, main
from tests.conftest import ROOT

WORKFLOW = ROOT / "examples/ci/github-workflow.yaml"
HOOKS = ROOT / ".pre-commit-hooks.yaml"
# Every file validate and build read: a bad pin in rollout.yaml or a duplicate host in the inventory breaks them too.
SPEC_FILES = (
    "mesh-spec/mesh.yaml",
    "mesh.yaml",
    "mesh-spec/services/upload.yaml",
    "mesh-spec/rollout.yaml",
    "mesh-spec/inventory/hosts.yaml",
)
UNRELATED_FILES = (
    "README.md",
    "docs/rollout.yaml.md",
    "mesh-spec/inventory/README.md",
    "mesh-spec/notes.yaml",
)


def meshc_commands(script: str) -> list[list[str]]:
    """Every `meshc …` command in a shell script, as argv after `meshc`, with $VARS filled by a placeholder."""
    commands = []
    for line in script.replace("\\\n", " ").splitlines():
        words = shlex.split(line.replace("$BASE_REF", "main"), comments=True)
        if words[:1] == ["meshc"]:
            commands.append([w for w in words[1:] if w not in (">",) and not w.endswith((".md", ".json"))])
    return commands


def test_workflow_validates_diffs_and_checks() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    assert set(workflow.get("on", workflow.get(True))) == {
        "pull_request",
        "push",
    }  # YAML 1.1 reads a bare `on` as true
    steps = workflow["jobs"]["mesh"]["steps"]
    assert all(("run" in s) != ("uses" in s) for s in steps)
    checkout = next(s for s in steps if s.get("uses", "").startswith("actions/checkout"))
    assert checkout["with"]["fetch-depth"] == 0  # the base revision must be in the clone
    commands = [c for s in steps if "run" in s for c in meshc_commands(s["run"])]
    assert [c[0] for c in commands] == ["validate", "diff", "diff", "diff", "check"]
    assert {c[c.index("--format") + 1] for c in commands if c[0] == "diff"} == {"markdown", "json", "text"}
    for command in commands:
        _parser(command).parse_args(command)  # argparse exits on anything meshc would reject
    # refs reach scripts via env only
    assert not re.search(r"run:.*\$\{\{\s*github\.(base_ref|head_ref)", WORKFLOW.read_text())


def test_pre_commit_hooks_run_meshc_on_the_whole_spec(capsys: pytest.CaptureFixture[str]) -> None:
    hooks = {hook["id"]: hook for hook in yaml.safe_load(HOOKS.read_text())}
    assert set(hooks) == {"meshc-validate", "meshc-check"}
    for hook in hooks.values():
        assert hook["language"] == "python" and hook["pass_filenames"] is False
        pattern = re.compile(hook["files"])
        for read in SPEC_FILES:
            assert pattern.search(read), f"{hook['id']} does not run when {read} changes"
        for unrelated in UNRELATED_FILES:
            assert not pattern.search(unrelated), f"{hook['id']} runs when {unrelated} changes"
        argv = shlex.split(hook["entry"])[1:] + hook["args"]
        _parser(argv).parse_args(argv)
    validate = shlex.split(hooks["meshc-validate"]["entry"])[1:] + [str(ROOT / "mesh-spec")]
    assert main(validate) == 0
    assert "ok," in capsys.readouterr().out
