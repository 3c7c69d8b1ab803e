"""A SIGTERM or SIGHUP stops meshc as a Ctrl-C does (compiler.cli.termination): what it was writing is removed, the
output is left as it was, one line is said and the exit status is 128 + the signal.

CI timeouts, systemd and `timeout(1)` stop a process with SIGTERM, to the process alone or to its whole group (its
forked worker and fsync helpers too). Each case runs `python -m compiler` as users run it, frozen at a known point
of its write, and signals it there.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT

from benchmarks.synth import generate
from compiler import incremental
from compiler.output.disk import read_tree

# The meshc command line, as `python -m compiler` runs it, with a worker forked for any build (PARALLEL_FROM lowered
# for a small mesh) and one point where the command freezes: `write:N`, the build's Nth file (its forked worker
# freezes at its first: both are at work when the signal comes), or `replace`, a file renamed into place (graph -o).
# At the freeze the marker file is made; the signal then ends the sleep.
_FROZEN = """
import os, runpy, sys, time
import compiler.incremental, compiler.rollout.build
from compiler.output import staging

marker, point = sys.argv.pop(1), sys.argv.pop(1)
compiler.incremental.PARALLEL_FROM = compiler.rollout.build.PARALLEL_FROM = 1
build = os.getpid()

def freeze(said):
    if said:
        with open(marker, "w") as handle:
            handle.write("frozen")
    time.sleep(600)

if point.startswith("write:"):
    remaining = [int(point.split(":")[1])]
    real_write_all = staging.write_all
    def write_all(fd, data):
        if os.getpid() != build:
            freeze(False)
        remaining[0] -= 1
        if remaining[0] == 0:
            freeze(True)
        return real_write_all(fd, data)
    staging.write_all = write_all
elif point == "replace":
    real_replace = os.replace
    os.replace = lambda source, target: (freeze(True), real_replace(source, target))
sys.argv[0] = "meshc"
runpy.run_module("compiler", run_name="__main__", alter_sys=True)
"""

# (signal, sent to the process alone or to its group, exit status, the one line on stderr)
_STOPS = {
    "SIGINT": (signal.SIGINT, "process", 130, "meshc: interrupted"),
    "SIGTERM": (signal.SIGTERM, "process", 143, "meshc: terminated (SIGTERM)"),
    "SIGTERM-group": (signal.SIGTERM, "group", 143, "meshc: terminated (SIGTERM)"),
    "SIGHUP": (signal.SIGHUP, "process", 129, "meshc: terminated (SIGHUP)"),
}


def stopped(marker: Path, point: str, stop: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`meshc ARGS` in its own session, frozen at `point` and sent the signal `stop` names there."""
    signum, to, _, _ = _STOPS[stop]
    child = subprocess.Popen(
        [sys.executable, "-c", _FROZEN, str(marker), point, *args],
        cwd="/",  # no checkout's compiler/ in the way of PYTHONPATH
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert child.poll() is None, (
                f"meshc ended (exit {child.returncode}) before {point}: {child.stderr}"
            )
            assert time.monotonic() < deadline, f"meshc never reached {point}"
            time.sleep(0.01)
        time.sleep(0.1)  # the forked worker at its first file too
        if to == "group":
            os.killpg(child.pid, signum)
        else:
            os.kill(child.pid, signum)
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    _assert_session_ended(child.pid)
    return subprocess.CompletedProcess(child.args, child.returncode, out, err)


def _assert_session_ended(session: int) -> None:
    """No process of the command's session runs on (its worker, its fsync helpers): the zombie of one its worker
    left is init's to reap."""
    deadline = time.monotonic() + 10
    while True:
        running = []
        for entry in Path("/proc").iterdir():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except (OSError, ValueError):
                continue
            if entry.name.isdigit() and int(fields[3]) == session and fields[0] != "Z":
                running.append(entry.name)
        if not running:
            return
        assert time.monotonic() < deadline, f"still running after meshc ended: {running}"
        time.sleep(0.05)


def beside(out: Path) -> list[str]:
    """What is in the output's directory: the output, its caches, and any staging tree, spare or lock left."""
    return sorted(path.name for path in out.parent.iterdir() if path.name != "frozen")


def assert_stopped(result: subprocess.CompletedProcess[str], stop: str) -> None:
    _, _, code, line = _STOPS[stop]
    assert (result.returncode, result.stderr, result.stdout) == (code, line + "\n", "")


@pytest.mark.parametrize("stop", list(_STOPS))
def test_a_build_stopped_by_a_signal_removes_its_staging_tree_and_leaves_the_output(
    tmp_path: Path, stop: str
) -> None:
    # A SIGTERM 1.5 s into a 10,625-file build ended it on the spot (exit 143, no word): its staging tree stayed
    # beside the output, and its lock file. It now takes a Ctrl-C's path.
    spec = generate(tmp_path / "spec", 10, datacenters=2, clusters=2, deps=2, seed=7)
    out = tmp_path / "build" / "out"
    incremental.build_output(spec, out)
    before, around = read_tree(out), beside(out)
    mesh = spec / "mesh.yaml"
    mesh.write_text(mesh.read_text().replace("trust_domain: synthetic.mesh", "trust_domain: other.mesh"))
    result = stopped(out.parent / "frozen", "write:3", stop, "build", str(spec), "-o", str(out))
    assert_stopped(result, stop)
    assert read_tree(out) == before  # byte-identical
    assert beside(out) == around  # no staging tree, no lock file
    assert incremental.build_output(spec, out).changed  # the next build has nothing to clean up first


def test_a_rollout_build_stopped_by_sigterm_leaves_nothing(tmp_path: Path) -> None:
    from tests.test_rollout_build import start_rollout

    _, spec, _ = start_rollout(tmp_path / "repo")
    out = tmp_path / "build" / "out"
    out.parent.mkdir()
    result = stopped(out.parent / "frozen", "write:3", "SIGTERM", "build", str(spec), "-o", str(out))
    assert_stopped(result, "SIGTERM")
    assert beside(out) == []  # no output was there: none is, nor a staging tree or lock


@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])
def test_graph_to_a_file_stopped_by_a_signal_leaves_the_previous_picture(tmp_path: Path, stop: str) -> None:
    picture = tmp_path / "mesh.mmd"
    picture.write_text("the previous picture\n")
    result = stopped(
        tmp_path / "frozen", "replace", stop, "graph", "--spec", str(ROOT / "mesh-spec"), "-o", str(picture)
    )
    assert_stopped(result, stop)
    assert picture.read_text() == "the previous picture\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frozen", "mesh.mmd"]  # no half picture beside it


