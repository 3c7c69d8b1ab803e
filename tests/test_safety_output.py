"""Issue 9, the output tree: meshc replaces only what it wrote, locks, cleans up, never opens what it did not write.

Hostile cases run the real command line in a child process and check the exit code, the one-line
message, that nothing outside the output directory changed, and that a previous output is
byte-identical. Interleavings are forced with hooks and marker files, never with sleeps.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import EXAMPLE, ROOT, meshc_in_process, settled

from compiler.emit import Artifact
from compiler.output.disk import read_tree
from compiler.output.manifest import MANIFEST, render_tree
from tests.test_rollout_build import add_timeout_change, start_rollout

ENV = {**{k: v for k, v in os.environ.items() if k != "MESHC_DEBUG"}, "PYTHONPATH": str(ROOT)}
Snapshot = dict[str, tuple[str, bytes]]


def meshc(
    *args: str | Path, cwd: Path = ROOT, timeout: float | None = None
) -> subprocess.CompletedProcess[str]:
    """The command line as users run it: in this process, or in a child process killed after `timeout` seconds.

    A test where the old meshc hung (a FIFO opened) passes a timeout, so that a hang fails it.
    """
    if timeout is None:
        result = meshc_in_process(*args, cwd=cwd)
        assert "Traceback" not in result.stdout + result.stderr
        return result
    result = subprocess.run(
        [sys.executable, "-m", "compiler", *map(str, args)],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert "Traceback" not in result.stdout + result.stderr
    return result


def snapshot(root: Path) -> Snapshot:
    """Every entry under `root` (root included) by lstat: kind and content, read only from regular files and links."""
    found: Snapshot = {}
    for path in [root, *sorted(root.rglob("*"))]:
        info = path.lstat()
        if stat.S_ISREG(info.st_mode):
            content = path.read_bytes()
        elif stat.S_ISLNK(info.st_mode):
            content = os.readlink(path).encode()
        else:
            content = b""
        found[path.relative_to(root).as_posix()] = (f"{stat.S_IFMT(info.st_mode):o}:{info.st_ino}", content)
    return found


def one_line_error(result: subprocess.CompletedProcess[str], code: int, label: str | Path) -> str:
    """The single `meshc: error: <path>: <sentence>` line of a refused or failed run, checked and returned."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    prefix = f"meshc: error: {label}: "
    assert lines[0].startswith(prefix), lines[0]
    sentence = lines[0].removeprefix(prefix)
    # words, not an errno
    assert re.search(r"[a-z]{3,} [a-z]{2,}", sentence) and not re.fullmatch(r"\d+", sentence), sentence
    return sentence


def variant(root: Path, name: str, file: str, old: str, new: str) -> Path:
    """A copy of the example spec with one edit."""
    spec = root / name
    shutil.copytree(EXAMPLE, spec)
    path = spec / file
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    return spec


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A project directory (tmp_path/project): a git repository holding the spec and a file of the user's."""
    project = tmp_path / "project"
    shutil.copytree(EXAMPLE, project / "mesh-spec")
    (project / "notes.txt").write_text("mine\n")
    if shutil.which("git"):
        subprocess.run(["git", "init", "-q", str(project)], check=True)
    else:
        (project / ".git").mkdir()
    return project


# ------------------------------------------------------------------ item 1: replace only what meshc wrote


@pytest.mark.parametrize(
    ("out", "reason"),
    [
        (".", "is the current directory"),
        ("mesh-spec", "is the spec directory"),
        ("..", "contains the current directory"),
        (".git", "is inside a .git directory"),
        (".git/meshc", "is inside a .git directory"),
    ],
)
def test_build_refuses_the_project_the_spec_and_their_parents(workspace: Path, out: str, reason: str) -> None:
    before = snapshot(workspace.parent)
    sentence = one_line_error(meshc("build", "mesh-spec", "-o", out, cwd=workspace), 2, out)
    assert sentence.startswith(reason), sentence
    assert snapshot(workspace.parent) == before  # nothing touched: not .git, not the spec, not notes.txt


