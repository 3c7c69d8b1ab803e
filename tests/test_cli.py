"""The command line: `compiler.cli.main` in-process, and `python -m compiler …` in a child process for the exit path.

A child process per test cost ~0.5 s of imports and checked nothing more; `meshc_process` keeps the
real process where its exit status, streams and start-up are the point.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from conftest import EXAMPLE, ROOT, meshc_in_process, settled

from compiler import launch
from compiler.cli import exits, termination
from compiler.cli import main as cli_main
from compiler.diagnostics import escape
from compiler.spec.load import load_documents, read_tree


def meshc(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """`meshc ARGS` from `cwd`, in this process."""
    result = meshc_in_process(*args, cwd=cwd)
    assert "Traceback" not in result.stdout + result.stderr
    return result


def meshc_process(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """`python -m compiler ARGS` from `cwd` in a child process, as users run it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MESHC_DEBUG", None)
    result = subprocess.run(
        [sys.executable, "-m", "compiler", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in result.stdout + result.stderr
    return result


def test_validate_example() -> None:
    result = meshc_process("validate", "mesh-spec")
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"mesh-spec: ok, \d+ services in 3 datacenters\n", result.stdout)


def test_validate_defaults_to_mesh_spec() -> None:
    assert meshc("validate").returncode == 0


def misspelled_dependency(spec: Path) -> Path:
    """A copy of the example at `spec` whose upload depends on `metdata` (an unknown-dependency error)."""
    shutil.copytree(EXAMPLE, spec)
    upload = spec / "services" / "upload.yaml"
    upload.write_text(upload.read_text().replace("- service: metadata", "- service: metdata"))
    return spec


def test_validate_invalid_spec_exits_2(tmp_path: Path) -> None:
    misspelled_dependency(tmp_path / "spec")
    result = meshc_process("validate", "spec", cwd=tmp_path)
    assert result.returncode == 2
    assert re.search(
        r"^spec/services/upload\.yaml:\d+:14: error: unknown dependency 'metdata' "
        r"\(did you mean 'metadata'\?\); add services/metdata\.yaml or fix the name  \[unknown-dependency\]$",
        result.stderr,
        re.M,
    ), result.stderr
    assert result.stderr.endswith("Found 1 error in 1 file\n")


# ------------------------------------------------------------------ explain

WORKLOAD = re.compile(
    r"  (?P<id>\S+)  \[(?P<dc>[^,]+), (?P<region>[^\]]+)\]  (?P<identity>spiffe://\S+)(?:  wave (?P<wave>\S+))?"
)
DEPENDENCY = re.compile(r"    -> (?P<service>\S+) on 127\.0\.0\.1:(?P<port>\d+) \((?P<locality>\w+)\): .*")
SOURCE = re.compile(r"         p(?P<priority>\d+)  (?P<dc>\S+)\s+(?P<kind>zookeeper|kubernetes) .*")


def parse_explain(text: str) -> dict[str, tuple[str, dict[str, tuple[str, list[tuple[int, str]]]]]]:
    """workload id -> (its DC, dependency -> (locality, [(priority, source DC)…]))."""
    workloads: dict = {}
    current = dependency = None
    for line in text.splitlines():
        if match := WORKLOAD.fullmatch(line):
            current = workloads[match["id"]] = (match["dc"], {})
        elif match := DEPENDENCY.fullmatch(line):
            dependency = current[1][match["service"]] = (match["locality"], [])
        elif match := SOURCE.fullmatch(line):
            dependency[1].append((int(match["priority"]), match["dc"]))
    return workloads


def test_explain_upload_priorities_follow_the_clients_datacenter(example_build) -> None:
    result = meshc("explain", "upload")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(
        "upload  owner storage-frontend, protocol http\n  called by: api-gateway\n"
    )
    workloads = parse_explain(result.stdout)
    assert set(workloads) == {w.id for w in example_build.mesh.workloads_of("upload")}
    waves = dict(re.findall(r"^  (\S+)  \[.*  wave (\S+)$", result.stdout, re.M))
    assert waves == {w: example_build.mesh.waves[w] for w in workloads} and set(waves.values()) == {
        "sjc",
        "iad",
    }
    failover_lists = {name: dc.failover for name, dc in example_build.spec.mesh.datacenters.items()}
    checked = 0
    for dc, dependencies in workloads.values():
        assert dependencies, "every upload workload has dependencies"
        for name, (locality, sources) in dependencies.items():
            assert sources, f"{name}: no sources"
            priorities = [p for p, _ in sources]
            assert priorities == sorted(priorities)
            if locality == "global":
                assert set(priorities) == {0}
                continue
            server_dcs = {source_dc for _, source_dc in sources}
            if dc in server_dcs:
                assert {source_dc for p, source_dc in sources if p == 0} == {dc}, (dc, name)
            # after priority 0: the client DC's failover order, restricted to where the server runs
            order = list(dict.fromkeys(source_dc for _, source_dc in sources))
            assert order == [d for d in [dc, *failover_lists[dc]] if d in server_dcs], (dc, name)
            checked += 1
    assert checked >= 6


def test_explain_json(example_build) -> None:
    result = meshc("explain", "upload", "--format", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["service"] == "upload" and report["callers"] == ["api-gateway"]
    assert [w["id"] for w in report["workloads"]] == [w.id for w in example_build.mesh.workloads_of("upload")]
    encryption = next(d for d in report["workloads"][0]["dependencies"] if d["service"] == "encryption")
    assert encryption["listener"] == "127.0.0.1:7105"
    assert encryption["policy"]["timeout_ms"] == 2000
    assert [s["priority"] for s in encryption["sources"]] == [0, 1]


def test_explain_unknown_service() -> None:
    result = meshc("explain", "uplaod")
    assert result.returncode == 2
    assert result.stderr == "meshc: error: unknown service 'uplaod' (did you mean 'upload'?)\n"


def test_a_spec_directory_named_as_a_service_says_how_to_give_it() -> None:
    """`meshc graph mesh-spec` took the directory for a service; the error now says it is one, and lists services."""
    result = meshc("graph", "mesh-spec")
    assert result.returncode == 2
    assert result.stderr.startswith(
        "meshc: error: unknown service 'mesh-spec'; the spec's services: api-gateway, "
    )
    assert result.stderr.endswith(
        "; 'mesh-spec' is a directory: a spec directory is given as --spec mesh-spec\n"
    )


@pytest.mark.parametrize("command", [["validate"], ["plan", "--format", "json"], ["check"]])
def test_every_command_taking_the_spec_first_takes_it_as_spec_too(command: list[str]) -> None:
    """validate, build, check, plan and drift take the spec directory first; explain, graph, diff and promote as
    --spec. Either form now works for the first ones, and two different directories are a usage error."""
    positional = meshc(*command, "mesh-spec")
    option = meshc(*command, "--spec", "mesh-spec")
    assert (option.returncode, option.stdout, option.stderr) == (
        positional.returncode,
        positional.stdout,
        positional.stderr,
    )
    assert positional.returncode == 0
    twice = meshc(*command, "mesh-spec", "--spec", "docs")
    assert twice.returncode == 2
    assert twice.stderr.startswith(f"meshc: error: {command[0]}: two spec directories: mesh-spec and docs; ")


def test_explain_on_an_invalid_spec_exits_2(tmp_path: Path) -> None:
    (tmp_path / "spec").mkdir()
    result = meshc("explain", "upload", "--spec", "spec", cwd=tmp_path)
    assert result.returncode == 2
    assert "spec/mesh.yaml:1:1: error: no mesh.yaml here; is this a mesh spec directory?" in result.stderr


# ------------------------------------------------------------------ schema


@pytest.mark.parametrize("name", ["mesh", "service"])
def test_schema_is_a_valid_json_schema(name: str) -> None:
    result = meshc("schema", name)
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_schema_default_is_the_service_schema() -> None:
    assert json.loads(meshc("schema").stdout)["title"] == "meshc services/<name>.yaml"


def test_published_schemas_accept_the_example_spec() -> None:
    """What an editor plugin sees: the published schemas, $refs and all, against the example files."""
    schemas = {name: json.loads(meshc("schema", name).stdout) for name in ("mesh", "service")}
    for name, doc in load_documents(read_tree(EXAMPLE), "mesh-spec").items():
        schema = schemas["mesh" if name.endswith("/mesh.yaml") else "service"]
        assert not list(jsonschema.Draft202012Validator(schema).iter_errors(doc.data)), name


# ------------------------------------------------------------------ build, check, usage


def test_build_then_check(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = meshc("build", "mesh-spec", "-o", str(out))
    assert first.returncode == 0, first.stderr
    assert (out / "MANIFEST.json").is_file()
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in [out, *out.rglob("*")]}
    assert meshc("build", "mesh-spec", "-o", str(out)).stdout == f"{out}: up to date, nothing written\n"
    # not a byte written
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in [out, *out.rglob("*")]} == before
    assert meshc("check", "mesh-spec", "-o", str(out)).returncode == 0
    victim = next(p for p in sorted(out.rglob("*")) if p.is_file() and p.name != "MANIFEST.json")
    victim.write_bytes(victim.read_bytes() + b"# edited\n")
    result = meshc("check", "mesh-spec", "-o", str(out))
    assert result.returncode == 1
    assert (
        "hand-edited" in result.stdout
        and victim.relative_to(out).as_posix() in result.stdout
        and result.stderr == ""
    )


@pytest.mark.parametrize("args", [["bogus"], ["validate", "a", "b"], ["explain"], ["schema", "nope"], []])
def test_usage_errors_exit_2(args: list[str]) -> None:
    """One line that says what is wrong and where help is; argparse printed its usage block before it."""
    result = meshc(*args)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.startswith("meshc: error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "usage:" not in result.stderr and result.stderr.endswith(" --help`\n")


@pytest.mark.parametrize("command", ["build", "check"])
@pytest.mark.parametrize("value", ["-5", "nan", "soon"])
def test_a_lock_timeout_that_is_no_duration_is_a_usage_error(
    tmp_path: Path, command: str, value: str
) -> None:
    # `--lock-timeout -5` used to give up at once and blame another build ("after -5s", exit 4).
    out = tmp_path / "out"
    result = meshc(command, str(EXAMPLE), "-o", str(out), f"--lock-timeout={value}")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.startswith(
        f"meshc: error: {command}: argument --lock-timeout: '{value}' is not a number"
    )
    assert result.stderr.count("\n") == 1 and not os.path.lexists(out)


# A child that gets a SIGINT while it imports compiler.cli (`meshc` spends ~70 ms there): `python -m compiler`'s own
# path, run by runpy as `-m` runs it, with the signal sent from inside that very import, whatever the machine's load.
_INTERRUPTED_WHILE_LOADING = """
import builtins, os, runpy, signal, sys
stop = getattr(signal, sys.argv.pop(1))
if sys.argv.pop(1) == "ignored":
    signal.signal(stop, signal.SIG_IGN)
real = builtins.__import__
def hooked(name, *args, **kwargs):
    if name == "compiler.cli" and "compiler.cli" not in sys.modules:
        os.kill(os.getpid(), stop)
    return real(name, *args, **kwargs)
builtins.__import__ = hooked
sys.argv[0] = "meshc"
runpy.run_module("compiler", run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize(
    ("stop", "code", "line"),
    [
        ("SIGINT", 130, "meshc: interrupted"),
        ("SIGTERM", 143, "meshc: terminated (SIGTERM)"),  # CI timeouts, systemd, timeout(1)
        ("SIGHUP", 129, "meshc: terminated (SIGHUP)"),  # a closed terminal
    ],
)
@pytest.mark.parametrize("disposition", ["default", "ignored"])
def test_a_signal_while_the_command_line_loads_is_one_line_and_128_plus_the_signal(
    stop: str, code: int, line: str, disposition: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _INTERRUPTED_WHILE_LOADING, stop, disposition, "validate", str(EXAMPLE)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    if (
        disposition == "ignored"
    ):  # a background job of a script, nohup: the signal stays ignored, the command runs
        assert (result.returncode, result.stderr) == (0, "")
        return
    assert (result.returncode, result.stdout, result.stderr) == (code, "", line + "\n")
    assert launch.INTERRUPTED == exits.EXIT_INTERRUPTED == 130  # one code, written twice (compiler.launch)
    assert launch.ENDING == termination.ENDING  # the signals, written twice too


def test_a_ctrl_c_while_the_arguments_are_parsed_is_one_line_and_exit_130(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from compiler import cli

    def interrupted(argv: object = None) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_parser", interrupted)
    result = meshc("validate", str(EXAMPLE))
    assert (result.returncode, result.stdout, result.stderr) == (130, "", "meshc: interrupted\n")


_INTERRUPTED_TWICE = """
import os, signal, sys
from compiler import cli

class Flushing:  # stdout whose final flush meets one more Ctrl-C
    def __init__(self, stream):
        self.stream = stream
    def write(self, text):
        return self.stream.write(text)
    def flush(self):
        os.kill(os.getpid(), signal.SIGINT)
        self.stream.flush()

def main(argv=None):
    try:
        os.kill(os.getpid(), signal.SIGINT)  # the first Ctrl-C, during the command
        signal.pause()
    except KeyboardInterrupt:
        print("meshc: interrupted", file=sys.stderr)
        if sys.argv[1] == "answering":
            os.kill(os.getpid(), signal.SIGINT)  # the second, as the command answers the first
        return 130

cli.main = main
sys.stdout = Flushing(sys.stdout)
cli.run()
"""


@pytest.mark.parametrize("when", ["answering", "flushing"])
def test_a_second_ctrl_c_as_the_command_ends_is_no_traceback(when: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _INTERRUPTED_TWICE, when],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = ["meshc: interrupted"] * (2 if when == "answering" else 1)
    assert (result.returncode, result.stderr.splitlines()) == (130, lines)


def test_a_usage_error_names_the_command_and_its_help() -> None:
    result = meshc("explain")
    assert result.stderr == (
        "meshc: error: explain: the following arguments are required: service; see `meshc explain --help`\n"
    )


def test_a_command_parses_and_helps_as_it_does_among_all_commands() -> None:
    """A named command gets a parser with only its own arguments (compiler.cli._parser_of): the same help, the same
    parse, and every command still listed by `meshc --help`."""
    from compiler.cli import _COMMANDS, _parser, _parser_of

    def commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
        (action,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        return dict(action.choices)

    everything = _parser_of(None)
    assert list(commands(everything)) == list(_COMMANDS)
    for name in _COMMANDS:
        alone = commands(_parser([name]))
        assert list(alone) == [name]
        assert alone[name].format_help() == commands(everything)[name].format_help()
    argv = ["build", "spec", "-o", "x"]
    assert _parser(argv).parse_args(argv) == everything.parse_args(argv)
    listed = everything.format_help()
    assert all(f"    {name}" in listed for name in _COMMANDS)
    assert _parser(["--help"]) is everything and _parser(["bogus"]) is everything


@pytest.mark.parametrize(
    ("columns", "terminal", "width"), [("50", 120, 50), ("", 120, 120), ("x", 100, 100), ("", None, 80)]
)
def test_help_is_as_wide_as_the_terminal(
    monkeypatch: pytest.MonkeyPatch, columns: str, terminal: int | None, width: int
) -> None:
    """The width shutil.get_terminal_size gives (compiler.cli.usage.Formatter): $COLUMNS, else the terminal's, else
    80 (not on a terminal)."""
    from compiler.cli import _parser
    from compiler.cli.usage import _columns

    def terminal_size(fd: int = 1) -> os.terminal_size:
        if terminal is None:
            raise OSError("not a terminal")
        return os.terminal_size((terminal, 40))

    monkeypatch.setenv("COLUMNS", columns)
    monkeypatch.setattr(os, "get_terminal_size", terminal_size)
    assert _columns() == shutil.get_terminal_size().columns == width
    parser = _parser(["--help"])
    ours = parser.format_help()
    monkeypatch.setattr(
        parser, "formatter_class", argparse.HelpFormatter
    )  # argparse's own, which asks shutil
    assert ours == parser.format_help()
    assert max(map(len, ours.splitlines())) <= width - 2


def test_version() -> None:
    result = meshc_process("--version")
    assert result.returncode == 0 and re.fullmatch(r"meshc \d+\.\d+\.\d+\n", result.stdout)


def test_readme_lists_every_diagnostic_code() -> None:
    from compiler.diagnostics import CODES

    readme = (ROOT / "README.md").read_text("utf-8")
    section = readme.split("\n## Diagnostics\n", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\| `([a-z0-9-]+)` \|", section, re.M)
    assert sorted(listed) == sorted(CODES) and len(listed) == len(set(listed))


def schema_keys(schema: dict, defs: dict) -> set[str]:
    """Every property name a schema defines, at any depth (through $refs, maps and lists)."""
    if "$ref" in schema:
        schema = defs[schema["$ref"].rsplit("/", 1)[1]]
    found = set(schema.get("properties", {}))
    children = [
        *schema.get("properties", {}).values(),
        schema.get("additionalProperties"),
        schema.get("items"),
    ]
    for child in children:
        if isinstance(child, dict):
            found |= schema_keys(child, defs)
    return found


def test_readme_spec_reference_names_every_schema_key() -> None:
    from compiler.spec.schema import SCHEMA_NAMES, schema_text

    readme = (ROOT / "README.md").read_text("utf-8")
    reference = readme.split("\n## The spec\n", 1)[1].split("\n## ", 1)[0]
    # names inside code spans: `sidecar.admin_port`, `{cluster, namespace}`
    named = {
        word for quoted in re.findall(r"`([^`]+)`", reference) for word in re.findall(r"[a-z0-9_]+", quoted)
    }
    for name in SCHEMA_NAMES:
        schema = json.loads(schema_text(name))
        keys = schema_keys(schema, schema["$defs"])
        assert len(keys) > 10
        assert keys - named == set(), f"{name}: keys missing from the README's spec reference"


def test_readme_diagnostic_example_is_real(tmp_path: Path) -> None:
    misspelled_dependency(tmp_path / "mesh-spec")
    result = meshc("validate", "mesh-spec", cwd=tmp_path)
    readme = (ROOT / "README.md").read_text("utf-8")
    assert result.stderr.splitlines()[0] in readme


def test_a_closed_pipe_is_not_an_internal_error() -> None:
    """`meshc explain upload | head -1`: the reader is gone before meshc writes; meshc exits quietly."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write now fails with EPIPE, whatever the pipe's buffer size
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "compiler", "explain", "upload", "--spec", str(EXAMPLE)],
            stdout=write_end,
            stderr=subprocess.PIPE,
            cwd=ROOT,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert proc.returncode == 0, proc.stderr
    assert b"internal error" not in proc.stderr and b"Traceback" not in proc.stderr


@pytest.mark.parametrize("url", ["puppetdb:8081", "file:///etc/passwd", "http://[::1", "https://"])
def test_drift_and_promote_refuse_a_puppetdb_that_is_no_http_url(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for command in ("drift", "promote"):
        # was an internal error (exit 3) from urllib's ValueError
        assert cli_main([command, "--puppetdb", url]) == 2
        err = capsys.readouterr().err
        assert (
            err == f"{url}: error: --puppetdb takes PuppetDB's http:// or https:// URL "
            "(e.g. https://puppetdb:8081)  [drift-usage]\n"
        )


def test_validate_and_build_warn_when_the_rollout_is_not_in_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A copy outside git: rollout.yaml is there, its pins name no revision, so every wave gets the spec as it is
    # and the canary hosts' node files go. Documented, but never silent.
    spec, out = tmp_path / "spec", tmp_path / "out"
    shutil.copytree(EXAMPLE, spec)
    warning = (
        f"meshc: warning: {spec}/rollout.yaml pins git revisions, but {spec} is not in a git repository "
        "(a copy of the spec has no history): no wave is held back, every target gets the spec as it is "
        "(a plain build)\n"
    )
    assert cli_main(["validate", str(spec)]) == 0
    assert capsys.readouterr().err == warning
    assert cli_main(["build", str(spec), "-o", str(out)]) == 0
    assert capsys.readouterr().err == warning
    assert not (out / "puppet/data/nodes").exists()


NEEDS_GIT = (
    "meshc needs git to read the revisions rollout.yaml pins, and any other revision of the spec: install git"
)


@pytest.mark.parametrize(
    ("command", "variable"),
    [("validate", "PATH"), ("check", "PATH"), ("build", "PATH"), ("validate", "GIT_PYTHON_GIT_EXECUTABLE")],
)
def test_a_rollout_without_git_is_one_line_and_exit_4(tmp_path: Path, command: str, variable: str) -> None:
    # GitPython runs git as it is imported and raised a 15-line ImportError: "internal error", exit 3. A child
    # process, since this one imported GitPython long ago. PATH keeps only python3; GitPython honours
    # $GIT_PYTHON_GIT_EXECUTABLE instead of PATH where it is set.
    bin_dir, missing = tmp_path / "bin", tmp_path / "no-such-git"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(sys.executable)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_PYTHON_", "MESHC_DEBUG"))}
    env |= {"PYTHONPATH": str(ROOT), variable: str(bin_dir if variable == "PATH" else missing)}
    output = [] if command == "validate" else ["-o", "out"]
    result = subprocess.run(
        [sys.executable, "-m", "compiler", command, str(EXAMPLE), *output],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (result.returncode, result.stdout) == (4, ""), result.stderr
    if variable == "PATH":
        assert result.stderr == f"meshc: error: git: not found on PATH, or it does not run; {NEEDS_GIT}\n"
    else:
        assert (
            result.stderr
            == f"meshc: error: {missing}: does not run as git ($GIT_PYTHON_GIT_EXECUTABLE); {NEEDS_GIT}\n"
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin"]  # no output, lock or cache was made


def test_plan_and_promote_say_why_there_is_no_rollout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "spec"  # a copy outside git: its rollout.yaml is there, but has no history to pin
    shutil.copytree(EXAMPLE, spec)
    (spec / "rollout.yaml").write_text("hold: false\npins: {}\n")
    assert cli_main(["plan", str(spec)]) == 2
    assert capsys.readouterr().err.startswith(
        f"meshc: error: {spec}/rollout.yaml pins git revisions, but {spec} is not in a git repository"
    )
    assert cli_main(["promote", "--spec", str(spec), "--force"]) == 2
    assert capsys.readouterr().err.startswith(
        f"meshc: error: {spec}/rollout.yaml pins git revisions, but {spec} is not in a git repository"
    )
    # said "no rollout.yaml in …" of a directory that is not there
    assert cli_main(["plan", str(tmp_path / "absent")]) == 2
    err = capsys.readouterr().err  # (quote() shortens a long path)
    assert err.startswith("meshc: error: spec directory '") and err.endswith("' does not exist\n")


def test_drift_reads_endless_inputs_only_up_to_their_cap(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Both read /dev/zero until memory ran out; a dump already stopped one byte past its cap.
    import compiler.drift.puppetdb

    assert cli_main(["drift", str(EXAMPLE), "--acknowledgements", "/dev/zero"]) == 2
    assert (
        capsys.readouterr().err
        == "/dev/zero:1:1: error: file is larger than 1024 KiB; split it or trim it  [drift-acknowledgement]\n"
    )
    monkeypatch.setattr(
        compiler.drift.puppetdb, "MAX_EXPORT_BYTES", 1 << 20
    )  # the real cap (1 GiB) is too much for a test
    assert cli_main(["drift", str(EXAMPLE), "--puppet-facts", "/dev/zero"]) == 2
    assert (
        capsys.readouterr().err
        == "/dev/zero: error: larger than 1 MiB; is this a PuppetDB export?  [puppetdb-export]\n"
    )


def _modules_after(spec: Path, out: Path, validate: bool = True) -> set[str]:
    """The modules a fresh interpreter holds after `meshc validate SPEC` (unless `validate` is False) and
    `meshc build SPEC -o OUT`."""
    probe = (
        "import sys\n"
        "from compiler.cli import main\n"
        + ("assert main(['validate', sys.argv[1]]) == 0\n" if validate else "")
        + "assert main(['build', sys.argv[1], '-o', sys.argv[2]]) == 0\n"
        "print('\\n'.join(sorted(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, str(spec), str(out)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return set(result.stdout.split())


def test_validate_and_build_do_not_import_what_other_commands_need(tmp_path: Path) -> None:
    # The differ, reports, graph renderers and drift are other commands' start-up cost: cli imports them lazily;
    # the rollout modules and GitPython only for a spec with a rollout.yaml.
    plain = tmp_path / "spec"
    shutil.copytree(EXAMPLE, plain, ignore=shutil.ignore_patterns("rollout.yaml"))
    loaded = _modules_after(plain, tmp_path / "out")
    assert "compiler.pipeline" in loaded and "compiler.backends.kubernetes" in loaded  # the probe built
    lazy = {
        "compiler.diff",
        "compiler.report",
        "compiler.graph.draw",
        "compiler.graph.calls",
        "compiler.drift",
    }
    assert (
        loaded & (lazy | {"git", "compiler.gitsource", "compiler.rollout.build", "compiler.rollout.pins"})
        == set()
    )
    with_rollout = _modules_after(EXAMPLE, tmp_path / "out-rollout")
    assert {"git", "compiler.rollout.build"} <= with_rollout and with_rollout & lazy == set()


def test_a_no_op_build_imports_no_parser_and_no_stage(tmp_path: Path) -> None:
    # A build that finds the recorded spec over an untouched tree stops before parsing: it must not pay
    # for the YAML parser, the schema engine, the IR or the threads and libc a writing build uses.
    plain = tmp_path / "spec"
    shutil.copytree(EXAMPLE, plain, ignore=shutil.ignore_patterns("rollout.yaml"))
    assert cli_main(["build", str(plain), "-o", str(tmp_path / "out")]) == 0
    settled(tmp_path / "out")  # no file in the cache's clock tick (conftest.settled)
    loaded = _modules_after(plain, tmp_path / "out", validate=False)
    assert "compiler.incremental" in loaded
    heavy = {"yaml", "jsonschema", "jinja2", "compiler.spec.document", "compiler.ir.model", "compiler.render"}
    assert loaded & (heavy | {"concurrent.futures", "ctypes"}) == set()


@pytest.mark.parametrize("control", ["\n", "\t"])
def test_build_and_check_name_an_output_with_a_line_break_on_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], control: str
) -> None:
    # What a command prints of a path it was given is escaped, as in its errors: one result, one line (a tab
    # was printed raw).
    plain = tmp_path / f"sp{control}ec"
    shutil.copytree(EXAMPLE, plain, ignore=shutil.ignore_patterns("rollout.yaml"))
    out = tmp_path / f"out{control}put"
    shown, spec_shown = (f"out{escape(control)}put", f"sp{escape(control)}ec")
    assert cli_main(["validate", str(plain)]) == 0
    assert cli_main(["build", str(plain), "-o", str(out)]) == 0
    assert cli_main(["check", str(plain), "-o", str(out)]) == 0
    (out / "puppet" / "hiera.yaml").write_text("edited\n")
    assert cli_main(["check", str(plain), "-o", str(out)]) == 1
    printed = capsys.readouterr().out.splitlines()
    assert all(control not in line for line in printed)
    assert printed[0].endswith(f"{spec_shown}: ok, 18 services in 3 datacenters")
    assert re.search(re.escape(shown) + r": \d+ file\(s\) written, 0 removed$", printed[1])
    assert printed[2].endswith(f"{shown}: up to date with {escape(str(plain))}")
    assert printed[3].startswith(str(tmp_path)) and f"{shown}: not what the spec renders" in printed[3]
    assert printed[4].endswith(f"{shown}/puppet/hiera.yaml")
