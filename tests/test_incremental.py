"""Incremental builds: after random edit sequences an incremental build writes the tree a clean build writes,
and a build cache that is corrupt, truncated, stale, from another meshc or edited by hand is never trusted.

`MESHC_FUZZ_STEPS` (default 12) and `MESHC_FUZZ_SEEDS` (default "1,2") make the fuzz run longer, e.g.
`MESHC_FUZZ_STEPS=200 MESHC_FUZZ_SEEDS=1,2,3,4,5 pytest tests/test_incremental.py -k fuzz`.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import random
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from conftest import meshc_in_process, settled

from benchmarks.synth import generate
from compiler import incremental, partial, targets
from compiler.backends import puppet
from compiler.diagnostics import InternalError, SpecError
from compiler.emit import dump_yaml
from compiler.ir.lower import zk_path
from compiler.ir.model import Workload
from compiler.output import cache, facts
from compiler.output.compare import TreeStatus
from compiler.output.disk import read_tree, scan_tree
from compiler.output.documents import read_documents
from compiler.output.writer import WriteResult
from compiler.pipeline import compile_dir, spec_files
from compiler.render import nerve
from compiler.spec.document import parse_document

STEPS = int(os.environ.get("MESHC_FUZZ_STEPS", "12"))
SEEDS = [int(seed) for seed in os.environ.get("MESHC_FUZZ_SEEDS", "1,2").split(",")]


def build(spec: Path, out: Path) -> WriteResult:
    return incremental.build_output(spec, out)


def clean_tree(spec: Path, tmp_path: Path) -> dict[str, bytes]:
    """What a from-scratch compile renders, without the incremental build's code path (no cache, no spare)."""
    return compile_dir(spec).tree()


