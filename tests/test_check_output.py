"""`meshc check`: the committed output/ is exactly what the spec renders, else stale/missing/extra/hand-edited."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from compiler.cli import main
from tests.conftest import EXAMPLE, ROOT

DETAIL = "      "  # what a stale or hand-edited file changed, under its line


def check(capsys: pytest.CaptureFixture[str], spec: Path, out: Path) -> tuple[int, str]:
    code = main(["check", str(spec), "-o", str(out)])
    captured = capsys.readouterr()
    assert captured.err == "", captured.err  # the report is the result: stdout, like diff's
    return code, captured.out


def test_the_projects_own_output_is_up_to_date(capsys: pytest.CaptureFixture[str]) -> None:
    """output/ is committed; a spec or compiler change without `make build` fails here (the fix: rebuild, commit)."""
    code, text = check(capsys, ROOT / "mesh-spec", ROOT / "output")
    assert code == 0, text


@pytest.fixture
def built(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, Path]:
    """A copy of the example spec and a fresh build of it."""
    spec, out = tmp_path / "spec", tmp_path / "output"
    shutil.copytree(EXAMPLE, spec)
    assert main(["build", str(spec), "-o", str(out)]) == 0
    capsys.readouterr()
    return spec, out


def _a_file(out: Path) -> Path:
    return next(p for p in sorted(out.rglob("*.yaml")) if p.is_file())


def test_fresh_build_is_clean(built: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    spec, out = built
    assert check(capsys, spec, out) == (0, f"{out}: up to date with {spec}\n")


def test_hand_edited_missing_and_extra_files(
    built: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    spec, out = built
    edited, gone = sorted(p for p in out.rglob("*.yaml") if p.is_file())[:2]
    edited.write_text(edited.read_text() + "# tweak\n")
    gone.unlink()
    (out / "stray.txt").write_text("x\n")
    code, text = check(capsys, spec, out)
    assert code == 1
    lines = text.splitlines()
    assert (
        lines[0] == f"{out}: not what the spec renders (1 missing, 1 extra, 1 hand-edited); "
        "run `meshc build` and commit the result"
    )
    assert sorted(line for line in lines[1:] if not line.startswith(DETAIL)) == sorted(
        [
            f"  hand-edited  {out.as_posix()}/{edited.relative_to(out).as_posix()}",
            f"  missing      {out.as_posix()}/{gone.relative_to(out).as_posix()}",
            f"  extra        {out.as_posix()}/stray.txt",
        ]
    )


def test_spec_change_without_rebuild_is_stale(
    built: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    spec, out = built
    upload = spec / "services/upload.yaml"
    upload.write_text(upload.read_text().replace("timeout: 2s", "timeout: 3s", 1))
    code, text = check(capsys, spec, out)
    assert code == 1
    details = [line for line in text.splitlines()[1:] if line.startswith(DETAIL)]
    lines = [line for line in text.splitlines()[1:] if not line.startswith(DETAIL)]
    assert lines and all(line.startswith("  stale ") for line in lines)
    # on disk → rendered, as diff: old → new
    assert any(line.endswith("route.timeout: 2s → 3s") for line in details), details
    stale = [line.split()[-1] for line in lines]
    # only upload's files; the manifest follows the files
    assert all("/upload" in path for path in stale), stale
    assert f"({len(stale)} stale)" in text.splitlines()[0]


def test_committed_output_is_what_the_build_writes() -> None:
    """CI runs `make build` before the tests, which would hide a stale committed output/: git must see no change."""
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout")
    if not (os.environ.get("CI") or os.environ.get("MESHC_REQUIRE_TOOLS")):
        pytest.skip("enforced in CI; locally, rebuild and commit output/ before pushing")
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all", "--", "output"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert status.stdout == "", (
        f"`make build` changed the committed output/; rebuild and commit it:\n{status.stdout}"
    )


def test_a_hand_edit_is_shown_as_data(built: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """Not just which file: what a rebuild would change, from what is on disk to the rendering (old → new, as diff)."""
    spec, out = built
    service = out / "kubernetes/kube-sjc-a/upload/upload.yaml"
    service.write_text(service.read_text().replace("port: 18080", "port: 18081", 1))
    code, text = check(capsys, spec, out)
    assert code == 1
    lines = text.splitlines()
    at = lines.index(f"  hand-edited  {out.as_posix()}/kubernetes/kube-sjc-a/upload/upload.yaml")
    assert lines[at + 1] == "      ~ [Service/upload/upload].spec.ports[mesh].port: 18081 → 18080"


def test_a_comment_only_edit_says_so(built: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    spec, out = built
    service = out / "kubernetes/kube-sjc-a/upload/upload.yaml"
    service.write_text(service.read_text() + "# tweak\n")
    _, text = check(capsys, spec, out)
    assert "      (same data; only formatting or comments differ)" in text.splitlines()