def test_build_refuses_a_directory_that_contains_the_spec(workspace: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    before = snapshot(workspace)
    sentence = one_line_error(
        meshc("build", workspace / "mesh-spec", "-o", workspace, cwd=elsewhere), 2, workspace
    )
    assert sentence.startswith("contains the spec directory"), sentence
    assert snapshot(workspace) == before


@pytest.mark.parametrize(
    "out", ["mesh-spec/services/zz.yaml", "mesh-spec/out", "mesh-spec/inventory", "inside"]
)
def test_build_refuses_an_output_inside_the_spec(workspace: Path, out: str) -> None:
    # A tree in services/ made every later command fail ([file-type]); its cache and lock land beside it, in the
    # spec too. "inside" is a symlink to a spec directory: the build would go through it.
    (workspace / "inside").symlink_to("mesh-spec/inventory")
    before = snapshot(workspace.parent)
    sentence = one_line_error(meshc("build", "mesh-spec", "-o", out, cwd=workspace), 2, out)
    spec = (workspace / "mesh-spec").resolve()
    assert sentence.startswith(f"is inside the spec directory ({spec}); "), sentence
    assert snapshot(workspace.parent) == before


def test_promote_refuses_an_output_inside_the_spec(tmp_path: Path) -> None:
    repo, spec, _ = start_rollout(tmp_path / "repo")
    add_timeout_change(repo)
    before = snapshot(spec)  # not the repository: git may refresh its index while meshc reads the history
    out = spec / "out"
    sentence = one_line_error(meshc("promote", "--spec", spec, "-o", out, "--force", cwd=repo), 2, out)
    assert sentence.startswith(f"is inside the spec directory ({spec.resolve()}); "), sentence
    # rollout.yaml keeps its pins: the refusal comes before anything is written
    assert snapshot(spec) == before


@pytest.mark.parametrize(
    "content",
    [
        {"notes.txt": b"mine\n"},
        {"sub/deep.txt": b"mine\n"},
        {MANIFEST: b'{"name": "a package manifest", "version": 1}\n'},  # a MANIFEST.json, but not meshc's
        {MANIFEST: b'{"format": 1, "meshc_version": "0.1.0", "files": {"a": "not a hash"}, "targets": {}}\n'},
        {MANIFEST: b"[]\n", "x": b""},
    ],
)
def test_build_refuses_a_non_empty_directory_meshc_did_not_write(
    tmp_path: Path, content: dict[str, bytes]
) -> None:
    out = tmp_path / "out"
    for relative, data in content.items():
        (out / relative).parent.mkdir(parents=True, exist_ok=True)
        (out / relative).write_bytes(data)
    before = snapshot(tmp_path)
    sentence = one_line_error(meshc("build", EXAMPLE, "-o", out), 2, out)
    assert sentence.startswith("is not empty and holds no MANIFEST.json written by meshc"), sentence
    assert snapshot(tmp_path) == before


def test_a_tree_is_meshc_s_by_its_cache_or_by_its_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A valid build cache holds the sha256 of the MANIFEST.json it was written with (compiler.output.guard
    # .check_replaceable's `vouched`): the manifest's shape needs no second look. Once the manifest is not that
    # one, the cache vouches for nothing, and a manifest meshc did not write is refused as before.
    from compiler.output import guard

    spec = shutil.copytree(EXAMPLE, tmp_path / "spec", ignore=shutil.ignore_patterns("rollout.yaml"))
    out = tmp_path / "out"
    assert meshc("build", spec, "-o", out).returncode == 0
    settled(out)  # no file in the cache's clock tick (conftest.settled)
    looked: list[Path] = []
    read_manifest = guard.read_manifest
    monkeypatch.setattr(guard, "read_manifest", lambda root: looked.append(root) or read_manifest(root))
    assert meshc("build", spec, "-o", out).stdout == f"{out}: up to date, nothing written\n"
    assert looked == []  # vouched for by the cache
    (out / MANIFEST).write_text("[]\n")
    before = snapshot(tmp_path)
    sentence = one_line_error(meshc("build", spec, "-o", out), 2, out)
    assert sentence.startswith("is not empty and holds no MANIFEST.json written by meshc"), sentence
    assert looked and snapshot(tmp_path) == before


@pytest.mark.parametrize("where", [".git", "puppet/.git"])
def test_build_refuses_a_meshc_tree_that_holds_a_git_repository(tmp_path: Path, where: str) -> None:
    out = tmp_path / "out"
    assert meshc("build", EXAMPLE, "-o", out).returncode == 0
    (out / where).mkdir()
    (out / where / "HEAD").write_text("ref: refs/heads/main\n")
    before = snapshot(tmp_path)
    sentence = one_line_error(meshc("build", EXAMPLE, "-o", out), 2, out)
    assert sentence.startswith(f"holds {where}, a git repository"), sentence
    assert snapshot(tmp_path) == before


def test_build_writes_into_an_absent_an_empty_or_its_own_directory(tmp_path: Path) -> None:
    empty, absent = tmp_path / "empty", tmp_path / "a" / "b" / "absent"
    empty.mkdir()
    for out in (empty, absent):
        result = meshc("build", EXAMPLE, "-o", out)
        assert result.returncode == 0, result.stderr
        assert read_tree(out) == read_tree(ROOT / "output")
    # an extra in a tree meshc built is reported and replaced, as before
    (empty / "stray.txt").write_text("extra\n")
    result = meshc("build", EXAMPLE, "-o", empty)
    assert (result.returncode, result.stdout) == (0, f"{empty}: 0 file(s) written, 1 removed\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".empty.meshc-cache",  # the rollout build's cache and spare tree (the previous output, to stage in)
        ".empty.meshc-spare",
        "a",
        "empty",
    ]  # no lock file, staging or parked tree left


# ------------------------------------------------------------------ item 2: files, symlinks, mount points


def _hostile_paths(root: Path) -> dict[str, str]:
    """Output paths that are not a directory meshc may replace, and the start of the sentence each gets."""
    (root / "afile").write_text("mine\n")
    (root / "dangling").symlink_to("nowhere")
    (root / "to-file").symlink_to("afile")
    (root / "loop-a").symlink_to("loop-b")
    (root / "loop-b").symlink_to("loop-a")
    os.mkfifo(root / "fifo")
    return {
        "afile": "is a regular file, not a directory",
        "afile/sub": "lies under afile, which is not a directory",
        "dangling": "is a dangling symlink (-> nowhere)",
        "to-file": "is a symlink to a regular file, not a directory",
        "loop-a": "is a symlink loop",
        "fifo": "is a named pipe (FIFO), not a directory",
    }


@pytest.mark.parametrize("command", ["build", "check"])
def test_build_and_check_refuse_files_dangling_links_and_paths_under_a_file(
    tmp_path: Path, command: str
) -> None:
    # check as build: a path that can hold no tree is refused, not reported as a tree with every file missing
    cases = _hostile_paths(tmp_path)
    before = snapshot(tmp_path)
    for out, start in cases.items():
        sentence = one_line_error(meshc(command, EXAMPLE, "-o", out, cwd=tmp_path), 2, out)
        assert sentence.startswith(start), (out, sentence)
    assert snapshot(tmp_path) == before  # the file is kept where it was, not swapped away into a hidden copy


def test_a_symlink_to_a_directory_is_built_through(tmp_path: Path) -> None:
    """The link stays a link; its target directory becomes the tree, and the next build sees it up to date."""
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to("real")
    result = meshc("build", EXAMPLE, "-o", "link", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "link").is_symlink() and os.readlink(tmp_path / "link") == "real"
    assert read_tree(tmp_path / "real") == read_tree(ROOT / "output")
    assert meshc("build", EXAMPLE, "-o", "link", cwd=tmp_path).stdout == "link: up to date, nothing written\n"
    assert meshc("check", EXAMPLE, "-o", "link", cwd=tmp_path).returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".real.meshc-cache",  # the build cache and spare tree sit beside the real directory
        ".real.meshc-spare",
        "link",
        "real",
    ]


@contextlib.contextmanager
def tmpfs(mount_point: Path, size: str) -> Iterator[Path]:
    """A real tmpfs of `size` at `mount_point` (root only); skips where mounting is not allowed."""
    mount_point.mkdir(parents=True, exist_ok=True)
    mounted = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
            capture_output=True,
            text=True,
        )
        if shutil.which("mount") and os.geteuid() == 0
        else None
    )
    if mounted is None or mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip() if mounted else 'not root'}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


