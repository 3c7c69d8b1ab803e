"""A hostile spec directory through the real CLI: exit 2, one line per diagnostic, no traceback, output untouched.

Covers issue 9 items 3 (services/ missing, unreadable, a file, empty), 4 (non-regular `*.yaml`),
5 (symlinks, in the directory and at a git revision), 11 (an unreadable spec file), 12 (one line
per diagnostic), 13 (diagnostics speak YAML) and 16 (tcp dependencies with HTTP-only policy).
Tests run as root, which reads anything: permission cases run meshc as `nobody` through setpriv.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, meshc_in_process, require_tool, write_spec
from tests.test_invalid_specs import BASE

LINE = re.compile(r"^[^\n]+:\d+:\d+: error: [^\n]+  \[[a-z-]+\]$")
SUMMARY = re.compile(r"^Found \d+ errors? in \d+ files?$")
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def meshc(*args: str, cwd: Path, as_nobody: bool = False) -> subprocess.CompletedProcess[str]:
    """The command line in this process; as nobody, the installed `meshc` script (python -m compiler if absent)."""
    if not as_nobody:
        result = meshc_in_process(*args, cwd=cwd)
        assert "Traceback" not in result.stdout + result.stderr, result.stderr
        return result
    script = Path(sys.executable).parent / "meshc"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "compiler"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MESHC_DEBUG", None)
    prefix = [require_tool(NOBODY[0]), *NOBODY[1:]] if as_nobody else []
    result = subprocess.run(
        [*prefix, *command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    return result


def diagnostics(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The diagnostic lines of a failed run, after checking every line of stderr is one diagnostic or the summary."""
    assert result.returncode == 2, f"exit {result.returncode}\n{result.stdout}{result.stderr}"
    lines = result.stderr.split("\n")
    assert lines[-1] == "" and SUMMARY.match(lines[-2]), result.stderr
    for line in lines[:-2]:
        assert LINE.match(line), f"not one diagnostic per line: {line!r}"
    return lines[:-2]


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under `root` (path -> bytes), to prove a failed build touched nothing."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def world() -> Iterator[Path]:
    """A directory every user may enter (pytest's tmp_path is root-only), holding `spec/` = the small valid BASE."""
    root = Path(tempfile.mkdtemp(prefix="meshc-safety-"))
    try:
        root.chmod(0o755)
        write_spec(root / "spec", BASE)
        for path in (root / "spec").rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        yield root
    finally:
        for path in root.rglob("*"):  # restore permissions a test took away, so the tree can be removed
            if not path.is_symlink():
                path.chmod(0o755)
        shutil.rmtree(root)


@pytest.fixture
def built(world: Path) -> tuple[Path, dict[str, bytes]]:
    """`world` with `output/` built from the valid spec, and the bytes of that output."""
    result = meshc("build", "spec", "-o", "output", cwd=world)
    assert result.returncode == 0, result.stderr
    return world, snapshot(world / "output")


def fails_and_keeps_output(world: Path, before: dict[str, bytes], *, as_nobody: bool = False) -> list[str]:
    """validate and build both exit 2 with one-line diagnostics; build leaves output/ byte-identical."""
    # build takes the output's lock (a file beside output/) before it reads the spec: let nobody create it
    if as_nobody:
        world.chmod(0o1777)
    checked = meshc("validate", "spec", cwd=world, as_nobody=as_nobody)
    assert "ok" not in checked.stdout
    lines = diagnostics(checked)
    assert diagnostics(meshc("build", "spec", "-o", "output", cwd=world, as_nobody=as_nobody)) == lines
    assert snapshot(world / "output") == before
    return lines


# ---------------------------------------------------------------- item 3: services/ is not a directory of services


def test_services_missing_is_an_error_not_an_empty_mesh(built: tuple[Path, dict[str, bytes]]) -> None:
    world, before = built
    shutil.rmtree(world / "spec/services")
    assert fails_and_keeps_output(world, before) == [
        "spec/services:1:1: error: no services/ directory; "
        "a mesh needs at least one services/<name>.yaml  [file-missing]"
    ]


def test_services_empty_is_an_error(built: tuple[Path, dict[str, bytes]]) -> None:
    world, before = built
    for path in (world / "spec/services").iterdir():
        path.unlink()
    (world / "spec/services/.editor-swap").write_text("x")
    lines = fails_and_keeps_output(world, before)
    assert lines == [
        "spec/services:1:1: error: services/ holds no service; "
        "add one file per service, services/<name>.yaml  [no-services]"
    ]