class Spec:
    """A synthetic spec held as data and written back file by file, with edits that keep it valid (mostly)."""

    def __init__(self, root: Path, rng: random.Random) -> None:
        self.root, self.rng = root, rng
        self.mesh = yaml.safe_load((root / "mesh.yaml").read_text())
        self.services = {
            path.stem: yaml.safe_load(path.read_text()) for path in sorted((root / "services").iterdir())
        }
        self.added = 0

    def write(self, name: str | None) -> None:
        if name is None:
            (self.root / "mesh.yaml").write_bytes(dump_yaml(self.mesh))
        elif name in self.services:
            (self.root / "services" / f"{name}.yaml").write_bytes(dump_yaml(self.services[name]))
        else:
            (self.root / "services" / f"{name}.yaml").unlink()

    def pick(self) -> str:
        return self.rng.choice(sorted(self.services))

    def edit_port(self) -> list[str | None]:
        name = self.pick()
        key = self.rng.choice(["port", "mesh_port", "local_port"])
        base = {"port": 8000, "mesh_port": 18000, "local_port": 30000 + 100 * self.rng.randint(0, 50)}[key]
        used = {s["local_port"] for s in self.services.values()}
        value = base + self.rng.randint(0, 99)
        while key == "local_port" and value in used:
            value += 1
        self.services[name][key] = value
        return [name]

    def add_dependency(self) -> list[str | None]:
        name, other = self.pick(), self.pick()
        deps = self.services[name].setdefault("dependencies", [])
        if other == name or any(d["service"] == other for d in deps):
            return []
        deps.append({"service": other})
        return [name]

    def remove_dependency(self) -> list[str | None]:
        name = self.pick()
        deps = self.services[name].get("dependencies") or []
        if not deps:
            return []
        deps.pop(self.rng.randrange(len(deps)))
        return [name]

    def add_service(self) -> list[str | None]:
        self.added += 1
        name = f"new-{self.added:03d}"
        used = {s["local_port"] for s in self.services.values()}
        port = next(p for p in range(40000, 50000) if p not in used)
        clusters = sorted(self.mesh["clusters"])
        deploy: dict[str, Any] = (
            {"vm": {"datacenters": [self.rng.choice(sorted(self.mesh["datacenters"]))]}}
            if self.rng.random() < 0.5
            else {"kubernetes": [{"cluster": self.rng.choice(clusters)}]}
        )
        deps = self.rng.sample(sorted(self.services), min(2, len(self.services)))
        client = self.pick()
        self.services[name] = {
            "service": name,
            "owner": "fuzz",
            "port": 8080,
            "mesh_port": 18080,
            "local_port": port,
            "protocol": "http",
            "deploy": deploy,
            "dependencies": [{"service": d} for d in deps],
        }
        self.services[client].setdefault("dependencies", []).append({"service": name})
        return [name, client]

    def remove_service(self) -> list[str | None]:
        if len(self.services) <= 4:
            return []
        name = self.pick()
        del self.services[name]
        changed: list[str | None] = [name]
        for other, doc in self.services.items():
            deps = doc.get("dependencies") or []
            if any(d["service"] == name for d in deps):
                doc["dependencies"] = [d for d in deps if d["service"] != name]
                changed.append(other)
        return changed

    def move_service(self) -> list[str | None]:
        name = self.pick()
        doc = self.services[name]
        if doc.get("locality") == "local":
            return []
        clusters = sorted(self.mesh["clusters"])
        doc["deploy"] = {
            "vm": {"datacenters": sorted(self.rng.sample(sorted(self.mesh["datacenters"]), 2))},
            "kubernetes": [
                {"cluster": self.rng.choice(clusters), "namespace": f"ns-{self.rng.randint(0, 2)}"}
            ],
        }
        return [name]

    def edit_mesh(self) -> list[str | None]:
        choice = self.rng.randrange(3)
        if choice == 0:
            self.mesh["defaults"]["timeout"] = self.rng.choice(["15s", "20s", "25s"])
        elif choice == 1:
            dc = self.rng.choice(sorted(self.mesh["datacenters"]))
            self.mesh["datacenters"][dc]["failover"].reverse()
        else:
            cluster = self.rng.choice(sorted(self.mesh["clusters"]))
            self.mesh["clusters"][cluster]["network_policy"] = not self.mesh["clusters"][cluster].get(
                "network_policy", False
            )
        return [None]

    # Edits one file that break (or may break) a check in another file: a partial build must see them too.

    def clash_local_port(self) -> list[str | None]:
        """Two services' local ports clash (reported at the later file: maybe not the edited one)."""
        name, other = self.pick(), self.pick()
        self.services[name]["local_port"] = self.services[other]["local_port"]
        return [name]

    def clash_with_client_port(self) -> list[str | None]:
        """A service takes as local port its client's app port: a port clash in the client's file."""
        clients = [
            (c, d["service"]) for c, doc in self.services.items() for d in doc.get("dependencies") or []
        ]
        if not clients:
            return []
        client, server = self.rng.choice(sorted(clients))
        self.services[server]["local_port"] = self.services[client]["port"]
        return [server]

    def make_tcp(self) -> list[str | None]:
        """A service turns tcp: its clients' HTTP-only policy keys (timeout, per-try timeout) become errors there."""
        name = self.pick()
        self.services[name]["protocol"] = "tcp"
        return [name]

    def make_local(self) -> list[str | None]:
        """A service turns `local`: a client in a datacenter it does not run in cannot reach it."""
        name = self.pick()
        self.services[name]["locality"] = "local"
        return [name]

    def shift_app_port(self) -> list[str | None]:
        """A service's app port moves by one (the broken renderer's trigger, see `misregistering_nerve`)."""
        name = self.pick()
        self.services[name]["port"] += 1
        return [name]

    def drop_service_only(self) -> list[str | None]:
        """A service file goes, its clients still name it: unknown dependencies in their files."""
        if len(self.services) <= 4:
            return []
        name = self.pick()
        del self.services[name]
        return [name]


EDITS: list[Callable[[Spec], list[str | None]]] = [
    Spec.edit_port,
    Spec.add_dependency,
    Spec.remove_dependency,
    Spec.add_service,
    Spec.remove_service,
    Spec.move_service,
    Spec.edit_mesh,
    Spec.clash_local_port,
    Spec.clash_with_client_port,
    Spec.make_tcp,
    Spec.make_local,
    Spec.drop_service_only,
    Spec.shift_app_port,
]


