"""The evidence options of `meshc drift` and `meshc promote` (what runs), and their reading into a drift request."""

from __future__ import annotations

import argparse
import os
import re
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the drift package and datetime are imported only by the commands that read evidence
    import datetime

    from compiler.drift.detect import DriftRequest, PuppetEvidence


def drift_request(args: argparse.Namespace, partial: bool = False) -> DriftRequest:
    """The request drift (and promote's gate) checks, from the parsed evidence options.

    Raises DriftInputError for options that do not go together and for a malformed MESHC_NOW or MESHC_TODAY.
    """
    from compiler.drift.detect import DriftRequest

    return DriftRequest(
        spec=args.spec,
        kubernetes=tuple(args.kubernetes),
        acknowledgements=args.acknowledgements,
        puppet=_puppet_evidence(args),
        today=_today(),
        partial=partial,
    )


def evidence_arguments(sub: argparse.ArgumentParser) -> None:
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
    import datetime  # only where a date or duration is read, not at every command's start

    match = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", text.strip())
    if not text.strip() or match is None:
        raise argparse.ArgumentTypeError(f"expected a duration such as 30m, 2h or 1h30m, got {text!r}")
    hours, minutes, seconds = (int(group or 0) for group in match.groups())
    return datetime.timedelta(hours=hours, minutes=minutes, seconds=seconds)


def _instant(text: str) -> datetime.datetime:
    """An ISO 8601 time; without a zone, UTC."""
    import datetime  # only where a date or duration is read, not at every command's start

    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO 8601 time such as 2026-11-30T12:00:00Z, got {text!r}"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=datetime.UTC)


def _puppet_evidence(args: argparse.Namespace) -> PuppetEvidence:
    """The Puppet options of drift and promote as one request field; TLS files without --puppetdb are a usage error."""
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


def _today() -> datetime.date:
    """Today (UTC) for acknowledgement expiry; MESHC_TODAY=YYYY-MM-DD pins it (tests, reproducible reports)."""
    import datetime  # only where a date or duration is read, not at every command's start

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
