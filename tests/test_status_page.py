"""The rollout status page (`meshc plan --format html`) on real git repositories, loaded in headless Chromium:
waves as columns, boxes coloured by state, the next promotion outlined; a promotion moves the colours."""

from __future__ import annotations

import html
import sys
from pathlib import Path
from typing import Any

import pytest

from compiler.cli import main
from compiler.graph.columns import STATE_COLORS
from compiler.graph.dot import element_id
from compiler.graph.status import render_plan_page
from compiler.rollout.plan import Plan, plan_rollout, promote
from compiler.rollout.revisions import rollout_context
from tests.browser import Chromium
from tests.conftest import run_under_seeds
from tests.test_gitsource import commit, make_repo
from tests.test_graph_browser import load_page
from tests.test_rollout_build import SPEC, add_timeout_change, held_back_note, held_rollout, set_policy
from tests.test_rollout_hosts import POLICY, inventory

WAVES = ["canary", "canary-hosts", "west", "rest"]
AT_REVISION, WAITING = (
    "rgb(221, 244, 255)",
    "rgb(246, 248, 250)",
)  # STATE_COLORS fills as the browser computes them


def start(root: Path) -> tuple[Path, str, str]:
    """A repo with canary hosts: every wave pinned to `base`, then a change merged (it reaches the first wave only)."""
    repo = make_repo(root)
    spec = repo / SPEC
    set_policy(spec, POLICY)
    (spec / "inventory").mkdir(exist_ok=True)
    (spec / "inventory/hosts.yaml").write_text(inventory(3))
    base = commit(repo, "policy and inventory")
    (spec / "rollout.yaml").write_text(
        f"hold: false\npins:\n  canary-hosts: {base}\n  west: {base}\n  rest: {base}\n"
    )
    commit(repo, "rollout")
    return repo, base, add_timeout_change(repo)


def plan_of(spec: Path) -> Plan:
    context = rollout_context(spec)
    assert context is not None
    try:
        return plan_rollout(context)
    finally:
        context.location.repo.close()


