"""Read a spec tree (mesh.yaml and services/*.yaml) without following links or blocking, and parse every file."""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from compiler.diagnostics import Diagnostic, Span, SpecError, error, quote
from compiler.spec import MAX_FILE_BYTES

# The YAML parser loads when a spec is parsed: a no-op build reads the files and stops there.
if TYPE_CHECKING:
    from compiler.spec.document import Document

MESH_FILE = "mesh.yaml"
SERVICES_DIR = "services"


@dataclass(frozen=True, kw_only=True, slots=True)
class Unreadable:
    """A spec entry the readers refused to read (a FIFO, a symlink, a permission error): why, as a diagnostic."""

    code: str
    message: str


# What a reader hands the compiler: relative path -> the file's bytes, or why it could not be read.
SpecFiles = Mapping[str, "bytes | Unreadable"]


def files_bytes(files: SpecFiles) -> bytes:
    """`files` as one `marshal` blob (for compiler.output.prescan, whose child reads the spec); `files_of` reads it."""
    import marshal

    return marshal.dumps(
        [
            (name, data) if isinstance(data, bytes) else (name, data.code, data.message)
            for name, data in files.items()
        ]
    )


def files_of(blob: bytes) -> dict[str, bytes | Unreadable]:
    """The spec files `files_bytes` wrote, in their order."""
    import marshal

    return {
        entry[0]: entry[1] if len(entry) == 2 else Unreadable(code=entry[1], message=entry[2])
        for entry in marshal.loads(blob)
    }


_KINDS = {
    stat.S_IFREG: "a regular file",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFDIR: "a directory",
    stat.S_IFLNK: "a symbolic link",
}


def spec_files(spec_dir: Path) -> dict[str, bytes | Unreadable]:
    """Read a spec directory; raise FileNotFoundError (NotADirectoryError for a file) if it is not one."""
    if spec_dir.is_dir():
        return read_tree(spec_dir)
    if spec_dir.exists():
        raise NotADirectoryError(
            f"{quote(spec_dir.as_posix())} is a file, not a spec directory; "
            "pass the directory that holds mesh.yaml and services/"
        )
    raise FileNotFoundError(f"spec directory {quote(spec_dir.as_posix())} does not exist")


def read_tree(root: Path) -> dict[str, bytes | Unreadable]:
    """The spec files under `root` as relative path -> bytes (over the limit: limit+1 bytes) or Unreadable.

    Nothing is followed or opened before its kind is known from lstat: a FIFO would block, a device
    could be endless, and a symlink could point anywhere (its target's text would end up in
    diagnostics). Git stores symlinks as links, so `meshc diff` could not read through them either.
    """
    files: dict[str, bytes | Unreadable] = {}
    mesh = _read_entry(root, MESH_FILE)
    if mesh is not None:
        files[MESH_FILE] = mesh
    listing = _list_services(root)
    if isinstance(listing, Unreadable):
        files[SERVICES_DIR] = listing
        return files
    for name, regular in listing:
        relative = f"{SERVICES_DIR}/{name}"
        found = _read_entry(
            root,
            relative,
            skip_directories=not name.endswith(".yaml"),
            kind=stat.S_IFREG if regular else None,
        )
        if found is not None:
            files[relative] = found
    return files


def _list_services(root: Path) -> list[tuple[str, bool]] | Unreadable:
    """The names in services/ (dotfiles left out, sorted), each with whether the listing says it is a regular
    file (then it needs no lstat of its own), or why services/ cannot be listed."""
    kind = _kind(root / SERVICES_DIR)
    if isinstance(kind, Unreadable):
        return kind
    if kind is None:
        return Unreadable(
            code="file-missing",
            message=f"no {SERVICES_DIR}/ directory; a mesh needs at least one services/<name>.yaml",
        )
    if kind != stat.S_IFDIR:
        return _wrong_kind(root, SERVICES_DIR, kind, "a directory")
    try:
        with os.scandir(root / SERVICES_DIR) as entries:
            return sorted(
                (entry.name, entry.is_file(follow_symlinks=False))
                for entry in entries
                if not entry.name.startswith(".")
            )
    except OSError as exc:
        return Unreadable(code="file-unreadable", message=f"cannot list {SERVICES_DIR}/: {_cause(exc)}")


def read_side_file(path: Path, label: str) -> bytes | None:
    """A file beside the spec (rollout.yaml, the inventory): its bytes, None if absent; SpecError if it is no regular
    file, e.g. a directory, FIFO or symlink, which must not pass for an absent file (that would drop the rollout)."""
    return side_bytes(_read_entry(path.parent, path.name), label)


def side_bytes(found: bytes | Unreadable | None, label: str) -> bytes | None:
    """A side file as read (from a directory or a git revision): its bytes, None if absent; SpecError naming `label`
    if it is no regular file."""
    if isinstance(found, Unreadable):
        raise SpecError([_error(label, found.code, found.message)])
    return found


def spec_label(spec_dir: Path) -> str:
    """How diagnostics and the rollout name the spec directory: as given, without a trailing slash ("." for /)."""
    return spec_dir.as_posix().rstrip("/") or "."