def test_services_as_a_regular_file_is_an_error(built: tuple[Path, dict[str, bytes]]) -> None:
    world, before = built
    shutil.rmtree(world / "spec/services")
    (world / "spec/services").write_text(BASE["services/a.yaml"])
    assert fails_and_keeps_output(world, before) == [
        "spec/services:1:1: error: this is a regular file, not a directory; "
        "make it a directory of service files  [file-type]"
    ]


def test_unreadable_services_directory_as_nobody(built: tuple[Path, dict[str, bytes]]) -> None:
    """Path.glob swallowed the PermissionError: validate said "ok, 0 services" and build deleted every service."""
    world, before = built
    (world / "spec/services").chmod(0o000)
    assert fails_and_keeps_output(world, before, as_nobody=True) == [
        "spec/services:1:1: error: cannot list services/: permission denied  [file-unreadable]"
    ]


def test_unlistable_services_directory_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from compiler.diagnostics import SpecError
    from compiler.pipeline import compile_dir

    write_spec(tmp_path, BASE)

    def denied(path: object) -> object:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(os, "scandir", denied)
    with pytest.raises(SpecError) as info:
        compile_dir(tmp_path)
    assert [(d.code, d.span.file) for d in info.value.diagnostics] == [
        ("file-unreadable", f"{tmp_path.as_posix()}/services")
    ]


# ---------------------------------------------------------------- item 11: an unreadable spec file


@pytest.mark.parametrize("relative", ["mesh.yaml", "services/b.yaml"])
def test_unreadable_spec_file_is_a_positioned_error(
    built: tuple[Path, dict[str, bytes]], relative: str
) -> None:
    world, before = built
    (world / "spec" / relative).chmod(0o000)
    assert fails_and_keeps_output(world, before, as_nobody=True) == [
        f"spec/{relative}:1:1: error: cannot read the file: permission denied  [file-unreadable]"
    ]


# ---------------------------------------------------------------- item 4: non-regular *.yaml entries


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _socket(path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))


def _dangling(path: Path) -> None:
    path.symlink_to("nowhere.yaml")


def _loop(path: Path) -> None:
    path.symlink_to(path.name)


def _directory(path: Path) -> None:
    path.mkdir()
    (path / "service.yaml").write_text("service: c\n")


