"""The meshc command line: parse arguments, call one library function, print, exit.

Only this package prints or exits. What a command alone needs (the differ and git, drift, rollout,
the graph renderers, the report templates) is imported inside that command, so that `meshc
validate` and `meshc build` load only what they use (`python -X importtime -m compiler validate`).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path

from compiler import __version__, lifetime
from compiler.cli.arguments import (
    diff_arguments,
    drift_arguments,
    explain_arguments,
    output_arguments,
    plan_arguments,
    promote_arguments,
    schema_arguments,
    spec_argument,
)
from compiler.cli.evidence import drift_request
from compiler.cli.exits import (
    EXIT_ENVIRONMENT,
    EXIT_FINDINGS,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_INVALID,
    EXIT_OK,
)
from compiler.cli.graph import GRAPH_HELP, graph_arguments, run_graph
from compiler.cli.termination import Terminated, answer_termination, end_termination
from compiler.cli.usage import Parser
from compiler.diagnostics import (
    EnvironmentFailure,
    InternalError,
    SpecError,
    UnknownService,
    escape,
    format_all,
)
from compiler.output.disk import cause
from compiler.output.guard import OutputRefused
from compiler.pipeline import collector_paused, compile_dir, validate_only
from compiler.rollout import has_rollout
from compiler.spec.load import spec_files
from compiler.spec.schema import schema_text


def run() -> None:
    """What the `meshc` console script and `python -m compiler` run once loaded (compiler.launch): `main`, then the
    process ends without tearing its heap down.

    Interpreter shutdown frees every module and object one by one, for a process that is ending: after flushing
    what meshc printed, os._exit skips it. A one-service rebuild at 1,000 services takes 28 ms less CPU (0.459 s
    against 0.487 s, medians of 11 interleaved pairs on a loaded 2-core VM). Nothing meshc does needs shutdown:
    its files are closed and its threads joined when `main` returns.

    For the same reason the cycle collector stays off to the end (`collector_paused` would turn it back on when
    the command returns, and the next allocation would then walk every object the build made: ~145 ms after a
    full build at 1,000 services wrote its last file), and what the build made is parked, not freed
    (compiler.lifetime).
    """
    gc.disable()
    lifetime.keep_until_exit()
    # Until now compiler.launch's handler ends the process at once: nothing is written yet.
    answer_termination()  # a SIGTERM or SIGHUP is answered as a Ctrl-C (compiler.cli.termination)
    try:
        code = main()
    except KeyboardInterrupt as stop:
        code = _stopped(stop)  # a second Ctrl-C (or one after a SIGTERM) while main answered the first
    # The command is over: a Ctrl-C now could only break the flush below, with a traceback; a SIGTERM ends the
    # process at once, as it would any that has nothing left to clean up (a flush a stalled reader blocks included).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    end_termination()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):  # a reader that went away, or a stream a caller closed
            pass
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """What the `meshc` console script runs (through `run`): parse the arguments, run the command, its exit code."""
    try:
        args = _parser(argv).parse_args(argv)  # in here too: a Ctrl-C while the parser is built is answered
        handler: Callable[[argparse.Namespace], int] = args.handler
        with collector_paused():  # a command is one batch of acyclic garbage; see collector_paused
            return handler(args)
    except SpecError as exc:
        print(format_all(exc.diagnostics), file=sys.stderr)
        return EXIT_INVALID
    except (OutputRefused, UnknownService) as exc:
        print(
            f"meshc: error: {escape(str(exc.args[0] if isinstance(exc, UnknownService) else exc))}",
            file=sys.stderr,
        )
        return EXIT_INVALID
    except EnvironmentFailure as exc:
        print(f"meshc: error: {escape(str(exc))}", file=sys.stderr)
        return EXIT_ENVIRONMENT
    except InternalError as exc:
        if os.environ.get("MESHC_DEBUG"):
            raise
        print(f"meshc: internal error: {exc}", file=sys.stderr)
        return EXIT_INTERNAL
    except KeyboardInterrupt as stop:  # a Ctrl-C, or a SIGTERM or SIGHUP once `run` answers them
        return _stopped(stop)
    except BrokenPipeError:  # `meshc explain x | head`: the reader has all it wanted
        # Point stdout at /dev/null so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except OSError as exc:
        if exc.errno is None:  # meshc's own sentence, e.g. a spec directory that does not exist
            print(f"meshc: error: {escape(str(exc))}", file=sys.stderr)
            return EXIT_INVALID
        # The machine stopped meshc (no permission, disk full, read-only): the path and the cause, never a bare errno.
        where = f"{exc.filename}: " if exc.filename is not None else ""
        print(f"meshc: error: {escape(where)}{cause(exc)}", file=sys.stderr)
        return EXIT_ENVIRONMENT
    except Exception as exc:  # a bug in meshc, not in the spec: say so without a wall of traceback
        if os.environ.get("MESHC_DEBUG"):
            raise
        print(
            f"meshc: internal error: {type(exc).__name__}: {exc} (set MESHC_DEBUG=1 for a traceback)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


def _stopped(stop: KeyboardInterrupt) -> int:
    """Say that a signal stopped the command (as compiler.launch says it before this can); its exit status."""
    if isinstance(stop, Terminated):
        print(stop.line, file=sys.stderr)
        return stop.exit_code
    print("meshc: interrupted", file=sys.stderr)
    return EXIT_INTERRUPTED


def _parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser of `argv`: with only its command's arguments when it names one (see `_parser_of`)."""
    words = sys.argv[1:] if argv is None else argv
    return _parser_of(words[0] if words and words[0] in _COMMANDS else None)


