"""Part of a big build's targets, laid out and written by a forked worker into the same staging tree.

After `render`, a full build at 1,000 services spends ~1.1 s CPU in the backends and ~0.4 s creating
10,600 files, all of it on one core. The worker is forked once the staging tree exists: it inherits the
rendered sidecars, runs the backends for its targets, writes their files beside the parent's (its own
fsync helper flushing them, compiler.output.flusher), and hands back through a memory file what the
parent needs of them: each file's path, sha256 and target for MANIFEST.json, the paths it wrote and the
directories it made. The parent does the rest of the targets, the shared files and the manifest.

Beside the spare tree (compiler.output.spare.Recycled) the worker writes nothing: it spools its files for the parent
to stage (compiler.output.spool), since staging there changes what the spare holds as it goes.

A worker that fails in any way (an exception, a crash, a kill, an fsync its helper could not do) has its
targets done again by the parent, in-process, over whatever it left in the staging tree: a failure is then
reported by the very code and with the very message a build without a worker gives.
"""

from __future__ import annotations

import marshal
import os
import signal
from collections.abc import Callable, Iterable, Iterator, Mapping
from itertools import repeat
from typing import TYPE_CHECKING

from compiler.diagnostics import InternalError, SpecError
from compiler.output import durable
from compiler.output.disk import OnDisk, write_all
from compiler.output.forked import fork_child
from compiler.output.spool import spool_end, spool_files, stage_spooled
from compiler.output.staging import NewFile, Staging, new_file

if TYPE_CHECKING:
    from compiler.emit import Artifact

Entry = tuple[str, str, "str | None"]  # (path, sha256, target) of a file, as MANIFEST.json lists it

# From this many targets to lay out on, a build forks a worker that lays out and writes about half of them.
PARALLEL_FROM = 200
# The worker's share of the targets. The build also lays out the shared files and MANIFEST.json and takes in the
# worker's files; the worker of a plain build also records the document cache and waits for its fsyncs, directories
# included. At 1,000 services either side waited 0-270 ms for the other with 0.52 and 0.54, 0-110 ms with 0.48 (6
# plain builds each).
WORKER_SHARE = 0.48


class Worker:
    """The worker of one write: `artifacts()` is what it lays out (called in the forked child, or here if it fails).

    `also()`: more work for the child once its files are written, while its helper flushes them and the parent
    finishes its part (a build's document cache); whether it returned True is `also_done`, once merged."""

    def __init__(
        self, artifacts: Callable[[], Iterable[Artifact]], also: Callable[[], bool] | None = None
    ) -> None:
        self.artifacts, self.also = artifacts, also
        self.also_done = False
        self.pid = -1
        self.memory = -1
        self.stage: Staging | None = None
        self.merged = False
        self.spooled = False  # the worker spools its files instead of writing them (compiler.output.spool)

    def start(self, stage: Staging) -> None:
        """Fork the worker to write into `stage`'s tree (created now if it is not yet), or, where the stage is the
        spare tree's (which two processes cannot change at once), to spool its files for this process to stage
        (compiler.output.spool)."""
        self.stage = stage
        self.spooled = spooled = type(stage) is not Staging
        if not spooled:
            stage.start()
            if stage.flusher is None:
                stage.flush_in_background()  # before the fork: the parent's files go to its own helper
        try:
            memory = os.memfd_create("meshc-worker", os.MFD_CLOEXEC)
        except (OSError, AttributeError):
            return
        if spooled:
            pid = fork_child(lambda: spool_files(stage, self.artifacts(), memory, lambda: _also(self.also)))
        else:
            pid = fork_child(lambda: _work(stage, self.artifacts, memory, self.also))
        if pid is None:
            os.close(memory)
            return
        self.pid, self.memory = pid, memory

    def entries(self) -> list[Entry]:
        """Wait for the worker and take what it wrote into the stage; its files' entries. Where it failed (or never
        started), its targets are laid out and written here, raising whatever they raise."""
        stage = self.stage
        if stage is None or self.merged:
            raise RuntimeError("Worker.entries: the worker was not started, or its entries were taken")
        self.merged = True
        if self.spooled:
            return self._take_spool(stage)
        result = self._result()
        if result is None:
            stage.replacing = True  # the worker may have left files at any of these paths
            return _write_here(stage, self.artifacts())
        entries, written, directories, stats, self.also_done = result
        paths = [path for path, _, _ in entries]
        claimed = stage.seen.intersection(paths)  # the worker's own Staging refused a path it claimed twice
        if claimed:
            raise InternalError(f"two artifacts claim {min(claimed)}")
        stage.seen.update(paths)
        stage.written.extend(written)
        stage.directories.update(directories)
        stage.others_synced = True  # it fsynced its files and the directories it made entries in
        stage.stats.update(zip(written, map(tuple.__new__, repeat(OnDisk), stats), strict=True))
        return entries

    def _take_spool(self, stage: Staging) -> list[Entry]:
        """Stage the files the worker spooled, once the spool reads through to its end; else (it failed, or never
        started) lay its targets out here: nothing of the spool was staged."""
        try:
            also_done = spool_end(self.memory) if self._exit_code() == 0 else None
            if also_done is None:
                return _write_here(stage, self.artifacts())
            self.also_done = also_done
            return stage_spooled(stage, self.memory)
        finally:
            self.close()

    def _exit_code(self) -> int:
        """Wait for the worker: its exit code, 1 if it never started or its end cannot be told."""
        if self.pid <= 0:
            return 1
        try:
            _, status = os.waitpid(self.pid, 0)
        except ChildProcessError:  # reaped elsewhere (SIGCHLD ignored): its result cannot be told
            return 1
        finally:
            self.pid = -1
        return os.waitstatus_to_exitcode(status)

    def _result(
        self,
    ) -> tuple[list[Entry], list[str], list[str], list[tuple[str, int, int, int]], bool] | None:
        try:
            if self._exit_code() != 0:
                return None
            size = os.fstat(self.memory).st_size
            body = os.pread(self.memory, size, 0)
            entries, written, directories, stats, also_done = marshal.loads(body)
        except (OSError, EOFError, ValueError, TypeError):
            return None
        finally:
            os.close(self.memory)
            self.memory = -1
        return entries, written, directories, stats, also_done is True

    def close(self) -> None:
        """The write is given up: the worker is killed (if still at work) and reaped."""
        if self.pid > 0:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            self.pid = -1
        if self.memory >= 0:
            os.close(self.memory)
            self.memory = -1


