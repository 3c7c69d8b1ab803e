"""The rollout build stages: a git history of three edits, rollout.yaml pinning three waves to them, one build."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

from benchmarks.harness import GIT, Stage, State, run_meshc, scratch_dir

# A rollout: the synthetic spec with a wave per datacenter group, committed three times (one app
# port edited each time); rollout.yaml pins three waves to those three distinct revisions, and the
# first wave runs a fourth (the working tree). Measured against meshc-build of the same spec.
ROLLOUT_POLICY = """
rollout:
  waves:
    - {name: w0, match: {datacenters: [dc-00]}}
    - {name: w1, match: {datacenters: [dc-01, dc-02]}}
    - {name: w2, match: {datacenters: [dc-03, dc-04]}}
    - {name: w3}
"""


def _rollout_setup(state: State) -> None:
    """Not part of the rollout build: a git history of three edits and a rollout.yaml pinning three waves to them."""
    repo = scratch_dir() / "rollout-repo"
    shutil.rmtree(repo, ignore_errors=True)
    shutil.copytree(state["dir"], repo / "mesh-spec")
    (repo / "mesh-spec/mesh.yaml").write_text((repo / "mesh-spec/mesh.yaml").read_text() + ROLLOUT_POLICY)
    subprocess.run(GIT + ["init", "-q"], cwd=repo, check=True)
    services = sorted((repo / "mesh-spec/services").glob("*.yaml"))
    revisions = []
    for step, service in enumerate(services[:4]):
        if step:
            text = service.read_text()
            assert "\nport: 8080\n" in text, f"{service.name}: no `port: 8080` to edit"
            service.write_text(text.replace("\nport: 8080\n", "\nport: 8081\n", 1))
        if step < 3:
            for command in (["add", "-A"], ["commit", "-q", "-m", f"revision {step}"]):
                subprocess.run(GIT + command, cwd=repo, check=True)
            revisions.append(
                subprocess.run(
                    GIT + ["rev-parse", "HEAD"], cwd=repo, check=True, capture_output=True, text=True
                ).stdout.strip()
            )
    pins = {"w1": revisions[2], "w2": revisions[1], "w3": revisions[0]}
    (repo / "mesh-spec/rollout.yaml").write_text(_rollout_file(pins))
    # committed with the fourth edit, so a diff's base has the rollout too (the working tree is that commit)
    for command in (["add", "-A"], ["commit", "-q", "-m", "rollout"]):
        subprocess.run(GIT + command, cwd=repo, check=True)
    state["rollout_spec"] = repo / "mesh-spec"
    state["rollout_pins"] = pins
    os.sync()  # the build syncs before its swap: it must pay for its own writes, not for these commits


def _rollout_file(pins: dict[str, str]) -> str:
    return "hold: false\npins:\n" + "".join(f"  {wave}: {revision}\n" for wave, revision in pins.items())


def _promotion_setup(state: State) -> None:
    """Not part of the diff: the promotion pull request, w2 moved to w1's revision in the working tree."""
    pins = {**state["rollout_pins"], "w2": state["rollout_pins"]["w1"]}
    (state["rollout_spec"] / "rollout.yaml").write_text(_rollout_file(pins))


def _rollout_plan(state: State) -> None:
    """`meshc plan`: the rollout built as it stands and as the next promotion leaves it, every state checked."""
    run_meshc(["plan", str(state["rollout_spec"])], "every state while")


def _rollout_diff(state: State) -> None:
    """`meshc diff --base HEAD` of the promotion: the spec diff, and both sides' rollouts built and compared."""
    spec = str(state["rollout_spec"])
    run_meshc(["diff", "--base", "HEAD", "--spec", spec, "--format", "markdown"], "its wave moves")


def _rollout_build(state: State) -> None:
    """`meshc build` of the rollout: four distinct revisions (three pinned, the working tree) into a fresh directory."""
    from compiler.incremental import build_output as build  # meshc build: incremental, from a fresh directory

    out = scratch_dir() / "rollout-out"
    shutil.rmtree(out, ignore_errors=True)
    result = build(state["rollout_spec"], out)
    assert result.changed and (out / "MANIFEST.json").exists()


def _rebuild_setup(state: State) -> None:
    """Not part of the rebuild: the rollout built (twice: the second records every target's input hash over a
    settled tree), then a dependency timeout of one service edited in the working tree (the first wave's
    revision)."""
    from compiler.incremental import build_output as build

    out = scratch_dir() / "rollout-rebuilt"
    shutil.rmtree(out, ignore_errors=True)
    build(state["rollout_spec"], out)
    build(state["rollout_spec"], out)
    # a service placed in dc-00 (the first wave, w0, runs the working tree), after a dependency without settings of
    # its own (the next line starts another): a timeout is new there
    for service in sorted((state["rollout_spec"] / "services").glob("*.yaml")):
        text = service.read_text()
        edited = re.sub(r"(\n  - service: [^\n]+\n)(?=  - )", r"\1    timeout: 30s\n", text, count=1)
        if "dc-00" in text and edited != text:
            service.write_text(edited)
            break
    else:
        raise SystemExit("no service in dc-00 with a dependency to edit")
    state["rollout_out"] = out


def _rollout_rebuild(state: State) -> None:
    """`meshc build` of the rollout after a working-tree edit: only the first wave's targets render again."""
    from compiler.incremental import build_output as build

    assert build(state["rollout_spec"], state["rollout_out"]).changed


ROLLOUT_STAGES: tuple[Stage, ...] = (
    Stage(
        name="rollout-setup",
        description="(setup, not timed as a build) git history of 3 edits, rollout.yaml pinning 3 waves to them",
        run=_rollout_setup,
        requires=(),
    ),
    Stage(
        name="rollout-build",
        description="meshc build with a rollout: 3 pinned revisions + the working tree (goal <= 1.5x meshc-build)",
        run=_rollout_build,
        requires=("rollout-setup",),
    ),
    Stage(
        name="rollout-rebuild-setup",
        description="(setup) the rollout built into an output twice, then one service's dependency timeout edited",
        run=_rebuild_setup,
        requires=("rollout-setup",),
    ),
    Stage(
        name="rollout-rebuild",
        description="meshc build of the rollout after that edit: the pinned waves' targets keep their files",
        run=_rollout_rebuild,
        requires=("rollout-setup", "rollout-rebuild-setup"),
    ),
    Stage(
        name="rollout-plan",
        description="meshc plan: the rollout and its next promotion built, every state checked",
        run=_rollout_plan,
        requires=("rollout-setup",),
    ),
    Stage(
        name="promotion-setup",
        description="(setup, not timed as diff) the promotion pull request: w2 moved to w1's pin, uncommitted",
        run=_promotion_setup,
        requires=("rollout-setup",),
    ),
    Stage(
        name="rollout-diff",
        description="meshc diff --base HEAD of the promotion: spec diff + both sides' rollouts",
        run=_rollout_diff,
        requires=("rollout-setup", "promotion-setup"),
    ),
)