class Paths:
    """Which path each build took: partial (compiler.partial) or whole."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.partial = 0
        build_partial = partial.build_partial

        def counted(*args: Any) -> Any:
            result = build_partial(*args)
            self.partial += isinstance(result, WriteResult)
            return result

        monkeypatch.setattr(partial, "build_partial", counted)
        # The fuzz's meshes are small: a neighbourhood is most of one, and the whole build would run.
        monkeypatch.setattr(partial, "MAX_SHARE", 1.0)


def misregistering_nerve(monkeypatch: pytest.MonkeyPatch) -> None:
    """A rendering bug on purpose: a VM pool whose app and mesh ports add up odd registers where its service's
    name without its last letter says (svc-0001 and svc-0002 clash at svc-000). The invariants flag it in the
    *clients'* rendering, so a partial build that checked only the edited service's targets would miss it."""
    render_nerve = nerve.nerve

    def broken(workload: Workload) -> dict[str, Any] | None:
        document = render_nerve(workload)
        if document is None or (workload.ingress.app_port + workload.ingress.mesh_port) % 2 == 0:
            return document
        entry = document["services"][workload.service]
        return {"services": {workload.service: {**entry, "zk_path": zk_path(workload.service[:-1])}}}

    monkeypatch.setattr(nerve, "nerve", broken)


@pytest.mark.parametrize("broken", [False, True], ids=["renderer", "broken-renderer"])
@pytest.mark.parametrize("seed", SEEDS)
def test_fuzz_incremental_builds_equal_clean_builds(
    tmp_path: Path, seed: int, broken: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(seed)
    root = generate(tmp_path / "spec", 14, datacenters=3, clusters=4, deps=3, seed=seed)
    spec, out = Spec(root, rng), tmp_path / "out"
    paths = Paths(monkeypatch)
    if broken:
        misregistering_nerve(monkeypatch)
    build(root, out)
    applied = written = rendered = rejected = bugs = 0
    edits = EDITS + [Spec.shift_app_port] * 6 if broken else EDITS
    for _ in range(STEPS):
        saved = {p: p.read_bytes() for p in [root / "mesh.yaml", *(root / "services").iterdir()]}
        edit = rng.choice(edits)
        changed = edit(spec)
        for name in changed:
            spec.write(name)
        try:
            expected = clean_tree(root, tmp_path)
        except (SpecError, InternalError):
            # an edit the spec rejects (or that meets the broken renderer): the incremental build must refuse
            # it too, with the same findings, touching nothing
            rejected += 1
            bugs += isinstance(sys.exc_info()[1], InternalError)
            before = read_tree(out)
            with pytest.raises((SpecError, InternalError)) as clean_error:
                compile_dir(root)
            with pytest.raises(clean_error.type) as built_error:
                build(root, out)  # with recorded documents for the files the edit left alone
            if isinstance(clean_error.value, SpecError):
                assert built_error.value.diagnostics == clean_error.value.diagnostics  # type: ignore[attr-defined]
            assert str(built_error.value) == str(clean_error.value)
            assert read_tree(out) == before
            for path in (root / "services").iterdir():
                path.unlink()
            for path, data in saved.items():
                path.write_bytes(data)
            spec = Spec(root, rng)
            spec.added += applied + 100
            continue
        applied += 1
        written += len(build(root, out).written)
        rendered += len(expected)
        assert read_tree(out) == expected, f"seed {seed}: after {edit.__name__} on {changed}"
        assert_documents_are_the_parse(root, out)
        assert not build(root, out).changed  # and a second build finds nothing to do
    assert applied >= STEPS // 3 and rejected, "both valid and rejected edits, or the fuzz tests little"
    assert written < rendered / 2, "the builds were not incremental: they rewrote most files"
    assert paths.partial >= applied // 2, (
        "most valid edits take the partial path, or the fuzz does not test it"
    )
    assert bugs or not broken, "the broken renderer never showed: the fuzz did not test the invariants"


def assert_documents_are_the_parse(root: Path, out: Path) -> None:
    """Every spec file has a recorded document, and it is what parsing the file's bytes gives, type for type."""
    files = spec_files(root)
    label = root.as_posix().rstrip("/")
    known = read_documents(out, targets.file_hashes(files, label))
    assert sorted(known) == sorted(f"{label}/{name}" for name in files)
    for name, found in known.items():
        raw = files[name.removeprefix(label + "/")]
        assert isinstance(raw, bytes)
        fresh = parse_document(name, raw)
        recorded = found.document
        assert orjson.dumps(recorded.data) == orjson.dumps(fresh.data)  # 1, True and "1" stay apart
        assert recorded.file == fresh.file
        assert dict(recorded.spans) == dict(fresh.spans) and dict(recorded.key_spans) == dict(fresh.key_spans)


# ------------------------------------------------------------------ a cache is never trusted blindly


@pytest.fixture
def built(tmp_path: Path) -> tuple[Path, Path]:
    spec = generate(tmp_path / "spec", 8, datacenters=2, clusters=2, deps=2, seed=3)
    out = tmp_path / "out"
    build(spec, out)
    assert cache.cache_path(out).is_file()
    return spec, out


def cached(out: Path) -> cache.Cached | None:
    return cache.read_cache(out, scan_tree(out))


def rewrite(out: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Edit the cache's content and give it a valid checksum: a well-formed cache that says something else."""
    path = cache.cache_path(out)
    body = orjson.loads(path.read_bytes().partition(b"\n")[2])
    change(body)
    raw = orjson.dumps(body)
    path.write_bytes(b"meshc-cache " + hashlib.sha256(raw).hexdigest().encode() + b"\n" + raw)
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10**9))  # not racy


