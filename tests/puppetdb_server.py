"""A throwaway PostgreSQL + PuppetDB pair for tests and benchmarks (recipe: shared/reference/puppetdb.md).

Nothing under /etc is changed: both run from a scratch directory under /tmp (PostgreSQL refuses to
run as root, so it runs as `postgres`, which must reach that directory). PuppetDB listens on plain
HTTP for queries and commands, and on HTTPS (a test CA made with openssl) for the Puppet terminus,
which accepts only https server_urls. The Debian jar ships Clojure source that every start would
compile (~50 s); the classes are compiled once ahead of time into a cache keyed by the package
version, which brings a start to ~10 s.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

JAR = Path("/usr/share/puppetdb/puppetdb.jar")
BOOTSTRAP = Path("/etc/puppetdb/bootstrap.cfg")
AUTH_CONF = Path("/etc/puppetdb/conf.d/auth.conf")
# Namespaces compiled ahead of time: the entry point and every service bootstrap.cfg names.
AOT_NAMESPACES = (
    "puppetlabs.puppetdb.core",
    "puppetlabs.puppetdb.cli.services",
    "puppetlabs.puppetdb.command",
    "puppetlabs.puppetdb.pdb-routing",
    "puppetlabs.puppetdb.config",
    "puppetlabs.puppetdb.dashboard",
    "puppetlabs.trapperkeeper.services.webserver.jetty9-service",
    "puppetlabs.trapperkeeper.services.webrouting.webrouting-service",
    "puppetlabs.trapperkeeper.services.authorization.authorization-service",
    "puppetlabs.trapperkeeper.services.metrics.metrics-service",
    "puppetlabs.trapperkeeper.services.status.status-service",
    "puppetlabs.trapperkeeper.services.scheduler.scheduler-service",
)
JVM = ("-Xmx512m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC")
LOGBACK = """<configuration>
  <appender name="F" class="ch.qos.logback.core.FileAppender">
    <file>{log}</file>
    <encoder><pattern>%d %-5p [%c{{2}}] %m%n</pattern></encoder>
  </appender>
  <root level="info"><appender-ref ref="F"/></root>
</configuration>
"""


class PuppetDBUnavailable(Exception):
    """The tools are missing or the pair did not start; the message says which and where the log is."""


def report_payload(
    certname: str,
    start: str,
    end: str,
    producer: str,
    status: str = "unchanged",
    cached_catalog_status: str = "not_used",
) -> dict[str, Any]:
    """A `store_report` (v8) command's payload: one Puppet 7 run of `certname` from `start` to `end` (ISO 8601,
    UTC), its status and whether it ran a cached catalog; no resources, logs or metrics."""
    return {
        "certname": certname,
        "environment": "production",
        "puppet_version": "7.23.0",
        "report_format": 12,
        "configuration_version": "1",
        "start_time": start,
        "end_time": end,
        "producer_timestamp": end,
        "producer": producer,
        "corrective_change": False,
        "noop": False,
        "noop_pending": False,
        "transaction_uuid": str(uuid.uuid4()),
        "catalog_uuid": str(uuid.uuid4()),
        "code_id": None,
        "cached_catalog_status": cached_catalog_status,
        "status": status,
        "resources": [],
        "logs": [],
        "metrics": [],
    }


def missing_tools() -> list[str]:
    """What this machine lacks to run the pair (empty when everything is there)."""
    missing = [tool for tool in ("java", "openssl", "runuser") if shutil.which(tool) is None]
    if not JAR.is_file():
        missing.append(f"{JAR} (apt-get install puppetdb)")
    if not pg_bin():
        missing.append("PostgreSQL server binaries (apt-get install postgresql)")
    return missing


def pg_bin() -> Path | None:
    """The newest installed PostgreSQL's bin directory."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name)
    )
    return candidates[-1].parent if candidates else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def package_version() -> str:
    result = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "puppetdb"], capture_output=True, text=True)
    return result.stdout.strip() or str(int(JAR.stat().st_mtime))


