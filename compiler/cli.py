"""The meshc command line: parse arguments, call one library function, print, exit."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from compiler import __version__
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
from compiler.output.lock import LOCK_TIMEOUT
from compiler.pipeline import collector_paused, compile_dir, spec_files, validate_only
from compiler.spec.schema import SCHEMA_NAMES, schema_text

# The differ, git and the explainer load only for the commands that use them: `meshc build`'s
# no-op path must not pay for importing them.
if TYPE_CHECKING:
    from compiler.diff.records import DocumentDiff
    from compiler.drift.detect import PuppetEvidence
    from compiler.output.compare import TreeStatus

EXIT_OK, EXIT_FINDINGS, EXIT_INVALID, EXIT_INTERNAL, EXIT_ENVIRONMENT = 0, 1, 2, 3, 4


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `meshc` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
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
    except KeyboardInterrupt:
        return 130
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meshc", description="Compile a service-mesh spec into Puppet and Kubernetes artifacts."
    )
    parser.add_argument("--version", action="version", version=f"meshc {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _command(commands, "validate", "check the spec and report every error", _validate, spec=True)
    build_cmd = _command(
        commands, "build", "compile the spec and write the output tree atomically", _build, spec=True
    )
    check_cmd = _command(
        commands, "check", "exit 1 unless the output tree is exactly what the spec renders", _check, spec=True
    )
    for sub in (build_cmd, check_cmd):
        sub.add_argument(
            "-o", "--output", type=Path, default=Path("output"), help="output directory (default: output)"
        )
        sub.add_argument(
            "--lock-timeout",
            type=float,
            default=LOCK_TIMEOUT,
            metavar="SECONDS",
            help=f"how long to wait for another build or check of the same output (default: {LOCK_TIMEOUT:g})",
        )
    explain_cmd = _command(
        commands, "explain", "show where a service runs and how it reaches its dependencies", _explain
    )
    explain_cmd.add_argument("service")
    explain_cmd.add_argument(
        "--spec", type=Path, default=Path("mesh-spec"), help="spec directory (default: mesh-spec)"
    )
    explain_cmd.add_argument("--format", choices=("text", "json"), default="text")
    schema_cmd = _command(
        commands, "schema", "print the JSON Schema of mesh.yaml or of a service file", _schema
    )
    schema_cmd.add_argument("name", nargs="?", choices=SCHEMA_NAMES, default="service")
    diff_cmd = _command(
        commands, "diff", "show what a spec change does to every target, between two git revisions", _diff
    )
    diff_cmd.add_argument("--base", required=True, help="base revision, e.g. origin/main")
    diff_cmd.add_argument(
        "--head", default=None, help="head revision (default: the working tree, uncommitted edits included)"
    )
    diff_cmd.add_argument(
        "--spec", type=Path, default=Path("mesh-spec"), help="spec directory (default: mesh-spec)"
    )
    diff_cmd.add_argument("--format", choices=("text", "markdown", "json"), default="text")
    diff_cmd.add_argument("--exit-code", action="store_true", help="exit 1 when any target changes")
    _drift_arguments(
        _command(
            commands,
            "drift",
            "compare what runs (cluster dumps, PuppetDB) with what the spec renders",
            _drift,
            spec=True,
        )
    )
    _graph_command(commands)
    plan_cmd = _command(
        commands,
        "plan",
        "show each wave's revision, what the next promotion changes and the checked states",
        _plan,
        spec=True,
    )
    plan_cmd.add_argument(
        "--format",
        choices=("text", "markdown", "json", "html"),
        default="text",
        help="html: the rollout status page, one self-contained file to publish from CI",
    )
    promote_cmd = _command(
        commands,
        "promote",
        "move the next wave's pin forward (rewrites rollout.yaml) and rebuild the output",
        _promote,
    )
    promote_cmd.add_argument(
        "wave", nargs="?", default=None, help="the wave to promote (default: the next one behind)"
    )
    promote_cmd.add_argument(
        "--spec", type=Path, default=Path("mesh-spec"), help="spec directory (default: mesh-spec)"
    )
    promote_cmd.add_argument(
        "-o", "--output", type=Path, default=Path("output"), help="output directory (default: output)"
    )
    _evidence_arguments(promote_cmd)
    promote_cmd.add_argument(
        "--force",
        action="store_true",
        help="promote although the wave before has not converged; recorded in the output and in rollout.yaml",
    )
    return parser


def _graph_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from compiler.graph.draw import FORMATS

    graph_cmd = _command(
        commands,
        "graph",
        "draw the mesh, or some services' neighbourhood, as Mermaid, DOT, SVG or HTML",
        _graph,
    )
    graph_cmd.add_argument(
        "services",
        nargs="*",
        metavar="SERVICE",
        help="draw only these services, their callers and dependencies",
    )
    graph_cmd.add_argument(
        "--depth", type=_depth, default=None, help="hops from SERVICE in each direction (default: 1)"
    )
    graph_cmd.add_argument("--format", choices=FORMATS, default="mermaid")
    graph_cmd.add_argument(
        "--spec", type=Path, default=Path("mesh-spec"), help="spec directory (default: mesh-spec)"
    )
    graph_cmd.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        help="write to this file (replaced atomically) instead of stdout",
    )


def _depth(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(
            f"expected a whole number of hops (0 draws SERVICE alone), got {text!r}"
        )
    return int(text)


def _command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    help_text: str,
    handler: Callable[[argparse.Namespace], int],
    spec: bool = False,
) -> argparse.ArgumentParser:
    sub = commands.add_parser(name, help=help_text, description=help_text)
    sub.set_defaults(handler=handler)
    if spec:
        sub.add_argument(
            "spec",
            nargs="?",
            type=Path,
            default=Path("mesh-spec"),
            help="spec directory (default: mesh-spec)",
        )
    return sub


def _validate(args: argparse.Namespace) -> int:
    from compiler.rollout.pins import resolve
    from compiler.rollout.revisions import rollout_context

    spec = validate_only(spec_files(args.spec), args.spec.as_posix().rstrip("/"))
    context = rollout_context(args.spec)  # rollout.yaml and the inventory are part of the spec repo too
    if context is not None:
        try:
            resolve(context.policy, context.rollout, context.location.repo)
        finally:
            context.location.repo.close()
    print(f"{args.spec}: ok, {len(spec.services)} services in {len(spec.mesh.datacenters)} datacenters")
    return EXIT_OK


def _waiting(lock: Path) -> None:
    print(
        f"meshc: waiting for another meshc build or check of this output (lock {lock})",
        file=sys.stderr,
        flush=True,
    )


def _build(args: argparse.Namespace) -> int:
    from compiler.incremental import build_output  # with a rollout.yaml, every wave's revision is compiled

    result = build_output(args.spec, args.output, args.lock_timeout, _waiting)
    if not result.changed:
        print(f"{args.output}: up to date, nothing written")
    else:
        print(f"{args.output}: {len(result.written)} file(s) written, {len(result.removed)} removed")
    return EXIT_OK


def _check(args: argparse.Namespace) -> int:
    from compiler.incremental import check_output  # with a rollout.yaml, every wave's revision is compiled

    status, edits = check_output(args.spec, args.output, args.lock_timeout, _waiting)
    if status.clean:
        print(f"{args.output}: up to date with {args.spec}")
        return EXIT_OK
    print(_format_status(status, args.output, edits))  # the report is the result, like diff's: stdout
    return EXIT_FINDINGS


def _format_status(status: TreeStatus, out: Path, edits: Mapping[str, DocumentDiff]) -> str:
    groups = (
        ("stale", status.stale),
        ("missing", status.missing),
        ("extra", status.extra),
        ("hand-edited", status.hand_edited),
    )
    counts = ", ".join(f"{len(paths)} {label}" for label, paths in groups if paths)
    lines = [f"{out}: not what the spec renders ({counts}); run `meshc build` and commit the result"]
    for label, paths in groups:
        for path in paths:
            lines.append(f"  {label:<12} {out.as_posix()}/{path}")
            lines += [f"      {line}" for line in _edit_lines(edits.get(path))]
    return "\n".join(lines)


def _edit_lines(edit: DocumentDiff | None) -> list[str]:
    """What a rebuild would change in a stale or hand-edited file (on disk → rendered, as diff shows base → head)."""
    if edit is None:
        return []
    from compiler.commands.diff_report import change_lines  # loaded only when something differs

    if not edit.changes and not edit.text:
        return ["(same data; only formatting or comments differ)"]
    return change_lines(edit.changes, limit=5) if edit.changes else list(edit.text[:12])


def _explain(args: argparse.Namespace) -> int:
    from compiler.commands.explain import explain, format_explain

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
            f"meshc: error: {no_rollout_reason(args.spec)}: every target runs the spec as built (see README, Rollout)",
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
    from compiler.drift.detect import DriftRequest
    from compiler.drift.gate import GateRefused, promotion_gate
    from compiler.drift.model import DriftInputError
    from compiler.rollout.plan import PromoteError, promote

    try:
        request = DriftRequest(
            spec=args.spec,
            kubernetes=tuple(args.kubernetes),
            acknowledgements=args.acknowledgements,
            puppet=_puppet_evidence(args),
            today=_today(),
        )
        done = promote(args.spec, args.output, args.wave, gate=promotion_gate(request, force=args.force))
    except (PromoteError, DriftInputError) as exc:
        print(exc if isinstance(exc, DriftInputError) else f"meshc: error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except GateRefused as exc:
        print(f"meshc: promote refused: {exc}", file=sys.stderr)
        return EXIT_FINDINGS
    print(
        f"promoted {done.wave}: {done.old[:12]} -> {done.new[:12]}; {args.spec}/rollout.yaml rewritten, "
        f"{args.output}: {len(done.written.written)} file(s) written, {len(done.written.removed)} removed"
    )
    if done.note:
        print(f"FORCED: {done.note} (also the comment on pins.{done.wave} in {args.spec}/rollout.yaml)")
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


def _drift_arguments(sub: argparse.ArgumentParser) -> None:
    """`meshc drift`'s options: the evidence (as promote takes it), --partial and --format."""
    _evidence_arguments(sub)
    sub.add_argument(
        "--partial",
        action="store_true",
        help="check only the evidence given: scopes without evidence are listed but do not fail the run",
    )
    sub.add_argument(
        "--format",
        choices=("text", "markdown", "json", "html"),
        default="text",
        help="html: the drift status page, one self-contained file to publish from CI",
    )