def lie(body: dict[str, Any]) -> None:
    """A cache claiming every target is unchanged whatever the spec says: trusted, it would keep stale files."""
    body["inputs"] = {target: "0" * 64 for target in body["inputs"]}


def edit_spec(spec: Path) -> None:
    path = spec / "services" / "svc-0001.yaml"
    path.write_text(path.read_text().replace("port: 8080", "port: 8181", 1))


def test_a_valid_cache_is_used(built: tuple[Path, Path]) -> None:
    spec, out = built
    found = cached(out)
    assert found is not None and found.spec is not None and found.inputs
    assert not build(spec, out).changed


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda p: p.write_bytes(b"\x00garbage\xff"), id="corrupt"),
        pytest.param(lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), id="truncated"),
        pytest.param(
            lambda p: p.write_bytes(p.read_bytes().replace(b'"spec":"', b'"spec":"0', 1)), id="hand-edited"
        ),
        pytest.param(lambda p: p.write_bytes(b""), id="empty"),
    ],
)
def test_a_damaged_cache_is_ignored(
    built: tuple[Path, Path], tmp_path: Path, damage: Callable[[Path], None]
) -> None:
    spec, out = built
    damage(cache.cache_path(out))
    assert cached(out) is None
    edit_spec(spec)
    assert build(spec, out).changed
    assert read_tree(out) == clean_tree(spec, tmp_path)
    # A cache that still starts as meshc's is rewritten whole by that build; a file that does not is
    # not known to be meshc's, so it is left alone (and never trusted).
    assert (cached(out) is not None) == cache.cache_path(out).read_bytes().startswith(b"meshc-cache ")


def test_a_cache_from_another_meshc_version_is_ignored(built: tuple[Path, Path], tmp_path: Path) -> None:
    spec, out = built
    rewrite(out, lambda body: (lie(body), body.update(meshc_version="0.0.0-other")))
    assert cached(out) is None
    edit_spec(spec)
    build(spec, out)
    assert read_tree(out) == clean_tree(spec, tmp_path)


def test_a_cache_from_other_compiler_code_is_ignored(built: tuple[Path, Path], tmp_path: Path) -> None:
    spec, out = built
    rewrite(out, lambda body: (lie(body), body.update(code="0" * 64)))
    assert cached(out) is None


def test_a_stale_cache_of_another_tree_is_ignored(built: tuple[Path, Path], tmp_path: Path) -> None:
    """The tree changed behind the cache's back (a checkout, a build killed before it wrote its cache)."""
    spec, out = built
    saved = cache.cache_path(out).read_bytes()
    edit_spec(spec)
    build(spec, out)  # a new tree and a new cache
    cache.cache_path(out).write_bytes(saved)  # the old cache back: it names the previous MANIFEST.json
    assert cached(out) is None


def test_a_hand_edited_output_file_is_rebuilt(built: tuple[Path, Path], tmp_path: Path) -> None:
    spec, out = built
    victim = next(p for p in sorted(read_tree(out)) if p.startswith("kubernetes/") and "/00-" not in p)
    data = (out / victim).read_bytes()
    (out / victim).write_bytes(data.replace(b"meshc", b"MESHC", 1))  # same size, new mtime
    assert victim not in (cached(out) or pytest.fail("cache")).trusted
    assert build(spec, out).written == (victim,)
    assert (out / victim).read_bytes() == data


def test_an_edit_that_puts_size_and_mtime_back_is_caught_by_its_ctime(
    built: tuple[Path, Path], tmp_path: Path
) -> None:
    # `cp -p`, `rsync -t`, `touch -r`: the edited file has the recorded size, mtime and inode; only its ctime,
    # which no one can set, tells (as git's index knows).
    spec, out = built
    settled(
        out
    )  # no file in the cache's clock tick (conftest.settled): only the ctime may give the edit away
    victim = next(p for p in sorted(read_tree(out)) if p.startswith("kubernetes/") and "/00-" not in p)
    data = (out / victim).read_bytes()
    before = os.stat(out / victim)
    (out / victim).write_bytes(data.replace(b"meshc", b"MESHC", 1))
    os.utime(out / victim, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(out / victim)
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
        before.st_size,
        before.st_mtime_ns,
        before.st_ino,
    )
    assert victim not in (cached(out) or pytest.fail("cache")).trusted
    assert incremental.check_output(spec, out)[0].hand_edited == (victim,)
    assert build(spec, out).written == (victim,)
    assert (out / victim).read_bytes() == data