def test_a_mount_point_is_refused_and_a_directory_inside_it_is_fine(tmp_path: Path) -> None:
    """On purpose: publishing renames the whole directory, which a mount point cannot be, and staging beside it
    would land on the parent filesystem; so meshc refuses the mount point and names a directory inside it."""
    with tmpfs(tmp_path / "mnt", "8m") as mnt:
        before = snapshot(tmp_path)
        sentence = one_line_error(meshc("build", EXAMPLE, "-o", "mnt", cwd=tmp_path), 2, "mnt")
        assert sentence.startswith("is a mount point;") and sentence.endswith("(e.g. mnt/output)"), sentence
        assert snapshot(tmp_path) == before  # no staging copy left on the parent filesystem
        result = meshc("build", EXAMPLE, "-o", "mnt/output", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert sorted(p.name for p in mnt.iterdir()) == [".output.meshc-cache", "output"]


# ------------------------------------------------------------------ item 6: one build at a time

# A child that runs the command line with one hook installed; "pause" hooks wait for a marker file.
HOOKED = r"""
import errno, os, shutil, sys, time
from pathlib import Path

hook, paused, resume, args = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4:]

def pause():
    paused.write_text(str(os.getpid()))
    deadline = time.monotonic() + 120
    while not resume.exists() and time.monotonic() < deadline:
        time.sleep(0.01)

if hook == "pause-before-link":  # the moment a build links "unchanged" files from output/ into its staging tree
    real_link = os.link
    def link(*a, **k):
        if not paused.exists():
            pause()
        return real_link(*a, **k)
    os.link = link
elif hook == "enospc-at-third-write":
    real_write = os.write  # the writer writes each staged file's bytes with one os.write
    count = [0]
    def write(fd, data):
        count[0] += 1
        if count[0] == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)
    os.write = write
elif hook == "unreadable-spec":
    import compiler.spec.load as load
    def spec_files(spec_dir):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(spec_dir / "mesh.yaml"))
    load.spec_files = spec_files
elif hook == "renderer-bug":  # EDS files written where no cluster reads them: an invariant of the rendering breaks
    from compiler.render import envoy
    real_eds_path = envoy.eds_path
    envoy.eds_path = lambda mesh, service: real_eds_path(mesh, service) + ".tmp"
if args[0] == "write_tree":  # the writer alone, without the command line's lock
    import json
    from compiler.output.writer import write_tree
    files = {path: data.encode() for path, data in json.loads(Path(args[2]).read_text()).items()}
    write_tree(Path(args[1]), files)
    sys.exit(0)
from compiler.cli import main
sys.exit(main(args))
"""


def hooked(hook: str, markers: Path, *args: str | Path, stderr: int | None = None) -> subprocess.Popen[str]:
    markers.mkdir(exist_ok=True)
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            HOOKED,
            hook,
            str(markers / "paused"),
            str(markers / "resume"),
            *map(str, args),
        ],
        cwd=ROOT,
        env=ENV,
        stderr=stderr,
        text=True,
    )