def _evidence_arguments(sub: argparse.ArgumentParser) -> None:
    """What runs, for drift and for promote's gate: one evidence option per platform, and the acknowledgements."""
    sub.add_argument(
        "--kubernetes",
        action="append",
        default=[],
        type=_cluster_dump,
        metavar="CLUSTER=DUMP",
        help="a `kubectl get ... -A -o yaml|json` dump of one cluster (repeat per cluster)",
    )
    vms = sub.add_mutually_exclusive_group()
    vms.add_argument(
        "--puppetdb",
        metavar="URL",
        help="PuppetDB to read the VMs' facts and reports from (https://host:8081)",
    )
    vms.add_argument(
        "--puppet-facts",
        type=Path,
        metavar="FILE",
        help='an export {"nodes": [...], "facts": [...]} instead of PuppetDB',
    )
    sub.add_argument(
        "--puppetdb-ca", type=Path, metavar="FILE", help="CA bundle PuppetDB's certificate is checked against"
    )
    sub.add_argument(
        "--puppetdb-cert",
        type=Path,
        metavar="FILE",
        help="client certificate PuppetDB admits (certificate-allowlist)",
    )
    sub.add_argument("--puppetdb-key", type=Path, metavar="FILE", help="the client certificate's private key")
    sub.add_argument(
        "--hiera",
        type=Path,
        metavar="DIR",
        help="the Puppet environment deployed on the server, compared with output/puppet/",
    )
    sub.add_argument(
        "--lag",
        type=_duration,
        default=None,
        metavar="DURATION",
        help="how long a host may run an older rendering before it is drifted, e.g. 30m, 2h (default: 30m)",
    )
    sub.add_argument(
        "--since",
        type=_instant,
        default=None,
        metavar="TIME",
        help="when the rendering was deployed (ISO 8601), unless --hiera gives it per file",
    )
    sub.add_argument(
        "--acknowledgements",
        type=Path,
        default=None,
        metavar="FILE",
        help="known drift (default: SPEC/drift-acknowledgements.yaml when it exists)",
    )