@pytest.fixture(scope="module")
def rollout(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    return start(tmp_path_factory.mktemp("status") / "repo")


def columns(chromium: Chromium) -> dict[str, Any]:
    """What the browser shows: per box id its state class, fill, whether it is outlined; the column titles in order."""
    return chromium.evaluate("""(() => ({
        boxes: Object.fromEntries([...document.querySelectorAll("g.box")].map(g => [g.id, {
            state: [...g.classList].find(c => c.startsWith("state-")), marked: g.classList.contains("marked"),
            fill: getComputedStyle(g.querySelector("rect")).fill}])),
        titles: [...document.querySelectorAll("svg > text[font-weight=bold]")].map(t => t.textContent),
        highlighted: [...document.querySelectorAll("svg > rect[stroke-width='3']")].length,
    }))()""")


def click(chromium: Chromium, box_id: str) -> list[str]:
    return chromium.evaluate(f"""(() => {{
        document.getElementById({box_id!r}).dispatchEvent(new MouseEvent("click", {{bubbles: true}}));
        return [document.getElementById("meshc-panel-title").textContent,
                document.getElementById("meshc-panel-body").textContent];
    }})()""")


@pytest.mark.consumer
def test_plan_page_shows_every_target_and_host_by_wave(
    chromium: Chromium, rollout: tuple[Path, str, str], tmp_path: Path
) -> None:
    repo, base, head = rollout
    plan = plan_of(repo / SPEC)
    load_page(chromium, tmp_path / "plan.html", render_plan_page(plan))
    shown = columns(chromium)
    assert shown["titles"] == [
        f"next promotion: canary-hosts → {head[:12]}, {len(plan.changes)} target(s) change",
        *WAVES,
    ]
    assert shown["highlighted"] == 1
    hosts = [t for t in plan.targets if t.target.startswith("host/")]
    assert (
        len(hosts) == 4
        and {t.wave for t in hosts} == {"canary-hosts"}
        and {t.pool for t in hosts} == {"vm/auth/sjc", "vm/auth/iad"}
    )
    assert set(shown["boxes"]) == {element_id(t.target) for t in plan.targets}
    for target in plan.targets:
        box = shown["boxes"][element_id(target.target)]
        assert box["fill"] == (AT_REVISION if target.wave == "canary" else WAITING), target
    changed = {element_id(c.target) for c in plan.changes}
    assert changed == {element_id(t.target) for t in hosts}, (
        "promoting canary-hosts changes exactly its hosts' node files"
    )
    assert {i for i, box in shown["boxes"].items() if box["marked"]} == changed
    title, body = click(chromium, element_id(hosts[0].target))
    assert title == hosts[0].target
    assert body.splitlines() == [
        "wave: canary-hosts",
        f"revision: {base[:12]} (behind the newest)",
        f"canary host of the pool {hosts[0].pool}",
        "restart-sensitive: no",
        "next promotion: changed (promoted), costs hot reload",
    ]
    header = chromium.evaluate("document.querySelector('header').textContent")
    assert "Contract (with the promotion of canary-hosts): nothing" in header
    assert "Checked: every state while canary-hosts converges: " in header and ": safe" in header


@pytest.mark.consumer
def test_a_promotion_moves_the_colours_and_the_outlined_column(chromium: Chromium, tmp_path: Path) -> None:
    repo, _, head = start(tmp_path / "repo")
    spec, out = repo / SPEC, repo / "output"
    seen = []
    for promoted in ("canary-hosts", "west", "rest"):
        load_page(chromium, tmp_path / f"before-{promoted}.html", render_plan_page(plan_of(spec)))
        seen.append(columns(chromium))
        assert promote(spec, out).wave == promoted
        commit(repo, f"promote {promoted}")
    load_page(chromium, tmp_path / "done.html", render_plan_page(plan_of(spec)))
    seen.append(columns(chromium))
    auth_sjc = element_id("vm/auth/sjc")  # in west
    assert [s["boxes"][auth_sjc]["fill"] for s in seen] == [WAITING, WAITING, AT_REVISION, AT_REVISION]
    assert [s["boxes"][auth_sjc]["marked"] for s in seen] == [False, True, False, False]
    assert [s["titles"][0].split(" →")[0] for s in seen] == [
        "next promotion: canary-hosts",
        "next promotion: west",
        "next promotion: rest",
        "every wave runs the newest revision: nothing to promote",
    ]
    assert [s["highlighted"] for s in seen] == [1, 1, 1, 0]
    assert {box["fill"] for box in seen[-1]["boxes"].values()} == {AT_REVISION}
    assert head in plan_of(spec).waves[-1].revision


def test_plan_html_is_the_same_bytes_across_runs_and_hash_seeds(rollout: tuple[Path, str, str]) -> None:
    repo = rollout[0]
    command = [sys.executable, "-m", "compiler", "plan", repo / SPEC, "--format", "html"]
    results = run_under_seeds(dict.fromkeys(("0", "1", "4242"), command))
    assert all(r.returncode == 0 and r.stderr == "" for r in results.values()), results
    pages = {result.stdout for result in results.values()}
    assert len(pages) == 1
    page = pages.pop()
    assert page.startswith("<!DOCTYPE html>") and page == render_plan_page(plan_of(repo / SPEC))
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "") and "https://" not in page


def test_plan_html_through_the_cli(
    rollout: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plan", str(rollout[0] / SPEC), "--format", "html"]) == 0
    page = capsys.readouterr().out
    assert page.count('class="box state-') == len(plan_of(rollout[0] / SPEC).targets)
    assert (
        f'fill="{STATE_COLORS["at-revision"][0]}"' in page and f'fill="{STATE_COLORS["waiting"][0]}"' in page
    )


def test_on_hold_the_page_says_the_newest_revision_runs_in_no_wave(tmp_path: Path) -> None:
    """Every wave held at base and a change merged: no box is at the newest revision, and the page says why."""
    repo, spec, base = held_rollout(tmp_path / "repo")
    head = add_timeout_change(repo)
    plan = plan_of(spec)
    page = render_plan_page(plan)
    assert f'<p class="note">{html.escape(held_back_note(head))}</p>' in page
    assert f"on hold: {head[:12]} runs in no wave, every wave {base[:12]}: nothing to promote" in page
    assert "runs the newest revision: nothing to promote" not in page
    assert page.count('class="box state-waiting') == len(plan.targets) and "state-at-revision" not in page
    assert "next promotion: none (on hold)" in page and "(nothing to promote)" not in page
