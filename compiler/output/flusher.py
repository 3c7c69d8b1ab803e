"""fsync in a helper process while the build goes on writing: the disk flushes the first files while the compiler
renders the last.

A full build at 1,000 services writes 10,600 files; fsyncing them after the last one is written took ~0.8 s,
most of it waiting for the disk. fsync threads inside the build would overlap that wait with the compile,
but every return from a syscall takes the GIL back from the compiling thread (measured: they did not pay).
A separate process has its own GIL. It is a fresh interpreter (`-I -S`, no site, ~10 ms to start, beside
the build), not a fork: a fork of the build would copy every page either process touches afterwards.

The build sends each file's path once written, and at the end the directories; the helper fsyncs the
files as they come, FSYNC_THREADS at a time, then the directories, and answers with the first failure or
none. Nothing is published before that answer (the writer swaps after `finish`). If the helper dies or
answers nonsense, the build fsyncs everything itself: a lost helper costs time, never durability.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence

# Run by the helper's interpreter: standard library only, no compiler import (it starts without site-packages).
# argv: the number of threads, the build's pid;
# stdin: records b"f<path>\0" (a file) and b"d<path>\0" (a directory, fsynced after every file);
# stdout, at the end: b"0\n", or b"<errno> <path>" for the first failure.
_HELPER = r"""
import os, signal, sys, threading

# Ctrl-C reaches the whole process group, and so do a SIGTERM or SIGHUP from timeout(1), systemd or a closed
# terminal: the build answers each (compiler.cli.termination) and ends this helper (its input ends, or it is
# killed). Whatever else goes wrong here ends the helper without an answer: the build then fsyncs everything.
for each in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(each, signal.SIG_IGN)
build = int(sys.argv[2])
pending, directories, failure = [], [], []
ready = threading.Condition()
done = False

def fsync(path, flags):
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as error:
        failure.append((error.errno or 5, path))

def work():
    while True:
        with ready:
            while not pending and not done:
                ready.wait()
            if not pending:
                return
            path = pending.pop()
        fsync(path, os.O_RDONLY)

def main():
    global done
    threads = []
    for _ in range(int(sys.argv[1])):
        thread = threading.Thread(target=work, daemon=True)
        try:
            thread.start()
        except RuntimeError:  # no more threads allowed: those started do the work, or this one does
            break
        threads.append(thread)
    rest = b""
    while chunk := os.read(0, 1 << 16):
        *records, rest = (rest + chunk).split(b"\0")
        files = [os.fsdecode(r[1:]) for r in records if r[:1] == b"f"]
        directories.extend(os.fsdecode(r[1:]) for r in records if r[:1] == b"d")
        if not threads:
            for path in files:
                fsync(path, os.O_RDONLY)
            continue
        with ready:
            pending.extend(files)
            ready.notify(len(files))
    if os.getppid() != build:
        # The build is gone (killed, or its forked worker killed by the build giving up): what it wrote is
        # abandoned and nobody reads an answer. Leave now rather than flush it, an orphan.
        os._exit(3)
    with ready:
        done = True
        ready.notify_all()
    for thread in threads:
        thread.join()
    for path in directories if not failure else ():
        fsync(path, os.O_RDONLY | os.O_DIRECTORY)
        if failure:
            break
    if failure:
        code, path = failure[0]
        os.write(1, str(code).encode() + b" " + os.fsencode(path))
    else:
        os.write(1, b"0\n")

try:
    main()
except BaseException:
    os._exit(3)
os._exit(0)
"""

THREADS = 32
BATCH = 64  # paths sent per write to the helper


class Flusher:
    """The helper process of one write (see the module docstring)."""

    def __init__(self, pid: int, send: int, answer: int) -> None:
        self.pid, self.send, self.answer = pid, send, answer
        self.batch: list[bytes] = []
        self.sent: list[str] = []  # every file sent: fsynced here if the helper is lost
        self.lost = False  # the helper stopped reading: it answers nothing, the build fsyncs everything

    def file(self, path: str) -> None:
        """A file the build has written and closed: the helper fsyncs it."""
        self.sent.append(path)
        self.batch.append(b"f" + os.fsencode(path) + b"\0")
        if len(self.batch) >= BATCH:
            self._send()

    def finish(self, directories: Sequence[str]) -> bool:
        """Every file sent is durable, and then every directory of `directories`: True once the helper says so,
        OSError for the first failure it reports, False if it answered nothing (killed, crashed): the caller
        then fsyncs everything itself, as a write without a helper does."""
        self.batch.extend(b"d" + os.fsencode(path) + b"\0" for path in directories)
        try:
            self._send()
            os.close(self.send)
            self.send = -1
            answer = b"" if self.lost else _read_all(self.answer)
        except OSError:
            answer = b""
        except BaseException:  # interrupted while the helper works: it is killed, not waited for
            self.close(kill=True)
            raise
        self.close(kill=self.lost or not answer)
        code, _, path = answer.partition(b" ")
        if answer == b"0\n":
            return True
        if code.isdigit() and path:
            number = int(code)
            raise OSError(number, os.strerror(number), os.fsdecode(path))
        return False

    def _send(self) -> None:
        data, self.batch = b"".join(self.batch), []
        view = memoryview(data)
        try:
            while view and not self.lost:
                view = view[os.write(self.send, view) :]
        except OSError:  # the helper died (EPIPE): finish() fsyncs everything here
            self.lost = True

    def close(self, *, kill: bool = True) -> None:
        """Reap the helper: killed first (a write given up: what it still flushes is being removed), or once it
        has answered."""
        for fd in (self.send, self.answer):
            if fd >= 0:
                os.close(fd)
        self.send = self.answer = -1
        if self.pid <= 0:
            return
        if kill:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass
        self.pid = -1


def start_flusher() -> Flusher | None:
    """A helper process that fsyncs what it is sent, or None where one cannot be started (the caller fsyncs)."""
    if not sys.executable or not hasattr(os, "posix_spawn"):
        return None
    try:
        to_helper, send = os.pipe2(os.O_CLOEXEC)
        answer, from_helper = os.pipe2(os.O_CLOEXEC)
    except OSError:
        return None
    try:
        pid = os.posix_spawn(
            sys.executable,
            [sys.executable, "-I", "-S", "-c", _HELPER, str(THREADS), str(os.getpid())],
            os.environ,
            file_actions=[
                (os.POSIX_SPAWN_DUP2, to_helper, 0),
                (os.POSIX_SPAWN_DUP2, from_helper, 1),
                # whatever the helper would print is no message to the user: its failures come as answers
                (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
            ],
        )
    except OSError:
        for fd in (to_helper, send, answer, from_helper):
            os.close(fd)
        return None
    os.close(to_helper)
    os.close(from_helper)
    return Flusher(pid, send, answer)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)