def _device(path: Path) -> None:
    try:
        # /dev/null's numbers: reading it would end at once anyway
        os.mknod(path, 0o644 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("this container may not create device nodes")


ENTRIES = {
    "fifo": (_fifo, "this is a FIFO, not a regular file; remove it or make it a regular file  [file-type]"),
    "socket": (
        _socket,
        "this is a socket, not a regular file; remove it or make it a regular file  [file-type]",
    ),
    "device": (
        _device,
        "this is a character device, not a regular file; remove it or make it a regular file  [file-type]",
    ),
    "directory": (
        _directory,
        "this is a directory, not a regular file; remove it or make it a regular file  [file-type]",
    ),
    "dangling-symlink": (_dangling, "this is a symbolic link; spec entries must be real files"),
    "symlink-loop": (_loop, "this is a symbolic link; spec entries must be real files"),
}


@pytest.mark.parametrize("kind", sorted(ENTRIES))
def test_non_regular_yaml_entry_is_a_positioned_error(
    built: tuple[Path, dict[str, bytes]], kind: str
) -> None:
    """Each used to vanish from the mesh (and its outputs were deleted by the next build); a FIFO is never opened."""
    world, before = built
    make, message = ENTRIES[kind]
    make(world / "spec/services/c.yaml")
    lines = fails_and_keeps_output(world, before)
    assert len(lines) == 1 and lines[0].startswith("spec/services/c.yaml:1:1: error: " + message), lines


def test_a_fifo_is_never_opened(tmp_path: Path) -> None:
    """A FIFO opened for reading blocks until a writer comes; lstat first, so reading returns at once."""
    from compiler.spec.load import Unreadable, read_tree

    write_spec(tmp_path, BASE)
    (tmp_path / "mesh.yaml").unlink()
    os.mkfifo(tmp_path / "mesh.yaml")
    found = read_tree(tmp_path)["mesh.yaml"]
    assert isinstance(found, Unreadable) and found.code == "file-type"


# ---------------------------------------------------------------- item 5: symlinks


def test_symlink_leaving_the_spec_is_never_followed_or_echoed(built: tuple[Path, dict[str, bytes]]) -> None:
    world, before = built
    secret = world / "secret.txt"
    secret.write_text("root:$6$s3cr3t-hash:19000:0:99999:7:::\nline-two-of-the-secret\n")
    (world / "spec/services/b.yaml").unlink()
    (world / "spec/services/b.yaml").symlink_to(secret)
    lines = fails_and_keeps_output(world, before)
    assert lines == [
        "spec/services/b.yaml:1:1: error: this is a symbolic link that leaves the spec directory; "
        "meshc does not follow it: put the real file or directory here  [symlink-escape]"
    ]
    assert "s3cr3t" not in "".join(lines) and str(secret) not in "".join(lines)


def test_symlinked_services_directory_is_refused(built: tuple[Path, dict[str, bytes]]) -> None:
    world, before = built
    (world / "spec/services").rename(world / "elsewhere")
    (world / "spec/services").symlink_to(world / "elsewhere")
    assert fails_and_keeps_output(world, before) == [
        "spec/services:1:1: error: this is a symbolic link that leaves the spec directory; "
        "meshc does not follow it: put the real file or directory here  [symlink-escape]"
    ]


def test_symlink_inside_the_spec_is_refused_too(built: tuple[Path, dict[str, bytes]]) -> None:
    world, before = built
    (world / "spec/services/b.yaml").rename(world / "spec/b.yaml")
    (world / "spec/services/b.yaml").symlink_to("../b.yaml")
    [line] = fails_and_keeps_output(world, before)
    assert line.startswith("spec/services/b.yaml:1:1: error: this is a symbolic link;") and line.endswith(
        "[file-symlink]"
    )


def git(repo: Path, *args: str) -> str:
    command = [
        "git",
        "-c",
        "user.name=meshc test",
        "-c",
        "user.email=test@meshc.invalid",
        "-c",
        "commit.gpgsign=false",
        *args,
    ]
    return subprocess.run(command, cwd=repo, check=True, capture_output=True, text=True).stdout


@pytest.mark.parametrize("target", ["../b-real.yaml", "/nonexistent/outside/the/spec"])
def test_validate_and_diff_agree_on_a_committed_symlink(tmp_path: Path, target: str) -> None:
    """git stores a link blob (mode 120000): the revision reader refuses it as the directory reader does."""
    from compiler.gitsource import locate, read_revision
    from compiler.spec.load import read_tree

    repo = tmp_path / "repo"
    write_spec(repo / "spec", BASE)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "valid")
    (repo / "spec/services/b.yaml").rename(repo / "spec/b-real.yaml")
    (repo / "spec/services/b.yaml").symlink_to(target)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "link")
    assert read_revision(locate(repo / "spec"), "HEAD") == read_tree(repo / "spec")
    validated = diagnostics(meshc("validate", "spec", cwd=repo))
    diffed = diagnostics(meshc("diff", "--base", "HEAD~1", "--head", "HEAD", "--spec", "spec", cwd=repo))
    assert len(validated) == 1 and [line.replace("HEAD:", "", 1) for line in diffed] == validated
    assert ("[file-symlink]" if target.startswith("..") else "[symlink-escape]") in validated[0]


def test_git_tree_named_like_a_service_file_is_refused(tmp_path: Path) -> None:
    from compiler.gitsource import locate, read_revision
    from compiler.spec.load import read_tree

    repo = tmp_path / "repo"
    write_spec(repo / "spec", {**BASE, "services/c.yaml/notes.txt": "x\n", "services/sub/d.yaml": "x: 1\n"})
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "dir")
    at_head = read_revision(locate(repo / "spec"), "HEAD")
    assert at_head == read_tree(repo / "spec") and at_head["services/c.yaml"].code == "file-type"  # type: ignore[union-attr]


# ---------------------------------------------------------------- item 12: one line per diagnostic, real positions


@pytest.mark.parametrize(("name", "shown"), [("evil\nname", "evil\\nname"), ("tab\tx", "tab\\tx")])
def test_a_control_character_in_a_file_name_is_escaped(world: Path, name: str, shown: str) -> None:
    # a tab was printed raw, as a newline once was: `services/tab	x.yaml` reads as spaces and splits a line cut at
    # tabs, a newline splits the one-line diagnostic in two
    (world / f"spec/services/{name}.yaml").write_text(
        BASE["services/b.yaml"].replace("service: b", "service: x")
    )
    lines = diagnostics(meshc("validate", "spec", cwd=world))
    assert lines == [
        f"spec/services/{shown}.yaml:1:10: error: service 'x' is defined in '{shown}.yaml'; "
        "rename the file to x.yaml or fix `service:`  [service-name-mismatch]"
    ]


