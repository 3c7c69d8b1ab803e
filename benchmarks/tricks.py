"""Every speed trick meshc keeps, measured with and without it: the figures its comments quote.

One process compiles the synthetic mesh once, then reruns a stage alternately with the trick on and
off (interleaved, so a loaded machine slows both alike) and prints CPU seconds, median and range.
`--writes` also writes the whole tree into fresh directories under each durability policy (wall).
`--validate` measures only the schema check: jsonschema against spec.conform's fast check.

    python benchmarks/tricks.py [--size 1000] [--repeat 7] [--writes | --scan | --validate]
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.harness import BENCH_DIR, spec_for  # noqa: E402 - after the path set-up above
from compiler import emit, memo  # noqa: E402
from compiler.backends import run_backends  # noqa: E402
from compiler.ir.lower import lower  # noqa: E402
from compiler.output import durable  # noqa: E402
from compiler.render import render  # noqa: E402
from compiler.spec import schema  # noqa: E402
from compiler.spec.checks import check  # noqa: E402
from compiler.spec.load import MESH_FILE, load_documents, spec_files  # noqa: E402


@contextmanager
def _replaced(owner: Any, name: str, value: Any) -> Iterator[None]:
    old = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, old)


@contextmanager
def _gc_enabled() -> Iterator[None]:
    gc.enable()
    try:
        yield
    finally:
        gc.disable()


def _no_memo() -> Any:
    return _replaced(memo.Memo, "once", lambda self, key, build, *args: build(*args))


def _no_yaml_cache() -> Any:
    return _replaced(emit, "yaml_string", emit.yaml_string.__wrapped__)


def _cpu(run: Callable[[], Any]) -> float:
    if hasattr(emit.yaml_string, "cache_clear"):
        emit.yaml_string.cache_clear()  # every run starts as a fresh process would
    started = time.process_time()
    run()
    return time.process_time() - started


def _line(times: list[float], digits: int = 2) -> str:
    return f"{statistics.median(times):.{digits}f} s ({min(times):.{digits}f}-{max(times):.{digits}f})"


def measure_tricks(spec_dir: Path, repeat: int) -> None:
    """CPU of each stage with and without each trick, interleaved `repeat` times."""
    files = spec_files(spec_dir)
    gc.disable()  # as the command line runs every command (collector_paused)
    spec = check(load_documents(files, "spec"))
    mesh = lower(spec)
    sidecars = render(mesh)
    stages: dict[str, Callable[[], Any]] = {
        "lower": lambda: lower(spec),
        "render": lambda: render(mesh),
        "backends": lambda: run_backends(mesh, sidecars),
        "compile": lambda: run_backends(
            *(lambda m: (m, render(m)))(lower(check(load_documents(files, "spec"))))
        ),
    }
    trials = (
        ("Memo", "lower", _no_memo),
        ("Memo", "render", _no_memo),
        ("Memo", "backends", _no_memo),
        ("yaml_string lru_cache", "backends", _no_yaml_cache),
        ("gc paused (collector_paused)", "compile", _gc_enabled),
    )
    for trick, stage, without in trials:
        on: list[float] = []
        off: list[float] = []
        for _ in range(repeat):
            on.append(_cpu(stages[stage]))
            with without():
                off.append(_cpu(stages[stage]))
        print(f"{trick:<30} {stage:<9} cpu with {_line(on)}, without {_line(off)}", flush=True)


def measure_writes(spec_dir: Path, repeat: int) -> None:
    """Wall time of writing the whole tree into a fresh directory: fsync by 1, 16 and 64 threads, or one os.sync()."""
    from compiler.pipeline import compile_dir

    tree = compile_dir(spec_dir).tree()
    work = BENCH_DIR / f"writes-{os.getpid()}"
    policies = {f"fsync x{n}": n for n in (1, 16, 64)} | {"os.sync()": 0}
    walls: dict[str, list[float]] = {name: [] for name in policies}
    try:
        for run in range(repeat):
            for name, threads in policies.items():
                out = work / f"{run}-{threads}"
                os.sync()  # others' dirty pages are not this write's cost
                started = time.perf_counter()
                _write(tree, out, threads)
                walls[name].append(time.perf_counter() - started)
                shutil.rmtree(out)
                print(f"write {name:<10} {walls[name][-1]:.2f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for name, times in walls.items():
        print(f"write tree, {name:<10} wall {_line(times)}")


def _write(tree: dict[str, bytes], out: Path, threads: int) -> None:
    directories = durable.tree_directories(out, tree)
    for directory in directories:
        directory.mkdir(parents=True)
    for path, data in tree.items():
        (out / path).write_bytes(data)
    if not threads:
        os.sync()
        return
    with _replaced(durable, "FSYNC_THREADS", threads):
        durable.fsync_paths([out / path for path in tree], os.O_RDONLY)
        durable.fsync_paths(directories, os.O_RDONLY | os.O_DIRECTORY)


@dataclass(frozen=True, slots=True)
class _FrozenOnDisk:
    """output.disk.OnDisk as a frozen dataclass would be: what the NamedTuple is measured against."""

    kind: str
    size: int = 0
    mtime_ns: int = 0
    inode: int = 0
    ctime_ns: int = 0


def measure_scan(spec_dir: Path, repeat: int) -> None:
    """CPU of scanning a built output tree (as every build and check does): NamedTuple or frozen-dataclass entries."""
    from compiler.incremental import build_output
    from compiler.output import disk

    out = BENCH_DIR / f"scan-{os.getpid()}"
    try:
        build_output(spec_dir, out)
        on: list[float] = []
        off: list[float] = []
        for _ in range(repeat):
            on.append(_cpu(lambda: disk.scan_tree(out)))
            with _replaced(disk, "OnDisk", _FrozenOnDisk):
                off.append(_cpu(lambda: disk.scan_tree(out)))
        entries = len(disk.scan_tree(out))
    finally:
        shutil.rmtree(out, ignore_errors=True)
        for beside in out.parent.glob(f".{out.name}.meshc-*"):
            shutil.rmtree(beside) if beside.is_dir() else beside.unlink()
    print(
        f"{'OnDisk as NamedTuple':<30} {'scan':<9} {entries} entries: "
        f"cpu with {_line(on, 3)}, frozen dataclass {_line(off, 3)}"
    )


def measure_validation(spec_dir: Path, repeat: int) -> None:
    """CPU of schema-checking every document of the mesh, jsonschema against the fast check (interleaved), and of
    each engine's first check of one service document in a fresh process (import and set-up included)."""
    gc.disable()  # as the command line runs every command (collector_paused)
    documents = load_documents(spec_files(spec_dir), "spec")
    named = [
        (doc.data, "mesh" if file.endswith("/" + MESH_FILE) else "service") for file, doc in documents.items()
    ]
    for name in schema.SCHEMA_NAMES:  # both engines built before the clock starts
        schema._validator(name), schema._conforms(name)
    slow: list[float] = []
    fast: list[float] = []
    for _ in range(repeat):
        slow.append(_cpu(lambda: [list(schema._validator(name).iter_errors(data)) for data, name in named]))
        fast.append(_cpu(lambda: [schema._conforms(name)(data) for data, name in named]))
    print(f"{'validate, jsonschema':<30} {len(named)} docs: cpu {_line(slow, 3)}")
    print(f"{'validate, fast check':<30} {len(named)} docs: cpu {_line(fast, 3)}")
    service = next(file for file in sorted(documents) if "/services/" in file)
    first: dict[str, list[float]] = {"jsonschema": [], "fast check": []}
    for _ in range(repeat):
        for engine in first:
            first[engine].append(_first_check(spec_dir / service.removeprefix("spec/"), engine))
    for engine, times in first.items():
        print(f"{'first check, ' + engine:<30} one service, fresh process: cpu {_line(times, 3)}")