def _work(
    stage: Staging, artifacts: Callable[[], Iterable[Artifact]], memory: int, also: Callable[[], bool] | None
) -> None:
    """In the child: lay out and write `artifacts()` beside the parent, run `also()`, make the files durable, and
    say what was done."""
    if stage.flusher is not None:  # the parent's helper must see its input end when the parent ends it
        os.close(stage.flusher.send)
        os.close(stage.flusher.answer)
    mine = Staging(stage.real, stage.old, stage.trusted, stage.root)
    mine.started = True
    mine.directories = set(stage.directories)
    mine.flusher = durable.background_flusher()  # its own helper: the parent's pipe is the parent's
    try:
        entries = _write_here(mine, artifacts())
        also_done = _also(also)
        # Its files durable, then the directories it made entries in (after its last entry in each): the parent
        # flushes those it made entries in itself, after the worker is done.
        mine.flush(mine.created_in)
    finally:
        mine.abandon()  # a helper left (the work failed) is killed and reaped, never orphaned
    made = sorted(mine.directories - stage.directories)
    stats = [tuple(mine.stats[path]) for path in mine.written]
    write_all(memory, marshal.dumps((entries, mine.written, made, stats, also_done)))


def _also(also: Callable[[], bool] | None) -> bool:
    """`also()`'s answer; False where there is none or it fails (the parent then does it itself)."""
    try:
        return also is not None and also() is True
    except Exception:  # noqa: BLE001 - the parent does it again and reports what fails
        return False


def _write_here(stage: Staging, artifacts: Iterable[Artifact]) -> list[Entry]:
    entries: list[Entry] = []
    for artifact in artifacts:
        file = new_file(artifact.path, artifact.data)
        stage.add(file)
        entries.append((file.path, file.digest, artifact.target))
    return entries


def worker_share(owners: Mapping[str, str], share: float = WORKER_SHARE) -> frozenset[str]:
    """The targets of the services the worker takes, of `owners` (target -> its service): in name order, each to
    whichever side is short of its share (`share` of the targets; the build also lays out the shared files and
    the manifest). The shares are whole services: the renderer and the Kubernetes backend build a service's shared
    documents once for all its workloads, and split workloads would build them twice."""
    targets: dict[str, list[str]] = {}
    for target, service in owners.items():
        targets.setdefault(service, []).append(target)
    theirs: list[str] = []
    ours = 0
    for service in sorted(targets):
        if len(theirs) * (1 - share) <= ours * share:
            theirs += targets[service]
        else:
            ours += len(targets[service])
    return frozenset(theirs)


def as_one(stream: Iterator[NewFile], whole: Callable[[], Iterable[object]]) -> Iterator[NewFile]:
    """`stream`, a build's files made in two processes, failing as a build in one process fails.

    Each share checks the invariants of its own rendering: they hold on a partial rendering
    (compiler.render.invariants), so the two shares check what one rendering of the whole checks. But one process
    renders every workload before its backends run, and its backends report the problems of every target at once;
    a share reports its own problems alone, and its backends' may come before the other share's rendering bug.
    So where the stream fails with a finding (a spec or meshc error, this process's share's or the worker's, which
    is redone here when the worker fails), the whole is made here, `whole()` (the build's files in one process,
    unwritten), which raises what the build in one process raises; the first finding stands if it does not (a
    conflict the writer found between the shares' paths)."""
    try:
        yield from stream
    except (SpecError, InternalError):
        for _ in whole():
            pass
        raise