# A signal that comes as os.fork returns, in the parent and the child alike (compiler.output.forked).
_SIGNALLED_AT_FORK = """
import os, signal, sys
from compiler.cli.termination import answer_termination
from compiler.output import forked

answer_termination()
parent, real_fork = os.getpid(), os.fork
stop = getattr(signal, sys.argv[1])

def fork():
    pid = real_fork()
    os.kill(os.getpid(), stop)
    return pid

os.fork = fork
try:
    forked.fork_child(lambda: print("the work ran", flush=True))
except KeyboardInterrupt as raised:
    print(f"{'parent' if os.getpid() == parent else 'child'}: {type(raised).__name__}", flush=True)
else:
    print(f"{'parent' if os.getpid() == parent else 'child'}: returned", flush=True)
try:
    os.waitpid(-1, os.WNOHANG)
    print("a child is left", flush=True)
except ChildProcessError:
    pass
"""


@pytest.mark.parametrize(("stop", "raised"), [("SIGINT", "KeyboardInterrupt"), ("SIGTERM", "Terminated")])
def test_a_signal_during_a_fork_never_unwinds_the_child_into_the_build(stop: str, raised: str) -> None:
    # Unwound into the caller, the child would run the build's cleanup (remove the staging tree its parent writes)
    # and say the parent's line. It leaves inside fork_child; the parent, which never got the child's pid, has the
    # child ended and reaped before the signal's exception goes on.
    result = subprocess.run(
        [sys.executable, "-c", _SIGNALLED_AT_FORK, stop],
        cwd="/",
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.stdout, result.stderr) == (f"parent: {raised}\n", "")


# The command answers a first SIGTERM; a second comes while the first's cleanup runs (compiler.cli.run, for real).
_TERMINATED_TWICE = """
import os, signal, sys
from compiler import cli

def main(argv=None):
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        signal.pause()
    finally:  # the build's cleanup: removing its staging tree
        os.kill(os.getpid(), signal.SIGTERM)
        print("cleaned up", file=sys.stderr)

cli.main = main
cli.run()
"""


def test_a_second_sigterm_does_not_cut_the_cleanup_short() -> None:
    # A supervisor that repeats its SIGTERM, or `kill` run twice, would leave a half-removed staging tree.
    result = subprocess.run(
        [sys.executable, "-c", _TERMINATED_TWICE],
        cwd="/",
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stderr) == (143, "cleaned up\nmeshc: terminated (SIGTERM)\n")


def _stopped_at_rename(*args: object) -> None:
    raise KeyboardInterrupt  # as a Ctrl-C or SIGTERM raises it, where the write is


def test_a_cache_written_when_a_signal_comes_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from compiler.output import sealed

    cache = tmp_path / ".out.meshc-cache"
    cache.write_bytes(b"the previous cache")
    monkeypatch.setattr(sealed.os, "rename", _stopped_at_rename)
    with pytest.raises(KeyboardInterrupt):
        sealed.replace_file(cache, [b"the new ", b"cache"])
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.meshc-cache"]
    assert cache.read_bytes() == b"the previous cache"


def test_rollout_yaml_rewritten_when_a_signal_comes_leaves_no_staged_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `meshc promote` rewrites rollout.yaml in the spec: a staged copy left there would show in `git status`.
    from compiler.rollout import plan

    rollout = tmp_path / "rollout.yaml"
    rollout.write_text("pins: {}\n")
    monkeypatch.setattr(plan.os, "replace", _stopped_at_rename)
    with pytest.raises(KeyboardInterrupt):
        plan._replace_text(rollout, "pins: {west: abc}\n")
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rollout.yaml"]
    assert rollout.read_text() == "pins: {}\n"
