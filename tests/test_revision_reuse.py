"""A rollout's revisions share all but a few spec files, and one command checks and lowers each file's neighbourhood
once (compiler.rollout.compiled.check_documents, compiler.ir.lower.Reuse). Along random edits, valid or not, what is
reused gives exactly what checking and lowering from scratch give: the same findings, the same IR."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import yaml

from benchmarks.synth import generate
from compiler.diagnostics import SpecError
from compiler.ir.lower import Reuse, lower
from compiler.rollout.compiled import RevisionCache, check_documents
from compiler.spec.checks import check
from compiler.spec.load import load_documents, spec_files
from compiler.targets import file_hashes

LABEL = "spec"


def _edit(spec_dir: Path, rng: random.Random, step: int) -> tuple[Path, str]:
    """One random edit: a port, a placement, a protocol, a dependency added or dropped, a mesh default. The file
    and its text before."""
    move = rng.choice(["port", "placement", "protocol", "add", "drop", "mesh"])
    if move == "mesh":
        mesh = spec_dir / "mesh.yaml"
        text = mesh.read_text()
        mesh.write_text(text.replace("connect_timeout: ", f"connect_timeout: {step}", 1))
        return mesh, text
    path = rng.choice(sorted((spec_dir / "services").glob("*.yaml")))
    text = path.read_text()
    data = yaml.safe_load(text)
    others = sorted(p.stem for p in (spec_dir / "services").glob("*.yaml") if p != path)
    if move == "port":
        data["local_port"] = rng.choice(
            [data["local_port"] + 100, 20001]
        )  # 20001: maybe another's (an error)
    elif move == "placement":
        vm = data["deploy"].setdefault("vm", {}).setdefault("datacenters", [])
        if len(vm) > 1:
            vm.pop()
        else:
            data["deploy"].setdefault("kubernetes", []).clear()
    elif move == "protocol":
        data["protocol"] = rng.choice(["http", "http2", "grpc", "tcp"])
    elif move == "add":
        data.setdefault("dependencies", []).append({"service": rng.choice([*others, "no-such-service"])})
    elif data.get("dependencies"):
        data["dependencies"].pop(rng.randrange(len(data["dependencies"])))
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path, text


@pytest.mark.parametrize("seed", [3, 4])
def test_checks_and_lowering_reused_across_specs_equal_from_scratch(tmp_path: Path, seed: int) -> None:
    spec_dir = generate(tmp_path / "spec", 24, datacenters=3, clusters=3, deps=3, seed=11)
    rng = random.Random(seed)
    cache = RevisionCache()
    outcomes = {"valid": 0, "invalid": 0}
    reused = lowered = 0
    piled: list[tuple[Path, str]] = []  # invalid edits left in place, undone after a few
    for step in range(50):
        edited, before = _edit(spec_dir, rng, step)
        files = spec_files(spec_dir)
        digests = file_hashes(files, LABEL)
        try:
            expected: object = check(load_documents(files, LABEL))
        except SpecError as error:
            expected = str(error)
        documents = load_documents(files, LABEL)
        try:
            spec = check_documents(documents, digests, cache)
        except SpecError as error:
            assert str(error) == expected, f"step {step}: other findings than a check from scratch"
            outcomes["invalid"] += 1
            if rng.random() < 0.85:
                edited.write_text(before)  # mostly back to where it was, sometimes errors pile up for a while
            else:
                piled.append((edited, before))
            if len(piled) > 2:
                for path, text in reversed(piled):
                    path.write_text(text)
                piled.clear()
            continue
        piled.clear()
        assert spec == expected, f"step {step}: a reused check passed where one from scratch did not"
        cached = len(cache.lowered)
        mesh = lower(spec, reuse=Reuse(digests=digests, workloads=cache.lowered))
        assert mesh == lower(spec), f"step {step}: a reused lowering differs from a fresh one"
        if outcomes["valid"]:
            lowered += len(cache.lowered) - cached
            reused += len(spec.services) - (len(cache.lowered) - cached)
        outcomes["valid"] += 1
    assert outcomes["valid"] >= 5 and outcomes["invalid"] >= 3, outcomes
    assert reused > lowered > 0, (reused, lowered)  # reuse is the common path


def test_a_target_rendered_for_one_rollout_is_not_rendered_again_for_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`meshc plan` and `meshc diff` build two rollouts (compiler.rollout.renderings.render_revision keeps each widened
    revision's renderings target by target): a second, wider request renders only what the first lacked, and gives
    what a cache of its own gives."""
    from compiler.rollout import renderings
    from compiler.rollout.build import rollout_state_of
    from compiler.rollout.renderings import render_revision
    from compiler.rollout.revisions import rollout_context
    from tests.test_rollout_build import add_timeout_change, start_rollout

    repo, spec, _ = start_rollout(tmp_path / "repo")
    add_timeout_change(repo)
    context = rollout_context(spec)
    assert context is not None
    state = rollout_state_of(context)
    revision = state.revisions[-1].revision  # the pinned base: the last waves'
    own = frozenset(
        t for t, p in state.placements.items() if p.revision == revision and p.workload is not None
    )
    first = frozenset(sorted(own)[: len(own) // 2])
    rendered: list[str] = []
    original = renderings.render

    def counted(mesh: object, only: frozenset[str] | None = None) -> object:
        rendered.extend(sorted(only or ()))
        return original(mesh, only)  # type: ignore[arg-type]

    monkeypatch.setattr(renderings, "render", counted)
    render_revision(context, revision, state, first)
    rendered.clear()
    again, files = render_revision(context, revision, state, own)
    assert set(rendered) == own - first and len(rendered) == len(own - first)
    alone = rollout_context(spec)  # a cache of its own
    assert alone is not None
    fresh, fresh_files = render_revision(alone, revision, rollout_state_of(alone), own)
    assert again.prints == fresh.prints and again.canaries.keys() == fresh.canaries.keys()
    assert sorted((f.path, f.digest, f.target) for f in files) == sorted(
        (f.path, f.digest, f.target) for f in fresh_files
    )