# A fresh interpreter that has loaded what a one-service rebuild loads before validating, then times one
# engine's first check of one service file: jsonschema's import and validator, or compiling the fast check.
_FIRST_CHECK = """
import sys, time
from pathlib import Path
from compiler.spec import schema
from compiler.spec.document import parse_document
data = parse_document("s.yaml", Path(sys.argv[1]).read_bytes()).data
schema.prepared_schema("service")
started = time.process_time()
if sys.argv[2] == "jsonschema":
    assert not list(schema._validator("service").iter_errors(data))
else:
    assert schema._conforms("service")(data)
print(time.process_time() - started)
"""


def _first_check(service_file: Path, engine: str) -> float:
    run = subprocess.run(
        [sys.executable, "-c", _FIRST_CHECK, str(service_file), engine],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=True,
    )
    return float(run.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_000, help="services in the synthetic mesh")
    parser.add_argument("--repeat", type=int, default=7, help="runs with and without each trick")
    parser.add_argument(
        "--writes", action="store_true", help="also compare durability policies (slow: minutes)"
    )
    parser.add_argument("--scan", action="store_true", help="only the output-tree scan (builds one tree)")
    parser.add_argument(
        "--validate", action="store_true", help="only the schema check: jsonschema, fast check"
    )
    args = parser.parse_args()
    spec_dir = spec_for(args.size)
    print(
        f"meshc speed tricks at {args.size} services, {args.repeat} interleaved runs each; "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    if args.scan:
        measure_scan(spec_dir, args.repeat)
        return
    if args.validate:
        measure_validation(spec_dir, args.repeat)
        return
    measure_tricks(spec_dir, args.repeat)
    if args.writes:
        measure_writes(spec_dir, max(1, args.repeat // 3))


if __name__ == "__main__":
    main()