def test_every_c0_control_and_del_is_escaped() -> None:
    from compiler.diagnostics import escape

    controls = "".join(map(chr, [*range(0x20), 0x7F]))
    escaped = escape(controls)
    assert escaped.isprintable() and escaped.isascii()
    assert (
        escaped.startswith("\\x00\\x01")
        and "\\t\\n\\x0b\\x0c\\r" in escaped
        and escaped.endswith("\\x1f\\x7f")
    )


def test_file_name_that_is_not_utf8_is_escaped_and_missing_keys_are_named_once(world: Path) -> None:
    os.close(
        os.open(
            os.path.join(os.fsencode(world / "spec/services"), b"\xff.yaml"), os.O_CREAT | os.O_WRONLY, 0o644
        )
    )
    Path(os.fsdecode(os.path.join(os.fsencode(world / "spec/services"), b"\xff.yaml"))).write_text(
        "service: x\n"
    )
    lines = diagnostics(meshc("validate", "spec", cwd=world))
    assert [line.split(": error: ")[1] for line in lines] == [
        f"missing required key '{key}'  [missing-key]"
        for key in ("deploy", "local_port", "mesh_port", "owner", "port")
    ] + [
        "service 'x' is defined in '\\udcff.yaml'; rename the file to x.yaml or fix `service:`  [service-name-mismatch]"
    ]
    assert all(line.startswith("spec/services/\\udcff.yaml:1:") for line in lines)


@pytest.mark.parametrize("char", ["\x00", "\x1b", "\x7f", "\x9b", "\ufffe", "\uffff"])
def test_control_character_is_one_positioned_line(world: Path, char: str) -> None:
    (world / "spec/services/b.yaml").write_text(
        BASE["services/b.yaml"].replace("owner: team", f"owner: te{char}am"), "utf-8"
    )
    [line] = diagnostics(meshc("validate", "spec", cwd=world))
    assert line == (
        f"spec/services/b.yaml:2:10: error: control character U+{ord(char):04X} is not allowed in YAML; "
        "remove it (write it as an escape in a double-quoted string)  [yaml-character]"
    )


@pytest.mark.parametrize("char", ["\x85", "\u2028", "\u2029"])
def test_line_separators_in_a_comment_do_not_shift_lines(world: Path, char: str) -> None:
    """libyaml counts NEL/LS/PS as line breaks (and reads what follows one in a comment as YAML): refused in place."""
    body = BASE["services/b.yaml"].replace("owner: team", f"owner: team  # a{char}b{char}c")
    (world / "spec/services/b.yaml").write_text(body, "utf-8")
    [line] = diagnostics(meshc("validate", "spec", cwd=world))
    assert line.startswith("spec/services/b.yaml:2:17: error: ") and line.endswith("[yaml-character]"), line
    assert int(line.split(":")[1]) <= body.count("\n")  # never past the end of the file


def test_long_values_are_cut_in_diagnostics(world: Path) -> None:
    (world / "spec/services/b.yaml").write_text(
        BASE["services/b.yaml"] + f"{'k' * 1000}: 1\ndescription: [{'v' * 5000}]\n"
    )
    lines = diagnostics(meshc("validate", "spec", cwd=world))
    assert len(lines) == 2 and all(len(line) < 300 for line in lines), lines
    assert "'" + "k" * 63 + "…'" in lines[0]


# ---------------------------------------------------------------- item 13: diagnostics speak YAML


def test_document_that_is_a_list_is_shown_as_yaml(world: Path) -> None:
    (world / "spec/mesh.yaml").write_text("- mesh: acme\n")
    [line] = diagnostics(meshc("validate", "spec", cwd=world))
    assert line == "spec/mesh.yaml:1:1: error: document: [{mesh: acme}] should be a mapping  [schema]"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "null",
            "service: null is not a string; if you mean the text null, quote it: 'null'  [invalid-name]",
        ),
        (
            "true",
            "service: true is not a string; if you mean the text true, quote it: 'true'  [invalid-name]",
        ),
        (  # quoted, '8080' is no name either: the hint would lead straight to the next error
            "8080",
            "service: 8080 is not a string, and quoting it would not do: '8080' must be a DNS-1123 label: lowercase "
            "letters, digits and '-', starting with a letter, ending with a letter or digit, at most 63 characters"
            "  [invalid-name]",
        ),
    ],
)
def test_bare_scalar_names_get_a_hint_to_quote_them(world: Path, value: str, message: str) -> None:
    """Quoting is suggested only where the quoted text is a valid name."""
    (world / "spec/services/b.yaml").write_text(
        BASE["services/b.yaml"].replace("service: b", f"service: {value}")
    )
    assert diagnostics(meshc("validate", "spec", cwd=world)) == [
        f"spec/services/b.yaml:1:10: error: {message}"
    ]