def _cluster_dump(text: str) -> tuple[str, Path]:
    cluster, sep, dump = text.partition("=")
    if not sep or not cluster or not dump:
        raise argparse.ArgumentTypeError(f"expected CLUSTER=DUMP, got {text!r}")
    return cluster, Path(dump)


def _duration(text: str) -> datetime.timedelta:
    """`30m`, `2h`, `90s`, `1h30m`: a lag."""
    import re

    match = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", text.strip())
    if not text.strip() or match is None:
        raise argparse.ArgumentTypeError(f"expected a duration such as 30m, 2h or 1h30m, got {text!r}")
    hours, minutes, seconds = (int(group or 0) for group in match.groups())
    return datetime.timedelta(hours=hours, minutes=minutes, seconds=seconds)


def _instant(text: str) -> datetime.datetime:
    """An ISO 8601 time; without a zone, UTC."""
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO 8601 time such as 2026-11-30T12:00:00Z, got {text!r}"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=datetime.UTC)


def _puppet_evidence(args: argparse.Namespace) -> PuppetEvidence:
    """The Puppet options of drift (and promote) as one request field.

    TLS files without --puppetdb are a usage error."""
    from compiler.drift.detect import PuppetEvidence
    from compiler.drift.model import DriftInputError

    tls = [
        f"--puppetdb-{name}"
        for name in ("ca", "cert", "key")
        if getattr(args, f"puppetdb_{name}") is not None
    ]
    if tls and not args.puppetdb:
        raise DriftInputError(tls[0], "is an option of --puppetdb URL, which is not given", "drift-usage")
    # urllib would read file: or ftp: URLs, or fail with a ValueError
    if args.puppetdb and not _http_url(args.puppetdb):
        raise DriftInputError(
            args.puppetdb,
            "--puppetdb takes PuppetDB's http:// or https:// URL (e.g. https://puppetdb:8081)",
            "drift-usage",
        )
    if (args.puppetdb_cert is None) != (args.puppetdb_key is None):
        raise DriftInputError(
            "--puppetdb-cert", "--puppetdb-cert and --puppetdb-key go together", "drift-usage"
        )
    now = os.environ.get("MESHC_NOW")  # pins the clock the lag is judged by (tests, reproducible reports)
    return PuppetEvidence(
        puppetdb=args.puppetdb,
        ca=args.puppetdb_ca,
        cert=args.puppetdb_cert,
        key=args.puppetdb_key,
        facts=args.puppet_facts,
        hiera=args.hiera,
        since=args.since,
        now=_now(now) if now else None,
        **({"lag": args.lag} if args.lag is not None else {}),
    )


