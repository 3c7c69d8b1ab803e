"""The incremental rollout build: after random sequences of spec edits, commits, pin moves, checkouts of older
commits, holds, inventory edits, hand edits of the output and lost caches, `meshc build` leaves exactly the tree
a clean rollout build renders, or fails as it does and leaves the output as it was.

`MESHC_FUZZ_STEPS` (default 10) and `MESHC_FUZZ_SEEDS` (default "1,2") make the fuzz run longer.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import settled

from compiler import incremental
from compiler.diagnostics import SpecError
from compiler.output import cache
from compiler.output.disk import read_tree
from compiler.output.writer import WriteResult
from compiler.rollout import output as rollout_output
from compiler.rollout import placement, rebuild, renderings
from compiler.rollout.output import output_for
from tests.test_gitsource import commit, git, make_repo

STEPS = int(os.environ.get("MESHC_FUZZ_STEPS", "10"))
SEEDS = [int(seed) for seed in os.environ.get("MESHC_FUZZ_SEEDS", "1,2").split(",")]
SPEC = "mesh-spec"
INVENTORY = "inventory/hosts.yaml"


def build(spec: Path, out: Path) -> WriteResult:
    return incremental.build_output(spec, out)


class Rollout:
    """A repository with the example spec and its wave policy, and the edits the fuzz makes to it."""

    def __init__(self, root: Path, rng: random.Random) -> None:
        self.rng = rng
        self.repo = make_repo(root / "repo", SPEC)
        self.spec = self.repo / SPEC
        mesh = yaml.safe_load((self.spec / "mesh.yaml").read_text())
        self.waves = [wave["name"] for wave in mesh["rollout"]["waves"]]
        self.history = [git(self.repo, "rev-parse", "HEAD").strip()]
        self.pin(hold=False, chain=[0] * len(self.waves))
        self.commit()

    def commit(self) -> None:
        self.history.append(commit(self.repo, f"step {len(self.history)}"))

    def pin(self, hold: bool, chain: list[int]) -> None:
        pinned = self.waves if hold else self.waves[1:]
        lines = [f"hold: {str(hold).lower()}", "pins:"]
        lines += [f"  {wave}: {self.history[index]}" for wave, index in zip(pinned, chain, strict=False)]
        (self.spec / "rollout.yaml").write_text("# pins\n" + "\n".join(lines) + "\n")

    def random_pins(self) -> None:
        """Pins that move forward wave by wave (mostly), sometimes with every wave held."""
        hold = self.rng.random() < 0.15
        index, chain = len(self.history) - 1, []
        for _ in self.waves:
            if self.rng.random() < 0.1:
                index = self.rng.randrange(len(self.history))  # maybe out of order: an error either way
            else:
                index = self.rng.randint(0, index)
            chain.append(index)
        self.pin(hold, chain)

    def service(self) -> tuple[Path, dict[str, Any]]:
        path = self.rng.choice(sorted((self.spec / "services").glob("*.yaml")))
        return path, yaml.safe_load(path.read_text())

    def edit_service(self) -> None:
        path, data = self.service()
        dependencies = data.setdefault("dependencies", [])
        move = self.rng.choice(["timeout", "retries", "add", "drop"])
        if move == "add" or not dependencies:
            others = sorted(p.stem for p in (self.spec / "services").glob("*.yaml"))
            known = {d["service"] for d in dependencies} | {data["service"]}
            free = [name for name in others if name not in known]
            if free:
                dependencies.append({"service": self.rng.choice(free)})
        elif move == "drop":
            dependencies.pop(self.rng.randrange(len(dependencies)))
        elif move == "timeout":
            self.rng.choice(dependencies)["timeout"] = self.rng.choice(["1s", "2s", "5s", "30s"])
        else:
            self.rng.choice(dependencies)["retries"] = {
                "attempts": self.rng.randint(1, 3),
                "per_try_timeout": "500ms",
            }
        if not dependencies:
            del data["dependencies"]
        path.write_text(yaml.safe_dump(data, sort_keys=False))

    def move_namespace(self) -> None:
        """A Kubernetes placement of a service moves to another namespace (or back to the default one): its pods and
        identity move, which every live revision's NetworkPolicies and allow-lists see (rollout.placement.widen)."""
        placed = [
            p for p in sorted((self.spec / "services").glob("*.yaml")) if "kubernetes:" in p.read_text()
        ]
        path = self.rng.choice(placed)
        data = yaml.safe_load(path.read_text())
        placement = self.rng.choice(data["deploy"]["kubernetes"])
        namespace = self.rng.choice([None, f"{data['service']}-moved", "shared"])
        if namespace is None:
            placement.pop("namespace", None)
        else:
            placement["namespace"] = namespace
        path.write_text(yaml.safe_dump(data, sort_keys=False))

    def add_service(self) -> None:
        """A new service, in a cluster, calling an existing one: new targets, pods and identities at this revision."""
        others = sorted(p.stem for p in (self.spec / "services").glob("*.yaml"))
        name = f"new-{len(others)}"
        cluster = self.rng.choice(["kube-sjc-a", "kube-iad-a", "gke-usc1-a"])
        (self.spec / "services" / f"{name}.yaml").write_text(
            f"service: {name}\nowner: fuzz\nport: 8080\nmesh_port: 18080\nlocal_port: {7200 + len(others)}\n"
            f"deploy:\n  kubernetes:\n    - {{cluster: {cluster}}}\n"
            f"dependencies:\n  - service: {self.rng.choice(others)}\n"
        )

    def edit_mesh(self) -> None:
        path = self.spec / "mesh.yaml"
        text = path.read_text()
        for old in ("connect_timeout: 1s", "connect_timeout: 2s", "connect_timeout: 3s"):
            if old in text:
                new = f"connect_timeout: {self.rng.randint(1, 3)}s"
                path.write_text(text.replace(old, new, 1))
                return

    def edit_inventory(self) -> None:
        path = self.spec / INVENTORY
        lines = path.read_text().splitlines(keepends=True)
        hosts = [i for i, line in enumerate(lines) if line.startswith("- ")]
        if self.rng.random() < 0.5 and len(hosts) > 1:
            del lines[self.rng.choice(hosts)]
            path.write_text("".join(lines))
        else:
            git(self.repo, "checkout", "HEAD", "--", f"{SPEC}/{INVENTORY}")

    def restore(self) -> None:
        """The working tree's spec as committed (rollout.yaml included): leaves any invalid edit behind."""
        git(self.repo, "checkout", "HEAD", "--", SPEC)