def wait_for(path: Path, child: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120
    while not path.exists():
        assert child.poll() is None, f"the child finished (exit {child.returncode}) before reaching its hook"
        assert time.monotonic() < deadline, "the child never reached its hook"
        time.sleep(0.01)


def first_stderr_line(child: subprocess.Popen[str], seconds: float) -> str:
    """The first line a child writes to stderr ('' if it exits first without one)."""
    assert child.stderr is not None
    ready, _, _ = select.select([child.stderr], [], [], seconds)
    return child.stderr.readline() if ready else ""


def tree_with(**changed: str) -> dict[str, bytes]:
    """A small output tree (manifest included); `f0="x"` gives file t0/f0.json other bytes."""
    return render_tree(
        [
            Artifact(
                path=f"t{i % 3}/f{i}.json",
                data=changed.get(f"f{i}", f"file {i}").encode(),
                target=f"t{i % 3}",
            )
            for i in range(6)
        ]
    )


def test_without_a_lock_this_interleaving_publishes_a_tree_nobody_rendered(tmp_path: Path) -> None:
    """Why builds lock: the writer alone, run by two processes in the issue's interleaving, publishes a mixed tree.

    P2 (tree C) pauses before linking the files it found unchanged in output/; P1 (tree B) writes
    and swaps; P2 resumes and links B's files into C's tree.
    """
    out = tmp_path / "out"
    a, b, c = tree_with(), tree_with(f0="written by B"), tree_with(f1="written by C")
    write = tmp_path / "hooks"
    write.mkdir()
    for name, files in (("b", b), ("c", c)):
        (write / f"{name}.json").write_text(json.dumps({p: d.decode() for p, d in files.items()}))
    from compiler.output.writer import write_tree

    write_tree(out, a)
    p2 = hooked("pause-before-link", tmp_path / "p2", "write_tree", out, write / "c.json")
    wait_for(tmp_path / "p2" / "paused", p2)
    p1 = hooked("none", tmp_path / "p1", "write_tree", out, write / "b.json")
    assert p1.wait(timeout=120) == 0  # nothing makes P1 wait for P2
    (tmp_path / "p2" / "resume").touch()
    assert p2.wait(timeout=120) == 0
    published = read_tree(out)
    assert published not in (a, b, c)  # C's manifest and changed file, with B's t0/f0.json linked in
    assert published["t0/f0.json"] == b["t0/f0.json"] and published[MANIFEST] == c[MANIFEST]


def test_concurrent_builds_wait_for_each_other_and_publish_what_a_spec_renders(tmp_path: Path) -> None:
    """The same interleaving through the command line: the second build waits for the lock, then builds on the first."""
    out = tmp_path / "output"
    spec_b = variant(tmp_path, "spec-b", "services/upload.yaml", "timeout: 2s", "timeout: 3s")
    spec_c = variant(tmp_path, "spec-c", "services/edge.yaml", "timeout: 30s", "timeout: 40s")
    assert meshc("build", EXAMPLE, "-o", out).returncode == 0
    p2 = hooked("pause-before-link", tmp_path / "p2", "build", spec_c, "-o", out)
    wait_for(tmp_path / "p2" / "paused", p2)
    p1 = subprocess.Popen(
        [sys.executable, "-m", "compiler", "build", str(spec_b), "-o", str(out)],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = first_stderr_line(p1, 120)  # P1 says it waits; P2 stays paused until then, so P1 cannot slip past
    (tmp_path / "p2" / "resume").touch()
    assert p2.wait(timeout=120) == 0
    assert p1.wait(timeout=120) == 0
    check_b = meshc("check", spec_b, "-o", out)
    # P1 ran last, on top of P2's whole tree (unlocked: a mix of B and C)
    assert check_b.returncode == 0, check_b.stdout
    assert line.startswith("meshc: waiting for another meshc build or check of this output (lock "), line
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".output.meshc-cache",
        "output",
        "p2",
        "spec-b",
        "spec-c",
    ]  # the lock file is gone too


def test_a_second_build_or_check_gives_up_after_its_lock_timeout(tmp_path: Path) -> None:
    out = tmp_path / "output"
    spec_c = variant(tmp_path, "spec-c", "services/edge.yaml", "timeout: 30s", "timeout: 40s")
    assert meshc("build", EXAMPLE, "-o", out).returncode == 0
    before = snapshot(out)
    lock = Path(os.path.realpath(tmp_path)) / ".output.meshc-lock"
    waiting = f"meshc: waiting for another meshc build or check of this output (lock {lock})"
    p2 = hooked("pause-before-link", tmp_path / "p2", "build", spec_c, "-o", out)
    try:
        wait_for(tmp_path / "p2" / "paused", p2)
        for command in ("build", "check"):
            for timeout in ("0.2", "0"):
                result = meshc(command, EXAMPLE, "-o", out, "--lock-timeout", timeout)
                assert result.returncode == 4, result.stderr
                told = [waiting] if timeout != "0" else []  # with no time to wait, it does not say it waits
                assert result.stderr.splitlines() == [
                    *told,
                    f"meshc: error: {out}: another meshc build or check still holds its lock (.output.meshc-lock) "
                    f"after {timeout}s; try again when it has finished",
                ]
        # the paused build has not swapped yet, and the refused ones wrote nothing
        assert snapshot(out) == before
    finally:
        (tmp_path / "p2" / "resume").touch()
        assert p2.wait(timeout=120) == 0
    assert meshc("check", spec_c, "-o", out).returncode == 0


@pytest.mark.parametrize("kind", ["file", "directory", "symlink", "fifo"])
def test_something_else_at_the_lock_path_is_never_removed(tmp_path: Path, kind: str) -> None:
    # A build removes its lock file when done: what it did not make there (an empty regular file) it must neither
    # lock through nor remove. A build refuses, naming it; a check goes on unlocked (no build can lock meanwhile).
    spec = shutil.copytree(EXAMPLE, tmp_path / "spec", ignore=shutil.ignore_patterns("rollout.yaml"))
    out = tmp_path / "k"
    assert meshc("build", spec, "-o", out).returncode == 0
    lock = tmp_path / ".k.meshc-lock"
    if kind == "file":
        lock.write_text("my notes\n")
    elif kind == "directory":
        lock.mkdir()
        (lock / "notes.txt").write_text("my notes\n")
    elif kind == "symlink":
        lock.symlink_to(tmp_path / "elsewhere")
    else:
        os.mkfifo(lock)
    what = {"file": "a regular file holding data", "directory": "a directory", "symlink": "a symlink"}
    before = snapshot(tmp_path)
    sentence = one_line_error(meshc("build", spec, "-o", out, timeout=60), 2, lock)
    assert sentence == (
        f"is {what.get(kind, 'a named pipe (FIFO)')}, not the lock file meshc makes beside the output; meshc never "
        "removes what it did not write: move it away, then build again"
    )
    assert meshc("check", spec, "-o", out, timeout=60).returncode == 0
    assert snapshot(tmp_path) == before


def test_the_empty_lock_file_a_killed_build_left_is_taken_and_removed(tmp_path: Path) -> None:
    out = tmp_path / "k"
    (tmp_path / ".k.meshc-lock").touch()  # what a build killed while it held the lock leaves
    spec = shutil.copytree(EXAMPLE, tmp_path / "spec", ignore=shutil.ignore_patterns("rollout.yaml"))
    assert meshc("build", spec, "-o", out).returncode == 0
    assert not os.path.lexists(tmp_path / ".k.meshc-lock")


# ------------------------------------------------------------------ item 7: no staging left behind


def test_disk_full_on_a_real_tmpfs_leaves_no_staging_and_the_previous_output(tmp_path: Path) -> None:
    """ENOSPC for real: a tmpfs with room for half of what the next build writes."""
    # a new trust domain: every identity changes
    changed = variant(tmp_path, "changed", "mesh.yaml", "trust_domain: box.mesh", "trust_domain: box2.mesh")
    assert meshc("build", changed, "-o", tmp_path / "probe").returncode == 0
    new, old = read_tree(tmp_path / "probe"), read_tree(ROOT / "output")
    page = os.sysconf("SC_PAGE_SIZE")
    needed = sum(-(-len(data) // page) * page for path, data in new.items() if old.get(path) != data)
    with tmpfs(tmp_path / "small", "16m") as small:
        out = small / "output"
        assert meshc("build", EXAMPLE, "-o", out).returncode == 0
        usage = os.statvfs(small)
        used = (usage.f_blocks - usage.f_bfree) * usage.f_frsize
        subprocess.run(["mount", "-o", f"remount,size={used + needed // 2}", str(small)], check=True)
        before = snapshot(small)
        sentence = one_line_error(meshc("build", changed, "-o", out), 4, out)
        assert sentence == "cannot write the new tree: no space left on device; the output is left as it was"
        assert snapshot(small) == before  # byte-identical previous output, and no partial staging tree
        usage = os.statvfs(small)
        assert (usage.f_blocks - usage.f_bfree) * usage.f_frsize == used  # the space is free again


def test_an_injected_write_failure_leaves_no_staging_and_the_previous_output(tmp_path: Path) -> None:
    """The same without root: ENOSPC raised at the third file write (the fallback where no tmpfs can be mounted)."""
    out = tmp_path / "output"
    changed = variant(tmp_path, "changed", "mesh.yaml", "timeout: 15s", "timeout: 20s")
    assert meshc("build", EXAMPLE, "-o", out).returncode == 0
    before = snapshot(tmp_path)
    child = hooked(
        "enospc-at-third-write", tmp_path / "hooks", "build", changed, "-o", out, stderr=subprocess.PIPE
    )
    _, err = child.communicate(timeout=120)
    assert child.returncode == 4, err
    assert (
        err
        == f"meshc: error: {out}: cannot write the new tree: no space left on device; the output is left as it was\n"
    )
    assert {k: v for k, v in snapshot(tmp_path).items() if not k.startswith("hooks")} == before


def test_a_previous_tree_that_cannot_be_removed_is_an_environment_failure(tmp_path: Path) -> None:
    """An immutable file (chattr +i) in the old tree: the new tree is published, and the message says what is left."""
    out = tmp_path / "output"
    assert meshc("build", EXAMPLE, "-o", out).returncode == 0
    stuck = out / "stray.txt"
    stuck.write_text("extra\n")
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(stuck)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available on this filesystem")
    try:
        changed = variant(tmp_path, "changed", "services/upload.yaml", "timeout: 2s", "timeout: 3s")
        # A child process: the next build removes a leftover only once the build that left it is dead.
        result = meshc("build", changed, "-o", out, timeout=120)
        [leftover] = [p for p in tmp_path.iterdir() if ".meshc-new-" in p.name]
        sentence = one_line_error(result, 4, leftover)
        assert sentence.startswith(
            "the new output is in place, but this copy of the previous one cannot be removed: "
        ), sentence
        assert meshc("check", changed, "-o", out).returncode == 0
    finally:
        for path in tmp_path.rglob("stray.txt"):
            subprocess.run([chattr, "-i", str(path)], check=True)
    # the next build removes the dead build's leftover
    assert meshc("build", changed, "-o", out).returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [".output.meshc-cache", "changed", "output"]


# ------------------------------------------------------------------ item 8: never open what meshc did not write


def _special_files(out: Path) -> dict[str, str]:
    """A FIFO, a socket, a symlink to a secret outside, and (as root) a device, in a built tree; their kinds."""
    os.mkfifo(out / "fifo")
    # a socket path must fit in 108 bytes; made short, then moved
    with tempfile.TemporaryDirectory(dir="/tmp") as short:
        server = socket.socket(socket.AF_UNIX)
        server.bind(f"{short}/s")
        server.close()
        os.rename(f"{short}/s", out / "sock")
    secret = out.parent / "secret.txt"
    secret.write_text("do not echo me\n")
    (out / "link").symlink_to(secret)
    kinds = {"fifo": "named pipe (FIFO)", "sock": "socket", "link": "symlink"}
    with contextlib.suppress(PermissionError):  # needs root (CAP_MKNOD)
        os.mknod(out / "null", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
        kinds["null"] = "character device"
    return kinds


@pytest.mark.parametrize("rollout", [True, False], ids=["rollout", "plain"])
def test_non_regular_files_in_output_are_extras_never_opened(tmp_path: Path, rollout: bool) -> None:
    """Both checks (a rollout's streams every wave's tree; a plain spec's, the incremental build's) describe what is
    at a rendered path without opening it."""
    spec = EXAMPLE
    if not rollout:
        spec = tmp_path / "plain-spec"
        shutil.copytree(EXAMPLE, spec, ignore=shutil.ignore_patterns("rollout.yaml"))
    out = tmp_path / "output"
    assert meshc("build", spec, "-o", out).returncode == 0
    kinds = _special_files(out)
    # A FIFO at a rendered path too: opening it would block until a writer comes, i.e. forever.
    rendered = out / "kubernetes/kube-sjc-a/upload/upload.yaml"
    rendered.unlink()
    os.mkfifo(rendered)
    # And a symlink at a rendered path, to a secret outside: following it would diff (print) the secret.
    linked = out / "puppet/data/common.yaml"
    linked.unlink()
    linked.symlink_to(tmp_path / "secret.txt")
    outside = {
        p: v
        for p, v in snapshot(tmp_path).items()
        if not p.startswith(("output", ".output.meshc-", "plain-spec"))
    }
    check = meshc("check", spec, "-o", out, timeout=60)  # old meshc: TimeoutExpired here
    assert check.returncode == 1, check.stderr
    lines = check.stdout.splitlines()
    for name in kinds:
        assert f"  extra        {out.as_posix()}/{name}" in lines
    at = lines.index(f"  hand-edited  {out.as_posix()}/kubernetes/kube-sjc-a/upload/upload.yaml")
    assert lines[at + 1] == "      (not compared: a named pipe (FIFO) on disk, not a regular file)"
    at = lines.index(f"  hand-edited  {out.as_posix()}/puppet/data/common.yaml")
    assert lines[at + 1] == "      (not compared: a symlink on disk, not a regular file)"
    assert "do not echo me" not in check.stdout
    build = meshc("build", spec, "-o", out, timeout=60)
    assert build.returncode == 0, build.stderr
    assert build.stdout == f"{out}: 2 file(s) written, {len(kinds)} removed\n"
    assert meshc("check", spec, "-o", out).returncode == 0
    assert not rollout or read_tree(out) == read_tree(ROOT / "output")
    # the secret untouched
    assert {
        p: v
        for p, v in snapshot(tmp_path).items()
        if not p.startswith(("output", ".output.meshc-", "plain-spec"))
    } == outside


def _peak_rss_kib(*args: str | Path) -> tuple[int, str]:
    """Run the command line and return (peak RSS in KiB, stdout) of that child alone."""
    child = subprocess.Popen(
        [sys.executable, "-m", "compiler", *map(str, args)], env=ENV, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    out = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_maxrss, out


def test_a_huge_file_in_output_is_hashed_in_chunks_not_read_whole(tmp_path: Path) -> None:
    """128 MiB (sparse) at a rendered path and as an extra: build and check stay near their usual memory."""
    out = tmp_path / "output"
    assert meshc("build", EXAMPLE, "-o", out).returncode == 0
    baseline, _ = _peak_rss_kib("check", EXAMPLE, "-o", out)
    size = 128 << 20  # twice the margin below: reading either file whole would exceed it
    huge = out / "puppet/data/common.yaml"
    assert huge.is_file()
    for path in (huge, out / "huge.bin"):
        path.unlink(missing_ok=True)
        with path.open("wb") as handle:
            handle.truncate(size)
    peak, report = _peak_rss_kib("check", EXAMPLE, "-o", out)
    assert peak < baseline + 64 * 1024, (peak, baseline)  # reading either file whole would add 128 MiB
    assert f"  hand-edited  {out.as_posix()}/puppet/data/common.yaml" in report.splitlines()
    assert (
        f"      (not compared: {size:,} bytes on disk, more than the 16 MiB meshc compares as data)"
        in report.splitlines()
    )
    peak, report = _peak_rss_kib("build", EXAMPLE, "-o", out)
    assert peak < baseline + 64 * 1024, (peak, baseline)
    assert report == f"{out}: 1 file(s) written, 1 removed\n"
    assert read_tree(out) == read_tree(ROOT / "output")


# ------------------------------------------------------------------ item 11: exit codes 3 and 4


def test_a_read_only_filesystem_is_an_environment_failure(tmp_path: Path) -> None:
    changed = variant(tmp_path, "changed", "services/upload.yaml", "timeout: 2s", "timeout: 3s")
    with tmpfs(tmp_path / "ro", "16m") as ro:
        out = ro / "output"
        assert meshc("build", EXAMPLE, "-o", out).returncode == 0
        subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
        before = snapshot(ro)
        sentence = one_line_error(meshc("build", changed, "-o", out), 4, out)
        assert sentence == "cannot create its lock file .output.meshc-lock beside it: read-only file system"
        assert snapshot(ro) == before
        # a check reads: no build can run there, so it goes on unlocked
        check = meshc("check", changed, "-o", out)
        assert check.returncode == 1 and check.stdout.startswith(f"{out}: not what the spec renders (")


def test_an_os_error_reading_the_spec_exits_4_with_path_and_cause(tmp_path: Path) -> None:
    child = hooked(
        "unreadable-spec",
        tmp_path / "hooks",
        "build",
        "mesh-spec",
        "-o",
        tmp_path / "out",
        stderr=subprocess.PIPE,
    )
    _, err = child.communicate(timeout=120)
    assert (child.returncode, err) == (4, "meshc: error: mesh-spec/mesh.yaml: permission denied\n")
    assert not (tmp_path / "out").exists()


def test_a_broken_compiler_invariant_exits_3_not_2(tmp_path: Path) -> None:
    """A rendering that violates an invariant is a bug in meshc (exit 3), not an invalid spec (exit 2)."""
    child = hooked(
        "renderer-bug",
        tmp_path / "hooks",
        "build",
        "mesh-spec",
        "-o",
        tmp_path / "out",
        stderr=subprocess.PIPE,
    )
    _, err = child.communicate(timeout=120)
    assert child.returncode == 3, err
    lines = err.splitlines()
    assert lines[0].startswith("meshc: internal error: mesh-spec/services/")
    assert all(line.endswith("(a meshc bug; please report it)  [internal]") for line in lines)
    assert "which 0 Synapse entries write" in err and "Found " not in err
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ smaller truths


def test_ci_waits_for_the_dpkg_lock() -> None:
    """Another apt process on a fresh machine must not fail CI at once: every apt-get waits for the lock."""
    calls = [
        line for line in (ROOT / ".ci/run").read_text().splitlines() if line.lstrip().startswith("apt-get")
    ]
    assert calls and all("-o DPkg::Lock::Timeout=600" in line for line in calls), calls


def test_check_reports_on_stdout_from_disk_to_rendering(tmp_path: Path) -> None:
    """Like diff (base → head, old → new): what a rebuild would change, from the file on disk to the rendering."""
    out = tmp_path / "output"
    assert meshc("build", EXAMPLE, "-o", out).returncode == 0
    changed = variant(tmp_path, "changed", "services/upload.yaml", "timeout: 2s", "timeout: 3s")
    result = meshc("check", changed, "-o", out)
    assert result.returncode == 1 and result.stderr == ""
    assert any(line.endswith("route.timeout: 2s → 3s") for line in result.stdout.splitlines()), result.stdout