def test_a_cache_of_the_format_without_ctimes_is_ignored(built: tuple[Path, Path]) -> None:
    # Format 2 recorded (size, mtime, inode): read as format 3 it would trust a file by three of its four fields.
    spec, out = built
    rewrite(
        out,
        lambda body: body.update(format=2, files={path: stat[:3] for path, stat in body["files"].items()}),
    )
    assert cached(out) is None
    rewrite(out, lambda body: body.update(format=2))  # the ctimes still there: the format alone refuses it
    assert cached(out) is None


@pytest.mark.parametrize("staging", ["spare", "fresh", "worker"])
def test_the_files_a_rebuild_linked_are_recorded_with_their_new_ctime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, staging: str
) -> None:
    # meshc links the output's unchanged files into the spare or a staging tree, and may remove a tree holding such
    # links: each changes the inode's ctime. The cache records every file's stat after the build's last link and
    # unlink, so the next build trusts every file it did not write (and a no-op stops before parsing).
    spec = generate(tmp_path / "spec", 8, datacenters=2, clusters=2, deps=2, seed=3)
    out = tmp_path / "out"
    build(spec, out)
    edit_spec(spec)
    build(spec, out)  # the spare now holds the previous files of the edited targets: the next edit links them
    if staging == "fresh":
        shutil.rmtree(spare(out))  # staged in a new tree, the previous one removed after the swap
    if staging == "worker":
        shutil.rmtree(spare(out))
        cache.cache_path(out).unlink()  # every target rendered, none changed: the worker's tree is abandoned
        monkeypatch.setattr(incremental, "PARALLEL_FROM", 1)
    else:  # another service: the first edit's files, unchanged now, are linked into the tree
        path = spec / "services" / "svc-0002.yaml"
        path.write_text(path.read_text().replace("port: 8080", "port: 8282", 1))
    before = scan_tree(out)
    result = build(spec, out)
    assert result.changed == (staging != "worker")
    after = scan_tree(out)
    linked = {p for p, e in after.items() if e.kind == "regular file"} - set(result.written)
    # the trap is there: files the build did not write have a new ctime, not the one it scanned
    assert {p for p in linked if after[p].ctime_ns != before[p].ctime_ns}
    settled(out)  # no file in the cache's clock tick (conftest.settled)
    found = cached(out) or pytest.fail("cache")
    assert linked - {"MANIFEST.json"} <= set(found.trusted)
    assert len(found.trusted) == len(found.files)
    assert build(spec, out).changed is False


def test_a_racy_file_is_hashed_not_trusted(built: tuple[Path, Path], tmp_path: Path) -> None:
    """A file changed in the clock tick the cache was written in has the recorded stat; its mtime gives it away."""
    spec, out = built
    victim = next(p for p in sorted(read_tree(out)) if p.startswith("puppet/data/pools/"))
    data = (out / victim).read_bytes()
    (out / victim).write_bytes(data.replace(b"true", b"TRUE", 1) if b"true" in data else data[:-2] + b"x\n")
    stamp = os.stat(cache.cache_path(out)).st_mtime_ns
    os.utime(out / victim, ns=(stamp, stamp))
    info = os.stat(out / victim)
    rewrite(
        out,
        lambda body: body["files"].update(
            {victim: [info.st_size, info.st_mtime_ns, info.st_ino, info.st_ctime_ns]}
        ),
    )
    os.utime(cache.cache_path(out), ns=(stamp, stamp))  # the cache written in that very tick
    assert victim not in (cached(out) or pytest.fail("cache")).trusted
    assert build(spec, out).written == (victim,)
    assert (out / victim).read_bytes() == data


def test_the_cache_lives_beside_the_output_never_inside(built: tuple[Path, Path]) -> None:
    spec, out = built
    assert cache.cache_path(out).parent == out.parent
    assert not [p for p in read_tree(out) if "cache" in p]


def test_the_build_command_is_incremental_and_says_so(tmp_path: Path) -> None:
    """Through the command line: the second build writes nothing, a one-port edit rewrites that service's files."""
    spec = generate(tmp_path / "spec", 10, datacenters=2, clusters=2, deps=2, seed=5)
    out = tmp_path / "out"

    def run() -> str:
        result = meshc_in_process("build", spec, "-o", out)
        assert result.returncode == 0 and result.stderr == "", result.stderr
        return result.stdout

    run()
    assert run() == f"{out}: up to date, nothing written\n"
    edit_spec(spec)
    written = int(run().split(": ")[1].split()[0])
    assert 0 < written < len(read_tree(out)) // 2