@cache  # parsing does not change the parser; in-process callers (the test suite: 700 calls) build it once
def _parser_of(command: str | None) -> argparse.ArgumentParser:
    """meshc's parser; for `command`, only that command's arguments are added (None: every command's).

    Adding every command's arguments took 5.6 ms of each start (~2 % of a one-service rebuild at 1,000 services).
    A command's parse, help and errors only ever read its own subparser; `meshc --help` and a mistyped command
    come here with None and get them all.
    """
    parser: argparse.ArgumentParser = Parser(
        prog="meshc", description="Compile a service-mesh spec into Puppet and Kubernetes artifacts."
    )
    parser.add_argument("--version", action="version", version=f"meshc {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, handler, arguments) in _COMMANDS.items():
        if command is None or name == command:
            sub = commands.add_parser(name, help=help_text, description=help_text)
            sub.set_defaults(handler=handler)
            arguments(sub)
    return parser


def _validate(args: argparse.Namespace) -> int:
    spec = validate_only(spec_files(args.spec), args.spec.as_posix().rstrip("/"))
    if has_rollout(args.spec):  # rollout.yaml and the inventory are part of the spec repo too
        _validate_rollout(args.spec)
    print(
        f"{escape(str(args.spec))}: ok, {len(spec.services)} services in {len(spec.mesh.datacenters)} datacenters"
    )
    return EXIT_OK


def _validate_rollout(spec_dir: Path) -> None:
    """The rollout as `meshc build` checks it: its pins resolve, and its state and the next promotion's are safe."""
    from compiler.rollout.output import checked_state
    from compiler.rollout.revisions import rollout_context

    context = rollout_context(spec_dir)
    if context is None:
        from compiler.rollout.revisions import plain_build_note

        print(f"meshc: warning: {escape(plain_build_note(spec_dir))}", file=sys.stderr)
        return
    try:
        checked_state(context)
    finally:
        context.location.repo.close()


def _waiting(lock: Path) -> None:
    print(
        f"meshc: waiting for another meshc build or check of this output (lock {escape(str(lock))})",
        file=sys.stderr,
        flush=True,
    )


def _build(args: argparse.Namespace) -> int:
    from compiler.incremental import build_output  # with a rollout.yaml, every wave's revision is compiled

    result = build_output(args.spec, args.output, args.lock_timeout, _waiting)
    for note in result.notes:
        print(f"meshc: warning: {escape(note)}", file=sys.stderr)
    if not result.changed:
        print(f"{escape(str(args.output))}: up to date, nothing written")
    else:
        print(
            f"{escape(str(args.output))}: {len(result.written)} file(s) written, {len(result.removed)} removed"
        )
    return EXIT_OK


def _check(args: argparse.Namespace) -> int:
    from compiler.incremental import check_output  # with a rollout.yaml, every wave's revision is compiled

    status, edits = check_output(args.spec, args.output, args.lock_timeout, _waiting)
    if status.clean:
        print(f"{escape(str(args.output))}: up to date with {escape(str(args.spec))}")
        return EXIT_OK
    from compiler.commands.check_report import format_status  # only once something differs

    print(format_status(status, args.output, edits))  # the report is the result, like diff's: stdout
    return EXIT_FINDINGS


def _explain(args: argparse.Namespace) -> int:
    from compiler.commands.explain import explain, format_explain  # the IR, only for this command

    report = explain(compile_dir(args.spec).mesh, args.service)
    print(json.dumps(report, indent=2) if args.format == "json" else format_explain(report))
    return EXIT_OK


def _schema(args: argparse.Namespace) -> int:
    print(schema_text(args.name), end="")
    return EXIT_OK


def _plan(args: argparse.Namespace) -> int:
    from compiler.graph.status import render_plan_page
    from compiler.rollout import report
    from compiler.rollout.plan import plan_rollout
    from compiler.rollout.revisions import no_rollout_reason, rollout_context

    context = rollout_context(args.spec)
    if context is None:
        print(
            f"meshc: error: {escape(no_rollout_reason(args.spec))}: "
            "every target runs the spec as built (see README, Rollout)",
            file=sys.stderr,
        )
        return EXIT_INVALID
    formatters = {
        "text": report.format_text,
        "markdown": report.format_markdown,
        "json": report.format_json,
        "html": render_plan_page,
    }
    try:
        plan = plan_rollout(context)
    finally:
        context.location.repo.close()
    sys.stdout.write(formatters[args.format](plan))
    return EXIT_OK


def _promote(args: argparse.Namespace) -> int:
    from compiler.drift.gate import GateRefused, promotion_gate
    from compiler.drift.model import DriftInputError
    from compiler.rollout.plan import PromoteError, promote

    try:
        request = drift_request(args)
        done = promote(args.spec, args.output, args.wave, gate=promotion_gate(request, force=args.force))
    except (PromoteError, DriftInputError) as exc:
        print(
            exc if isinstance(exc, DriftInputError) else f"meshc: error: {escape(str(exc))}", file=sys.stderr
        )
        return EXIT_INVALID
    except GateRefused as exc:
        print(f"meshc: promote refused: {exc}", file=sys.stderr)
        return EXIT_FINDINGS
    print(
        f"promoted {done.wave}: {done.old[:12]} -> {done.new[:12]}; {escape(str(args.spec))}/rollout.yaml rewritten, "
        f"{escape(str(args.output))}: {len(done.written.written)} file(s) written, {len(done.written.removed)} removed"
    )
    if done.note:
        print(
            f"FORCED: {escape(done.note)} "
            f"(also the comment on pins.{done.wave} in {escape(str(args.spec))}/rollout.yaml)"
        )
    return EXIT_OK


def _diff(args: argparse.Namespace) -> int:
    # the report's Jinja environment is only needed here
    from compiler.commands.diff_markdown import format_markdown
    from compiler.commands.diff_report import format_json
    from compiler.commands.diff_text import format_text
    from compiler.diff.revisions import diff_revisions
    from compiler.gitsource import RevisionError

    try:
        result = diff_revisions(args.spec, args.base, args.head)
    except RevisionError as exc:
        print(f"meshc: error: {escape(str(exc))}", file=sys.stderr)
        return EXIT_INVALID
    color = args.format == "text" and sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    formatters = {
        "text": lambda d: format_text(d, color=color),
        "markdown": format_markdown,
        "json": format_json,
    }
    sys.stdout.write(formatters[args.format](result))
    return EXIT_FINDINGS if args.exit_code and result.changed else EXIT_OK


def _drift(args: argparse.Namespace) -> int:
    from compiler.drift.detect import detect_drift
    from compiler.drift.html import render_drift_page
    from compiler.drift.model import DriftInputError
    from compiler.drift.report import FORMATTERS

    try:
        request = drift_request(args, partial=args.partial)
        report = detect_drift(request)
    except DriftInputError as exc:
        print(exc, file=sys.stderr)
        return EXIT_INVALID
    sys.stdout.write(render_drift_page(report) if args.format == "html" else FORMATTERS[args.format](report))
    return EXIT_FINDINGS if report.failing else EXIT_OK


# Every command: its help line, its handler and what adds its arguments, in the order `meshc --help` lists them.
_COMMANDS: dict[
    str, tuple[str, Callable[[argparse.Namespace], int], Callable[[argparse.ArgumentParser], None]]
] = {
    "validate": ("check the spec and report every error", _validate, spec_argument),
    "build": ("compile the spec and write the output tree atomically", _build, output_arguments),
    "check": ("exit 1 unless the output tree is exactly what the spec renders", _check, output_arguments),
    "explain": (
        "show where a service runs and how it reaches its dependencies",
        _explain,
        explain_arguments,
    ),
    "schema": ("print the JSON Schema of mesh.yaml or of a service file", _schema, schema_arguments),
    "diff": (
        "show what a spec change does to every target, between two git revisions",
        _diff,
        diff_arguments,
    ),
    "drift": (
        "compare what runs (cluster dumps, PuppetDB) with what the spec renders",
        _drift,
        drift_arguments,
    ),
    "graph": (GRAPH_HELP, run_graph, graph_arguments),
    "plan": (
        "show each wave's revision, what the next promotion changes and the checked states",
        _plan,
        plan_arguments,
    ),
    "promote": (
        "move the next wave's pin forward (rewrites rollout.yaml) and rebuild the output",
        _promote,
        promote_arguments,
    ),
}