def hand_edit(out: Path, rng: random.Random) -> None:
    files = sorted(p for p in out.rglob("*") if p.is_file()) if out.is_dir() else []
    if files:
        victim = rng.choice(files)
        victim.write_bytes(victim.read_bytes() + b"# hand edit\n")


@pytest.mark.parametrize("seed", SEEDS)
def test_fuzz_incremental_rollout_builds_equal_clean_rollout_builds(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    rollout = Rollout(tmp_path, rng)
    out = tmp_path / "out"
    moves = {
        "service": rollout.edit_service,
        "namespace": rollout.move_namespace,
        "new-service": rollout.add_service,
        "mesh": rollout.edit_mesh,
        "inventory": rollout.edit_inventory,
        "commit": rollout.commit,
        "pins": rollout.random_pins,
        "checkout": lambda: git(rollout.repo, "checkout", "-q", "-f", rng.choice(rollout.history)),
        "restore": rollout.restore,
        "hand-edit": lambda: hand_edit(out, rng),
        "lose-cache": lambda: cache.cache_path(out).unlink(missing_ok=True),
        "nothing": lambda: None,
    }
    outcomes = []
    for step in range(STEPS):
        move = rng.choice(sorted(moves))
        moves[move]()
        before = read_tree(out)
        try:
            expected: dict[str, bytes] | None = output_for(rollout.spec)
        except SpecError:
            expected = None
        try:
            build(rollout.spec, out)
        except SpecError:
            assert expected is None, (
                f"step {step} ({move}): the incremental build failed, a clean one did not"
            )
            assert read_tree(out) == before, f"step {step} ({move}): a failed build changed the output"
            outcomes.append("error")
            continue
        assert expected is not None, f"step {step} ({move}): the incremental build passed, a clean one failed"
        assert read_tree(out) == expected, f"step {step} ({move}): incremental tree != clean tree"
        outcomes.append("built")
    assert "built" in outcomes  # a fuzz whose every step fails proves nothing


@pytest.fixture
def rollout(tmp_path: Path) -> Rollout:
    return Rollout(tmp_path, random.Random(0))


def test_a_rollout_rebuild_with_nothing_changed_compiles_nothing(
    rollout: Rollout, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    assert build(rollout.spec, out).changed
    assert cache.cache_path(out).is_file()
    settled(out)  # no file in the cache's clock tick (conftest.settled)

    def refuse(*args: object) -> None:
        raise AssertionError("a no-op rollout build or check compiled a revision")

    monkeypatch.setattr(rollout_output, "rollout_files", refuse)
    monkeypatch.setattr(
        placement, "compile_revision", refuse
    )  # what every way to a rollout's state goes through
    assert not build(rollout.spec, out).changed
    # `meshc check` agrees with the incremental build, from the same record: no revision compiled either
    status, edits = incremental.check_output(rollout.spec, out)
    assert status.clean and not edits
    monkeypatch.undo()
    (out / "puppet/data/common.yaml").write_bytes(b"# edited by hand\n")
    status, edits = incremental.check_output(
        rollout.spec, out
    )  # the record no longer holds: compiled, compared
    assert status.hand_edited == ("puppet/data/common.yaml",) and set(edits) == {"puppet/data/common.yaml"}
    assert build(rollout.spec, out).changed
    assert incremental.check_output(rollout.spec, out)[0].clean
    rollout.edit_mesh()
    assert not incremental.check_output(rollout.spec, out)[0].clean
    assert build(rollout.spec, out).changed
    assert incremental.check_output(rollout.spec, out)[0].clean


def test_a_rollout_rebuild_renders_only_what_a_changed_spec_or_widening_makes(
    rollout: Rollout, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every wave but the first is pinned: an edit of the working tree's connect timeout (no allow-list moves)
    renders the first wave's targets again, and the canary pools for their hosts' node files; every other target
    keeps its files. A new dependency widens the server's allow-list at every live revision: those render again."""
    out = tmp_path / "out"
    build(rollout.spec, out)
    settled(out)
    rendered: set[str] = set()
    real_render = renderings.render

    def spy(mesh: Any, only: Any = None) -> Any:
        rendered.update(only if only is not None else (w.id for w in mesh.workloads))
        return real_render(mesh, only=only)

    monkeypatch.setattr(renderings, "render", spy)
    rollout.edit_mesh()
    assert build(rollout.spec, out).changed
    built = set(rendered)
    assert read_tree(out) == output_for(rollout.spec)
    manifest = json.loads((out / "MANIFEST.json").read_bytes())
    rollout_section = manifest["rollout"]
    at_head = {t for t, where in rollout_section["targets"].items() if where["revision"] == "HEAD"}
    canary_pools = {host["target"] for host in rollout_section["hosts"].values()}
    readers = {
        t for t in manifest["targets"] if "/meshc-discovery/" in t
    }  # laid out by the newest revision: HEAD
    assert at_head and readers and built == at_head | canary_pools | readers
    assert len(manifest["targets"]) > len(built)
    settled(out)
    rendered.clear()
    (rollout.spec / "services/audit-log.yaml").write_text(
        (rollout.spec / "services/audit-log.yaml").read_text() + "  - service: auth\n"
    )
    assert build(rollout.spec, out).changed
    assert {"vm/auth/sjc", "vm/auth/iad"} <= rendered, "auth admits audit-log at every live revision"
    assert read_tree(out) == output_for(rollout.spec)


@pytest.mark.parametrize(
    "change",
    ["inventory", "head", "working-tree", "pins"],
)
def test_anything_a_rollout_build_reads_makes_the_rebuild_compile(
    rollout: Rollout, tmp_path: Path, change: str
) -> None:
    """The inventory, a new HEAD (even with the same tree), a spec edit, a pin: each defeats the no-op."""
    out = tmp_path / "out"
    rollout.edit_service()
    rollout.commit()
    build(rollout.spec, out)
    digest = rebuild.rollout_digest(rollout.spec)
    assert digest is not None
    if change == "pins":
        rollout.pin(hold=False, chain=[len(rollout.history) - 1] * len(rollout.waves))
    elif change == "inventory":
        rollout.edit_inventory()
    elif change == "head":
        git(rollout.repo, "commit", "-q", "--allow-empty", "-m", "empty")
    else:
        rollout.edit_mesh()
    assert rebuild.rollout_digest(rollout.spec) != digest
    build(rollout.spec, out)
    assert read_tree(out) == output_for(rollout.spec)


def test_a_rollout_input_that_is_no_file_is_never_vouched_for(rollout: Rollout) -> None:
    (rollout.spec / INVENTORY).unlink()
    assert rebuild.rollout_digest(rollout.spec) is not None  # no inventory: a valid state of its own
    (rollout.spec / INVENTORY).mkdir()
    assert rebuild.rollout_digest(rollout.spec) is None