def test_check_with_the_cache_says_what_check_without_it_says(built: tuple[Path, Path]) -> None:
    spec, out = built
    assert incremental.output_status(spec, out) == (TreeStatus(), {})
    victim = next(p for p in sorted(read_tree(out)) if p.startswith("puppet/data/pools/"))
    (out / victim).write_bytes((out / victim).read_bytes() + b" ")
    edit_spec(spec)
    with_cache = incremental.output_status(spec, out)
    cache.cache_path(out).unlink()
    without = incremental.output_status(spec, out)
    assert with_cache == without
    status, rendered = with_cache
    assert status.hand_edited == (victim,) and status.stale and not status.missing and not status.extra
    assert sorted(rendered) == sorted((*status.stale, *status.hand_edited))
    build(spec, out)
    assert incremental.output_status(spec, out)[0].clean


def leases_work(directory: Path) -> bool:
    """Whether this filesystem grants write leases (compiler.output.spare rewrites a file in place under one)."""
    probe = directory / "lease-probe"
    probe.write_bytes(b"")
    fd = os.open(probe, os.O_WRONLY)
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
    except OSError:
        return False
    finally:
        os.close(fd)
        probe.unlink()
    return True


def spare(out: Path) -> Path:
    return out.parent / f".{out.name}.meshc-spare"