def test_quoted_port_and_yaml11_boolean(world: Path) -> None:
    body = BASE["services/b.yaml"].replace("port: 8080", 'port: "8080"') + "restart_sensitive: on\n"
    (world / "spec/services/b.yaml").write_text(body)
    assert diagnostics(meshc("validate", "spec", cwd=world)) == [
        "spec/services/b.yaml:3:7: error: port: '8080' is a quoted string, not a number; "
        "remove the quotes  [port-range]",
        "spec/services/b.yaml:10:20: error: restart_sensitive: "
        "'on' is a string to meshc (only true and false are booleans); "
        "write true or false  [schema]",
    ]


def test_tab_indentation_says_so(world: Path) -> None:
    (world / "spec/services/b.yaml").write_text(BASE["services/b.yaml"].replace("  vm:", "\tvm:"))
    assert diagnostics(meshc("validate", "spec", cwd=world)) == [
        "spec/services/b.yaml:7:1: error: tabs cannot indent YAML (and cannot start a value); "
        "indent with spaces  [yaml-syntax]"
    ]


def test_no_python_reprs_in_schema_messages(world: Path) -> None:
    body = BASE["services/b.yaml"] + "description: [1, {a: null}]\nhealth_check: {rise: true, http: ~}\n"
    (world / "spec/services/b.yaml").write_text(body)
    lines = diagnostics(meshc("validate", "spec", cwd=world))
    text = "\n".join(lines)
    assert "None" not in text and "True" not in text and "{'" not in text, text
    assert "description: [1, {a: null}] should be a string" in text


def test_explain_unknown_service_suggests_names(world: Path) -> None:
    near = meshc("explain", "bb", "--spec", "spec", cwd=world)
    assert near.returncode == 2 and near.stderr == "meshc: error: unknown service 'bb' (did you mean 'b'?)\n"
    far = meshc("explain", "nosuch", "--spec", "spec", cwd=world)
    assert (
        far.returncode == 2
        and far.stderr == "meshc: error: unknown service 'nosuch'; the spec's services: a, b\n"
    )


def test_validate_a_file_says_it_is_a_file(world: Path) -> None:
    result = meshc("validate", "spec/mesh.yaml", cwd=world)
    assert result.returncode == 2
    assert result.stderr == (
        "meshc: error: 'spec/mesh.yaml' is a file, not a spec directory; "
        "pass the directory that holds mesh.yaml and services/\n"
    )


# ---------------------------------------------------------------- item 16: tcp dependencies


def test_explain_shows_what_a_tcp_dependency_really_gets(world: Path) -> None:
    """Explain used to show an HTTP timeout and retries for a tcp dependency; Envoy's TCP proxy applies neither."""
    import json

    (world / "spec/services/b.yaml").write_text(BASE["services/b.yaml"] + "protocol: tcp\n")
    (world / "spec/services/a.yaml").write_text(BASE["services/a.yaml"] + "    retries: {attempts: 3}\n")
    text = meshc("explain", "a", "--spec", "spec", cwd=world)
    assert text.returncode == 0, text.stderr
    assert (
        "    -> b on 127.0.0.1:7002 (failover): tcp, 3 connection attempt(s), connect 1000ms\n" in text.stdout
    )
    report = json.loads(meshc("explain", "a", "--spec", "spec", "--format", "json", cwd=world).stdout)
    policy = report["workloads"][0]["dependencies"][0]["policy"]
    assert policy["max_connect_attempts"] == 3 and "timeout_ms" not in policy and "retries" not in policy


def test_tcp_dependency_with_http_policy_is_rejected(world: Path) -> None:
    (world / "spec/services/b.yaml").write_text(BASE["services/b.yaml"] + "protocol: tcp\n")
    (world / "spec/services/a.yaml").write_text(BASE["services/a.yaml"] + "    timeout: 5s\n")
    assert diagnostics(meshc("validate", "spec", cwd=world)) == [
        "spec/services/a.yaml:10:5: error: timeout has no effect on 'b', a tcp service: "
        "Envoy's TCP proxy has no request "
        "timeout or retry conditions; remove it (tcp takes connect_timeout and retries.attempts, "
        "the number of connection "
        "attempts)  [tcp-http-policy]"
    ]