def class_cache() -> Path:
    """AOT-compiled PuppetDB classes, compiled once per package version (~25 s, ~70 MB)."""
    cache = (
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / f"meshc-puppetdb-{package_version()}"
    )
    classes = cache / "classes"
    if (cache / "complete").exists():
        return classes
    staging = Path(
        tempfile.mkdtemp(dir=cache.parent if cache.parent.is_dir() else None, prefix=".meshc-puppetdb-")
    )
    (staging / "classes").mkdir()
    names = " ".join(AOT_NAMESPACES)
    code = f"(doseq [n '[{names}]] (compile n)) (shutdown-agents) (System/exit 0)"
    result = subprocess.run(
        [
            "java",
            *JVM,
            f"-Dclojure.compile.path={staging / 'classes'}",
            "-cp",
            f"{staging / 'classes'}:{JAR}",
            "clojure.main",
            "-e",
            code,
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise PuppetDBUnavailable(f"AOT compile of PuppetDB failed: {result.stderr[-2000:]}")
    (staging / "complete").touch()
    cache.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(staging, cache)
    except OSError:  # another process won the race: use its cache
        shutil.rmtree(staging, ignore_errors=True)
    return classes


@dataclass(frozen=True, kw_only=True, slots=True)
class TLS:
    """The test CA and PuppetDB's own certificate; `client()` makes an agent certificate."""

    directory: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path

    def client(self, name: str) -> tuple[Path, Path]:
        """An agent certificate for `name` signed by the test CA: (certificate, key)."""
        key, csr, cert = (self.directory / f"{name}.{ext}" for ext in ("key", "csr", "pem"))
        if not cert.exists():
            _openssl(
                "req",
                "-new",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                key,
                "-out",
                csr,
                "-subj",
                f"/CN={name}",
            )
            _openssl(
                "x509",
                "-req",
                "-in",
                csr,
                "-CA",
                self.ca_cert,
                "-CAkey",
                self.ca_key,
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                cert,
            )
        return cert, key


def _openssl(*args: object) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)


def make_tls(directory: Path) -> TLS:
    """A CA, and a PuppetDB certificate for localhost and 127.0.0.1 (the terminus checks the name)."""
    directory.mkdir(parents=True)
    ca_key, ca_cert = directory / "ca.key", directory / "ca.pem"
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        ca_key,
        "-out",
        ca_cert,
        "-days",
        "2",
        "-subj",
        "/CN=meshc test CA",
    )
    key, csr, cert, ext = (directory / n for n in ("server.key", "server.csr", "server.pem", "server.ext"))
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _openssl(
        "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=localhost"
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        csr,
        "-CA",
        ca_cert,
        "-CAkey",
        ca_key,
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        ext,
        "-out",
        cert,
    )
    return TLS(directory=directory, ca_cert=ca_cert, ca_key=ca_key, server_cert=cert, server_key=key)