def test_a_rebuild_stages_in_the_spare_tree_and_touches_only_what_changed(
    built: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, out = built
    edit_spec(spec)
    build(spec, out)  # the first rebuild leaves the previous tree as the spare
    assert spare(out).is_dir()
    calls: list[str] = []
    for name in ("link", "mkdir", "rmdir", "unlink"):
        real = getattr(os, name)
        monkeypatch.setattr(
            os, name, lambda *a, _real=real, _name=name, **k: (calls.append(_name), _real(*a, **k))[1]
        )
    path = spec / "services" / "svc-0001.yaml"
    path.write_text(path.read_text().replace("port: 8181", "port: 8282", 1))
    before = scan_tree(spare(out))  # the tree before the first edit: svc-0001's files are its own there
    result = build(spec, out)
    monkeypatch.undo()
    assert read_tree(out) == clean_tree(spec, tmp_path)
    files = len(read_tree(out))
    assert 0 < len(result.written) < files // 3
    # The files of the last two builds' changes are relinked or rewritten; nothing else is touched.
    assert calls.count("link") + calls.count("unlink") <= 4 * len(result.written) < files
    # A spare file no other name links to is rewritten in place: no unlink (~2 ms each on a `discard` disk),
    # where the filesystem grants the write lease that tells nobody has it open (else it is replaced).
    after = scan_tree(out)
    own = [p for p in result.written if p in before and os.stat(out / p).st_nlink == 1]
    assert own
    if leases_work(tmp_path):
        assert all(after[p].inode == before[p].inode for p in own)
    # every file written, rewritten in place or anew, is recorded with the stat lstat finds after the swap
    assert dict(result.stats) == {p: after[p] for p in result.written}
    assert (
        calls.count("mkdir") <= 1 and calls.count("rmdir") == 0
    )  # at most the lock's parent, made if missing


def test_a_spare_file_a_reader_holds_open_is_replaced_not_rewritten(
    built: tuple[Path, Path], tmp_path: Path
) -> None:
    # A reader that opened a file when it was the output's still reads those bytes: the spare's own file is
    # rewritten in place only when nobody has it open (Linux grants the writer a lease only then).
    spec, out = built
    edit_spec(spec)
    build(spec, out)  # svc-0001's files now differ between the output and the spare (the first tree)
    path = spec / "services" / "svc-0001.yaml"
    path.write_text(path.read_text().replace("port: 8181", "port: 8282", 1))
    own = [p for p, e in scan_tree(spare(out)).items() if e.kind == "regular file" and "svc-0001" in p]
    victim = next(p for p in own if os.stat(spare(out) / p).st_nlink == 1)
    before = (spare(out) / victim).read_bytes()
    with open(spare(out) / victim, "rb") as reader:
        result = build(spec, out)
        assert victim in result.written
        assert reader.read() == before  # the reader's file kept its bytes
    assert read_tree(out) == clean_tree(spec, tmp_path)


_KILLED_AT_THE_SPARE_MANIFEST = """
import os, signal, sys
from compiler import cli

def killing(real, after):
    # killed once the spare's manifest is unlinked, or just before another file is renamed over it
    def call(*args, **kwargs):
        spare_manifest = str(args[-1]).endswith(".meshc-spare/MANIFEST.json")
        if spare_manifest and not after:
            os.kill(os.getpid(), signal.SIGKILL)
        done = real(*args, **kwargs)
        if spare_manifest:
            os.kill(os.getpid(), signal.SIGKILL)
        return done
    return call

os.unlink, os.replace = killing(os.unlink, after=True), killing(os.replace, after=False)
sys.exit(cli.main(sys.argv[1:]))
"""


def test_a_build_killed_as_it_replaces_the_spares_manifest_leaves_a_spare_the_next_build_takes(
    built: tuple[Path, Path], tmp_path: Path
) -> None:
    # The spare is meshc's while it holds a MANIFEST.json. Where the old one cannot be rewritten in place (a reader
    # holds it open), the new one takes its place in one rename: a build killed there once left a spare with none,
    # which every later build called "not a tree meshc left there" and left alone, with a warning each time.
    import subprocess

    from compiler.output.spare import OURS, spare_state

    spec, out = built
    edit_spec(spec)
    build(spec, out)  # the first tree is now the spare
    path = spec / "services" / "svc-0001.yaml"
    path.write_text(path.read_text().replace("port: 8181", "port: 8282", 1))
    with open(spare(out) / "MANIFEST.json", "rb"):  # no write lease while this is open: no rewrite in place
        killed = subprocess.run(
            [sys.executable, "-c", _KILLED_AT_THE_SPARE_MANIFEST, "build", str(spec), "-o", str(out)],
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert killed.returncode == -9, killed.stderr  # killed right there
    assert spare_state(spare(out)) == OURS
    result = build(spec, out)
    assert not result.notes, result.notes
    assert read_tree(out) == clean_tree(spec, tmp_path)
    assert not (spare(out) / "MANIFEST.json.meshc-new").exists()


def test_a_spare_tree_in_any_state_is_never_trusted(built: tuple[Path, Path], tmp_path: Path) -> None:
    """The spare is scratch: wrong bytes, strays, a file where a directory goes and the reverse are all replaced."""
    spec, out = built
    edit_spec(spec)
    build(spec, out)
    root = spare(out)
    files = sorted(p for p in read_tree(root))
    victim, other = files[0], files[-1]
    (root / victim).unlink()
    (root / victim).write_bytes(b"not what the output holds\n")  # same path, another inode
    (root / "stray.txt").write_text("stray\n")
    os.symlink("/etc/passwd", root / "link")
    directory = (root / other).parent
    shutil.rmtree(directory)
    directory.write_text("a file where a directory goes\n")
    (root / "puppet" / "data" / "extra-dir").mkdir()
    path = spec / "services" / "svc-0002.yaml"
    path.write_text(path.read_text().replace("port: 8080", "port: 8383", 1))
    build(spec, out)
    assert read_tree(out) == clean_tree(spec, tmp_path)
    assert sorted(p for p, e in scan_tree(out).items() if e.kind == "directory") == sorted(
        {str(Path(p).parent) for p in clean_tree(spec, tmp_path)} - {"."}
        | {str(q) for p in clean_tree(spec, tmp_path) for q in Path(p).parents if str(q) != "."}
    )


# ------------------------------------------------------------------ the partial path


def test_a_one_service_edit_takes_the_partial_path_and_lowers_its_neighbourhood_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = generate(tmp_path / "spec", 60, datacenters=3, clusters=4, deps=2, seed=5)
    out = tmp_path / "out"
    build(spec, out)
    settled(out)  # no file in the cache's clock tick (conftest.settled)
    lowered: list[int] = []
    lower = partial.lower

    def counted(found: Any, only: Any = None) -> Any:
        lowered.append(len(found.services))
        return lower(found, only)

    monkeypatch.setattr(partial, "lower", counted)
    paths = Paths(monkeypatch)
    monkeypatch.setattr(partial, "MAX_SHARE", 0.5)  # the default: the mesh is big enough
    mesh_files: list[
        str
    ] = []  # the shared files of mesh.yaml alone are kept, not rendered (compiler.partial.files)
    monkeypatch.setattr(puppet, "hiera_config", lambda mesh: mesh_files.append("hiera.yaml") or b"")
    edit_spec(spec)
    assert build(spec, out).written
    assert paths.partial == 1 and lowered and lowered[0] <= 30
    assert mesh_files == []
    monkeypatch.undo()
    assert read_tree(out) == clean_tree(spec, tmp_path)


def test_a_partial_build_renders_a_hand_edited_target_far_from_the_edit(
    built: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, out = built
    paths = Paths(monkeypatch)
    files = sorted(read_tree(out))
    far = next(p for p in files if p.startswith("kubernetes/") and "/00-" not in p and "svc-0001" not in p)
    shared = next(p for p in files if p.endswith("/00-cluster.yaml"))
    # A shared file of mesh.yaml alone: the partial build keeps those it can vouch for, and renders them all else.
    mesh_file = "puppet/hiera.yaml"
    for victim in (far, shared, mesh_file):
        data = (out / victim).read_bytes()
        (out / victim).write_bytes(data.replace(b"hier", b"HIER", 1).replace(b"meshc", b"MESHC", 1))
    edit_spec(spec)
    assert {far, shared, mesh_file} <= set(build(spec, out).written)
    assert paths.partial == 1
    assert read_tree(out) == clean_tree(spec, tmp_path)
    assert not build(spec, out).changed


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda body: body.update(recorded={"mesh": 1}), id="shape"),
        pytest.param(
            lambda body: body["recorded"]["services"].pop(sorted(body["recorded"]["services"])[0]),
            id="a-service-missing",
        ),
        pytest.param(
            lambda body: body["inputs"].update({"vm/nobody/dc-00": "0" * 64}), id="a-target-of-no-service"
        ),
    ],
)
def test_recorded_facts_meshc_did_not_write_are_never_used(
    built: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: Callable[[Any], None]
) -> None:
    """Facts checksummed but not in the shape meshc writes: the partial path does not run, the whole build does."""
    spec, out = built
    rewrite(out, damage)
    found = cached(out)
    assert found is not None and facts.recorded_of(found.recorded, found.inputs) is None
    paths = Paths(monkeypatch)
    edit_spec(spec)
    assert build(spec, out).changed and paths.partial == 0
    assert read_tree(out) == clean_tree(spec, tmp_path)