def _read_entry(
    root: Path, relative: str, skip_directories: bool = False, kind: int | Unreadable | None = None
) -> bytes | Unreadable | None:
    """One spec file's bytes; None if absent (or a directory not named like a spec file); Unreadable otherwise.

    `kind`: the entry's type as its directory listing gave it, if it did (else lstat tells).
    """
    kind = kind if kind is not None else _kind(root / relative)
    if kind is None or isinstance(kind, Unreadable):
        return kind
    if kind == stat.S_IFDIR and skip_directories:
        return None
    if kind != stat.S_IFREG:
        return _wrong_kind(root, relative, kind, "a regular file")
    try:
        # O_NOFOLLOW and O_NONBLOCK: if the entry was swapped for a link or a FIFO since lstat, fail, never block.
        fd = os.open(
            root / relative, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
        )
    except OSError as exc:
        return Unreadable(code="file-unreadable", message=f"cannot read the file: {_cause(exc)}")
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return Unreadable(
                code="file-type", message="the file changed while meshc read it; run meshc again"
            )
        return _read_capped(fd, info.st_size, MAX_FILE_BYTES + 1)
    except OSError as exc:
        return Unreadable(code="file-unreadable", message=f"cannot read the file: {_cause(exc)}")
    finally:
        os.close(fd)


def _read_capped(fd: int, size: int, limit: int) -> bytes:
    """At most `limit` bytes of an open regular file whose size fstat gave as `size` (it may grow meanwhile).

    Plain os.read sized by fstat, not a buffered file object: a buffered read(limit) maps and unmaps a
    1 MiB buffer for every file, 11 system calls a file instead of 4 (strace of a 1,000-service no-op
    build). A read that returns less than it asked for is the end of a regular file.
    """
    chunks: list[bytes] = []
    total, want = 0, min(size + 1, limit)
    while want > 0:
        chunk = os.read(fd, want)
        chunks.append(chunk)
        total += len(chunk)
        if len(chunk) < want:
            break
        want = min(limit - total, 1 << 16)  # the file grew since fstat: read on, in small steps
    return b"".join(chunks)


def _kind(path: Path) -> int | Unreadable | None:
    """The file type bits of `path` itself (a symlink is not followed), None if it does not exist."""
    try:
        return stat.S_IFMT(os.lstat(path).st_mode)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return Unreadable(code="file-unreadable", message=f"cannot read the file: {_cause(exc)}")


def _wrong_kind(root: Path, relative: str, kind: int, wanted: str) -> Unreadable:
    if kind == stat.S_IFLNK:
        return symlink_problem(relative, os.readlink(root / relative))
    fix = (
        "make it a directory of service files"
        if wanted == "a directory"
        else "remove it or make it a regular file"
    )
    return Unreadable(
        code="file-type", message=f"this is {_KINDS.get(kind, 'not a regular file')}, not {wanted}; {fix}"
    )


def symlink_problem(relative: str, target: str | bytes) -> Unreadable:
    """Why a symlinked spec entry is refused; the link is never followed and its target never printed."""
    text = os.fsdecode(target)
    inside = not os.path.isabs(text) and not posixpath.normpath(
        posixpath.join(posixpath.dirname(relative), text)
    ).startswith("..")
    if inside:
        return Unreadable(
            code="file-symlink",
            message="this is a symbolic link; spec entries must be real files and directories "
            "(git stores the link, not its target, so `meshc diff` would not see it): copy the target here",
        )
    return Unreadable(
        code="symlink-escape",
        message="this is a symbolic link that leaves the spec directory; "
        "meshc does not follow it: put the real file or directory here",
    )


def _cause(exc: OSError) -> str:
    """An OS error as a sentence fragment: `permission denied`, never a bare errno."""
    return (exc.strerror or type(exc).__name__).lower()


def load_documents(
    files: SpecFiles, label: str, known: Mapping[str, Document] | None = None
) -> dict[str, Document]:
    """Parse every spec file; files are keyed `label/relative-path` so diagnostics name them as the user does.

    `known`: documents already parsed from the very bytes in `files` (a build's document cache), by name.
    """
    from compiler.spec.document import LoadError, parse_document

    documents: dict[str, Document] = {}
    problems = list(_tree_problems(files, label))
    for relative, raw in sorted(files.items()):
        name = f"{label}/{relative}"
        if isinstance(raw, Unreadable):
            problems.append(_error(name, raw.code, raw.message))
        elif relative != MESH_FILE and not relative.endswith(".yaml"):
            problems.append(
                _error(
                    name,
                    "stray-file",
                    "services/ holds only <service>.yaml files; rename or remove this file",
                )
            )
        elif known is not None and name in known:
            documents[name] = known[name]
        else:
            try:
                documents[name] = parse_document(name, raw)
            except LoadError as exc:
                problems.append(exc.diagnostic)
    if problems:
        raise SpecError(problems)
    return documents


def _tree_problems(files: SpecFiles, label: str) -> Iterator[Diagnostic]:
    """A missing mesh.yaml, and a services/ directory that holds no service: no data is never an empty mesh."""
    if MESH_FILE not in files:
        yield _error(
            f"{label}/{MESH_FILE}",
            "file-missing",
            f"no {MESH_FILE} here; is this a mesh spec directory?",
        )
    services = [name for name in files if name.startswith(SERVICES_DIR + "/") and name.endswith(".yaml")]
    if not services and SERVICES_DIR not in files:
        yield _error(
            f"{label}/{SERVICES_DIR}",
            "no-services",
            f"{SERVICES_DIR}/ holds no service; add one file per service, {SERVICES_DIR}/<name>.yaml",
        )


def _error(name: str, code: str, message: str) -> Diagnostic:
    """A diagnostic about a whole file (or services/), placed at its start."""
    return error(Span(file=name), code, message)