class PuppetDB:
    """PostgreSQL + PuppetDB in a scratch directory: `start()`, then `stop()` (which removes everything)."""

    def __init__(self, command_threads: int = 1) -> None:
        self.command_threads = command_threads
        self.dir = Path(tempfile.mkdtemp(prefix="meshc-pdb-", dir="/tmp"))
        os.chmod(self.dir, 0o755)  # postgres must reach its data directory
        self.pg_port, self.port, self.ssl_port = free_port(), free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ssl_url = f"https://localhost:{self.ssl_port}"
        self.java: subprocess.Popen[bytes] | None = None
        self.pg_started = False
        self.tls: TLS | None = None

    @property
    def log(self) -> Path:
        return self.dir / "log/puppetdb.log"

    def start(self, timeout: float = 180) -> None:
        """Start both; raise PuppetDBUnavailable (naming the log) if PuppetDB does not answer in time."""
        missing = missing_tools()
        if missing:
            raise PuppetDBUnavailable("missing: " + ", ".join(missing))
        classes = class_cache()
        (self.dir / "log").mkdir()
        self._start_postgres()
        self.tls = make_tls(self.dir / "ssl")
        conf = self._write_config()
        self.java = subprocess.Popen(
            [
                "java",
                *JVM,
                "-cp",
                f"{classes}:{JAR}",
                "clojure.main",
                "-m",
                "puppetlabs.puppetdb.core",
                "services",
                "--config",
                str(conf),
                "--bootstrap-config",
                str(BOOTSTRAP),
            ],
            stdout=open(self.dir / "log/java.out", "wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._wait_ready(timeout)

    def _pg(self, name: str, *args: str) -> subprocess.CompletedProcess[str]:
        bin_dir = pg_bin()
        assert bin_dir is not None
        return subprocess.run(
            ["runuser", "-u", "postgres", "--", str(bin_dir / name), *args],
            capture_output=True,
            text=True,
            timeout=120,
            cwd="/tmp",
        )

    def _start_postgres(self) -> None:
        data = self.dir / "pg"
        data.mkdir()
        (self.dir / "sock").mkdir()
        for path in (data, self.dir / "log", self.dir / "sock"):  # what postgres writes: data, log, socket
            shutil.chown(path, "postgres")
        for step in (
            self._pg(
                "initdb", "-N", "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"
            ),
            self._pg(
                "pg_ctl",
                "-D",
                str(data),
                "-l",
                str(self.dir / "log/postgres.log"),
                "-w",
                "-t",
                "60",
                "-o",
                f"-p {self.pg_port} -k {self.dir / 'sock'} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off",
                "start",
            ),
        ):
            if step.returncode != 0:
                raise PuppetDBUnavailable(f"PostgreSQL did not start: {step.stdout}{step.stderr}")
        self.pg_started = True
        psql = ["-h", "127.0.0.1", "-p", str(self.pg_port), "-U", "postgres", "-v", "ON_ERROR_STOP=1"]
        for sql, db in (
            ("CREATE ROLE puppetdb LOGIN PASSWORD 'puppetdb'", "postgres"),
            ("CREATE DATABASE puppetdb OWNER puppetdb TEMPLATE template0", "postgres"),
            ("CREATE EXTENSION pg_trgm", "puppetdb"),
        ):  # PuppetDB refuses to start without pg_trgm
            result = self._pg("psql", *psql, "-d", db, "-c", sql)
            if result.returncode != 0:
                raise PuppetDBUnavailable(f"PostgreSQL set-up failed ({sql}): {result.stderr}")

    def _write_config(self) -> Path:
        assert self.tls is not None
        conf = self.dir / "pdb/conf.d"
        conf.mkdir(parents=True)
        (self.dir / "pdb/var").mkdir()
        (self.dir / "pdb/logback.xml").write_text(LOGBACK.format(log=self.log))
        (conf / "config.ini").write_text(
            f"[global]\nvardir = {self.dir / 'pdb/var'}\nlogging-config = {self.dir / 'pdb/logback.xml'}\n"
            f"[puppetdb]\ndisable-update-checking = true\n[command-processing]\nthreads = {self.command_threads}\n"
        )
        (conf / "database.ini").write_text(
            f"[database]\nsubname = //127.0.0.1:{self.pg_port}/puppetdb\nusername = puppetdb\npassword = puppetdb\n"
            "maximum-pool-size = 5\n"
        )
        (conf / "jetty.ini").write_text(
            f"[jetty]\nhost = 127.0.0.1\nport = {self.port}\nssl-host = 127.0.0.1\nssl-port = {self.ssl_port}\n"
            f"ssl-ca-cert = {self.tls.ca_cert}\nssl-cert = {self.tls.server_cert}\nssl-key = {self.tls.server_key}\n"
            "client-auth = want\n"
        )
        shutil.copy(AUTH_CONF, conf / "auth.conf")
        return conf

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.java is not None and self.java.poll() is not None:
                raise PuppetDBUnavailable(f"PuppetDB exited with {self.java.returncode}: {self._log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/pdb/meta/v1/version", timeout=5) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        raise PuppetDBUnavailable(f"PuppetDB did not answer within {timeout:.0f} s: {self._log_tail()}")

    def _log_tail(self) -> str:
        """The end of PuppetDB's log: stop() removes the directory it is in."""
        try:
            return self.log.read_text(errors="replace")[-1500:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Stop PuppetDB and PostgreSQL and remove the scratch directory."""
        if self.java is not None and self.java.poll() is None:
            self.java.send_signal(signal.SIGTERM)
            try:
                self.java.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.java.kill()
                self.java.wait()
        if self.pg_started:
            self._pg("pg_ctl", "-D", str(self.dir / "pg"), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)

    # ------------------------------------------------------------ the HTTP API

    def command(self, command: str, version: int, certname: str, payload: Mapping[str, Any]) -> None:
        """Submit one command and wait until PuppetDB has processed it (an invalid payload times out)."""
        query = urllib.parse.urlencode(
            {
                "command": command,
                "version": version,
                "certname": certname,
                "producer-timestamp": payload.get("producer_timestamp", ""),
                "secondsToWaitForCompletion": 60,
            }
        )
        request = urllib.request.Request(
            f"{self.url}/pdb/cmd/v1?{query}",
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=90) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as error:
            raise RuntimeError(
                f"{command} for {certname}: HTTP {error.code} {error.read()[:300]!r}; see {self.log}"
            ) from error
        if not answer.get("processed"):
            raise RuntimeError(f"{command} for {certname} was not processed: {answer}; see {self.log}")

    def submit_async(self, command: str, version: int, certname: str, payload: Mapping[str, Any]) -> None:
        """Queue one command without waiting (bulk loads); poll `query` before asserting."""
        query = urllib.parse.urlencode(
            {
                "command": command,
                "version": version,
                "certname": certname,
                "producer-timestamp": payload.get("producer_timestamp", ""),
            }
        )
        request = urllib.request.Request(
            f"{self.url}/pdb/cmd/v1?{query}",
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=90) as response:
            response.read()

    def query(self, pql: str) -> Any:
        """The answer to one PQL query."""
        url = f"{self.url}/pdb/query/v4?{urllib.parse.urlencode({'query': pql})}"
        with urllib.request.urlopen(url, timeout=120) as response:
            return json.loads(response.read())

    def wait_for(self, pql: str, count: int, timeout: float = 120) -> None:
        """Wait until a `count()` query answers at least `count` (asynchronous submissions)."""
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            seen = self.query(pql)[0]["count"]
            if seen >= count:
                return
            time.sleep(0.5)
        raise RuntimeError(f"{pql}: {seen} of {count} after {timeout:.0f} s; see {self.log}")