def test_the_shared_files_a_partial_build_keeps_read_mesh_yaml_alone(tmp_path: Path) -> None:
    # compiler.partial.files keeps every shared file but the cluster files from the previous tree: none may read
    # the services. Two specs with one mesh.yaml and different services must render them byte for byte alike.
    one = generate(tmp_path / "one", 12, datacenters=2, clusters=2, deps=2, seed=1)
    other = generate(tmp_path / "other", 30, datacenters=2, clusters=2, deps=3, seed=9)
    shutil.copyfile(one / "mesh.yaml", other / "mesh.yaml")

    def mesh_files(spec: Path) -> dict[str, bytes]:
        built = compile_dir(spec)
        return {
            a.path: a.data
            for a in built.artifacts
            if a.target is None and not a.path.endswith("00-cluster.yaml")
        }

    kept = mesh_files(one)
    assert "puppet/hiera.yaml" in kept and "puppet/data/common.yaml" in kept
    assert mesh_files(other) == kept


def test_the_caches_are_written_over_in_place_unless_another_name_links_to_them(
    built: tuple[Path, Path], tmp_path: Path
) -> None:
    """In place: no unlink, which frees and discards blocks on a `discard` disk; a linked file is never written into."""
    from compiler.output.documents import documents_path

    spec, out = built
    paths = [cache.cache_path(out), documents_path(out)]
    inodes = [os.stat(path).st_ino for path in paths]
    edit_spec(spec)
    build(spec, out)
    assert [os.stat(path).st_ino for path in paths] == inodes
    kept = []
    for n, path in enumerate(paths):
        os.link(path, tmp_path / f"elsewhere-{n}")
        kept.append(path.read_bytes())
    path = spec / "services" / "svc-0002.yaml"
    path.write_text(path.read_text().replace("port: 8080", "port: 8282", 1))
    build(spec, out)
    assert [(tmp_path / f"elsewhere-{n}").read_bytes() for n in range(2)] == kept
    assert all(os.stat(path).st_ino != inode for path, inode in zip(paths, inodes, strict=True))
    assert cached(out) is not None
    assert read_tree(out) == clean_tree(spec, tmp_path)


def test_a_rendering_bug_in_a_whole_build_leaves_the_spare_tree_as_it_was(
    built: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without a worker, the whole mesh is rendered before anything is staged: the spare tree, where the build
    # would stage, keeps the previous tree for the next build.
    spec, out = built
    edit_spec(spec)
    build(spec, out)  # the first rebuild leaves the previous tree as the spare
    before = read_tree(spare(out))
    mesh = spec / "mesh.yaml"
    mesh.write_text(
        mesh.read_text().replace('connect_timeout: "1s"', 'connect_timeout: "2s"', 1)
    )  # a whole build
    render_nerve = nerve.nerve

    def nowhere(
        workload: Workload,
    ) -> dict[str, Any] | None:  # every VM pool registers where no watcher looks
        document = render_nerve(workload)
        if document is None:
            return None
        entry = document["services"][workload.service]
        return {"services": {workload.service: {**entry, "zk_path": "/nowhere"}}}

    monkeypatch.setattr(nerve, "nerve", nowhere)
    with pytest.raises(InternalError):
        build(spec, out)
    assert read_tree(spare(out)) == before
