"""`meshc diff` renders only the targets whose inputs differ: after random edits of a synthetic spec its diff is
the one made of both whole builds (`diff_builds`), spec files, restart classes, call graph and deletions included.

`MESHC_FUZZ_STEPS` (default 10) and `MESHC_FUZZ_SEEDS` (default "3,4") make the fuzz run longer.
"""

from __future__ import annotations

import hashlib
import os
import random
from dataclasses import replace
from pathlib import Path

import pytest
from test_incremental import EDITS, Spec

from benchmarks.synth import generate
from compiler.diagnostics import SpecError
from compiler.diff import revisions
from compiler.diff.files import OutputFile
from compiler.diff.records import ADDED, CHANGED, REMOVED, MeshDiff
from compiler.diff.revisions import diff_builds, diff_specs
from compiler.diff.targets import compiled, diff_files
from compiler.pipeline import Build, compile
from compiler.spec.load import SpecFiles, spec_files

STEPS = int(os.environ.get("MESHC_FUZZ_STEPS", "10"))
SEEDS = [int(seed) for seed in os.environ.get("MESHC_FUZZ_SEEDS", "3,4").split(",")]
LABEL = "spec"


Builds = dict[tuple[tuple[str, object], ...], Build]


def whole_build(files: SpecFiles, builds: Builds) -> Build:
    """`compile(files)`, once per distinct spec in `builds`: a build is a frozen record, and the fuzz diffs
    each spec up to three times (as the head, then as the previous step, and the first state throughout)."""
    key = tuple(sorted(files.items()))
    if key not in builds:
        builds[key] = compile(files, LABEL)
    return builds[key]


def both_builds_diff(
    base_files: SpecFiles | None, head_files: SpecFiles, builds: Builds | None = None
) -> MeshDiff:
    """The diff as meshc made it before: both revisions compiled whole, every target's files diffed."""
    builds = {} if builds is None else builds
    new = whole_build(head_files, builds)
    if base_files is None:
        notes = ("there is no spec at base; the diff treats the base as empty, so every target is new",)
        return diff_builds(None, new, base="base", head="head", notes=notes)
    old = whole_build(base_files, builds)
    result = diff_builds(old, new, base="base", head="head")
    return replace(
        result, reformatted=revisions._reformatted(base_files, head_files, compiled(old), compiled(new))
    )


def changed_only_diff(base_files: SpecFiles | None, head_files: SpecFiles) -> MeshDiff:
    return diff_specs(base_files, head_files, base="base", head="head", label=LABEL)


def reformat(spec: Spec) -> list[str | None]:
    """Rewrite one service file with the same data in other bytes (a comment): a reformat, no change."""
    name = spec.pick()
    path = spec.root / "services" / f"{name}.yaml"
    path.write_bytes(b"# reformatted\n" + path.read_bytes())
    return []


@pytest.mark.parametrize("seed", SEEDS)
def test_the_changed_targets_diff_is_the_both_builds_diff(
    tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(revisions, "CHUNK", 5)  # the backends run a few targets at a time, as on a big mesh
    rng = random.Random(seed)
    root = generate(tmp_path / "spec", 12, datacenters=3, clusters=4, deps=3, seed=seed)
    spec = Spec(root, rng)
    first = previous = dict(spec_files(root))
    builds: Builds = {}
    assert changed_only_diff(None, previous) == both_builds_diff(None, previous, builds)
    compared = changed = 0
    for _ in range(STEPS):
        edit = rng.choice([*EDITS, reformat])
        for name in edit(spec):
            spec.write(name)
        head = dict(spec_files(root))
        try:
            expected = both_builds_diff(previous, head, builds)
        except SpecError:  # an edit the spec rejects: the diff refuses the head too
            with pytest.raises(SpecError):
                changed_only_diff(previous, head)
            restore(root, previous)
            spec = Spec(root, rng)
            spec.added += 100 + compared
            continue
        assert changed_only_diff(previous, head) == expected, f"seed {seed}: after {edit.__name__}"
        assert changed_only_diff(first, head) == both_builds_diff(first, head, builds), (
            f"seed {seed}: from the start"
        )
        compared += 1
        changed += bool(expected.targets)
        previous = head
    assert compared >= STEPS // 2, "most edits must be valid, or the test compares little"
    assert changed >= 2, "the edits changed too few targets to test the diff"


def restore(root: Path, files: SpecFiles) -> None:
    for path in (root / "services").iterdir():
        path.unlink()
    for name, data in files.items():
        assert isinstance(data, bytes)
        (root / name).write_bytes(data)


def test_a_one_service_edit_renders_only_the_targets_it_reaches(tmp_path: Path) -> None:
    root = generate(tmp_path / "spec", 40, datacenters=3, clusters=4, deps=2, seed=7)
    spec = Spec(root, random.Random(7))
    base = dict(spec_files(root))
    name = spec.pick()
    spec.services[name]["port"] = spec.services[name]["port"] + 1
    spec.write(name)
    head = dict(spec_files(root))
    base_model, head_model = revisions._lowered(base, LABEL), revisions._lowered(head, LABEL)
    changed = revisions._changed_targets(base_model, base, head_model, head, LABEL)
    reached = {name, *(d.service for d in head_model[0].services[name].dependencies)} | {
        other
        for other, found in head_model[0].services.items()
        if name in {d.service for d in found.dependencies}
    }
    owners = {w.id: w.service for w in head_model[1].workloads}
    assert changed, "a port edit changes its own targets"
    # a target is a workload, or an external reader `k8s/<cluster>/<namespace>/<service>`
    assert all((owners.get(target) or target.rsplit("/", 1)[-1]) in reached for target in changed)
    assert len(changed) < len(owners) / 2, "most targets are untouched, so not rendered"
    assert changed_only_diff(base, head) == both_builds_diff(base, head)


def _file(path: str, target: str | None, value: dict[str, int]) -> OutputFile:
    return OutputFile(
        path=path, target=target, digest=hashlib.sha256(repr(value).encode()).digest(), value=value
    )


def test_streamed_files_pair_by_path_whatever_their_order() -> None:
    old = [_file("a.json", "t1", {"x": 1}), _file("b.json", "t1", {"y": 1}), _file("c.json", None, {"z": 1})]
    old.append(_file("m.json", "t1", {"k": 1}))
    new = [_file("m.json", "t2", {"k": 1}), _file("c.json", None, {"z": 2}), _file("b.json", "t1", {"y": 1})]
    new.append(_file("d.json", "t2", {"w": 1}))
    found = diff_files(iter(old), iter(new))
    statuses = {t: [(d.name, d.status) for d in diffs] for t, diffs in found.by_target.items()}
    # a file that moves to another target leaves one and joins the other; an equal file is no change
    assert statuses == {
        "t1": [("a.json", REMOVED), ("m.json", REMOVED)],
        "t2": [("d.json", ADDED), ("m.json", ADDED)],
        None: [("c.json", CHANGED)],
    }
    assert [c.path for c in found.by_target[None][0].changes] == ["z"]
    assert found.old_targets == {"t1", None} and found.new_targets == {"t1", "t2", None}