def _http_url(text: str) -> bool:
    try:
        parts = urllib.parse.urlsplit(text)
        return parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return False


def _now(text: str) -> datetime.datetime:
    from compiler.drift.model import DriftInputError

    try:
        return _instant(text)
    except argparse.ArgumentTypeError:
        raise DriftInputError("MESHC_NOW", f"{text!r} is not an ISO 8601 time", "drift-usage") from None


def _drift(args: argparse.Namespace) -> int:
    from compiler.drift.detect import DriftRequest, detect_drift
    from compiler.drift.html import render_drift_page
    from compiler.drift.model import DriftInputError
    from compiler.drift.report import FORMATTERS

    try:
        request = DriftRequest(
            spec=args.spec,
            kubernetes=tuple(args.kubernetes),
            acknowledgements=args.acknowledgements,
            puppet=_puppet_evidence(args),
            today=_today(),
            partial=args.partial,
        )
        report = detect_drift(request)
    except DriftInputError as exc:
        print(exc, file=sys.stderr)
        return EXIT_INVALID
    sys.stdout.write(render_drift_page(report) if args.format == "html" else FORMATTERS[args.format](report))
    return EXIT_FINDINGS if report.failing else EXIT_OK


def _today() -> datetime.date:
    """Today (UTC) for acknowledgement expiry; MESHC_TODAY=YYYY-MM-DD pins it (tests, reproducible reports)."""
    from compiler.drift.model import DriftInputError

    pinned = os.environ.get("MESHC_TODAY")
    if not pinned:
        return datetime.datetime.now(datetime.UTC).date()
    try:
        return datetime.date.fromisoformat(pinned)
    except ValueError:
        raise DriftInputError(
            "MESHC_TODAY", f"{pinned!r} is not a date written YYYY-MM-DD", "drift-usage"
        ) from None


def _graph(args: argparse.Namespace) -> int:
    from compiler.graph.draw import check_picture_path, draw, write_atomically
    from compiler.pipeline import lower_dir

    if args.depth is not None and not args.services:
        print(
            "meshc: error: --depth counts hops from a SERVICE; name one, or leave --depth out for the whole mesh",
            file=sys.stderr,
        )
        return EXIT_INVALID
    if args.output is not None:
        check_picture_path(args.output, args.spec)  # before the drawing: refusing costs nothing then
    # The picture needs the lowered model only: the sidecar documents and artifacts would be most of the time.
    mesh = lower_dir(args.spec)
    picture = draw(mesh, args.format, args.services, 1 if args.depth is None else args.depth)
    if args.output is None:
        sys.stdout.write(picture)
    else:
        write_atomically(args.output, picture)
    return EXIT_OK
