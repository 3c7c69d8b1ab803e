"""Headless Chromium for the picture tests, driven over the DevTools protocol with a small stdlib WebSocket client.

One browser per test session (Chromium is heavy on a 2-core machine). A page load reports what a
person's browser would have shown in its console and every request it made; screenshots are
checked for blankness with a tiny PNG decoder (zlib only). Mermaid comes from npm, pinned by
tests/npm/package-lock.json and installed under .cache/npm on first use.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import time
import urllib.parse
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import ROOT, require_tool

NPM_SOURCE = ROOT / "tests" / "npm"
NPM_DIR = ROOT / ".cache" / "npm"
MERMAID_JS = NPM_DIR / "node_modules" / "mermaid" / "dist" / "mermaid.min.js"
VIEWPORT = (1280, 900)
START_TIMEOUT = 60.0
CALL_TIMEOUT = 120.0


# ---------------------------------------------------------------- WebSocket (RFC 6455, client side, text frames)


class WebSocket:
    """Just enough of a WebSocket client for the DevTools protocol."""

    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlparse(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=CALL_TIMEOUT)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {parts.path} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._recv()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"WebSocket handshake refused: {head[:200]!r}")

    def _recv(self) -> bytes:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("DevTools connection closed")
        return chunk

    def _read(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self.buffer += self._recv()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def send(self, text: str) -> None:
        """Send one masked text frame, as clients must."""
        payload = text.encode()
        size = len(payload)
        header = bytearray([0x81])
        if size < 126:
            header.append(0x80 | size)
        elif size < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack(">H", size)
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", size)
        mask = os.urandom(4)
        keystream = (mask * (size // 4 + 1))[:size]
        masked = (
            (int.from_bytes(payload, "big") ^ int.from_bytes(keystream, "big")).to_bytes(size, "big")
            if size
            else b""
        )
        self.sock.sendall(bytes(header) + mask + masked)

    def receive(self) -> str:
        """The next whole text message (fragments joined, pings answered)."""
        message = b""
        while True:
            first, second = self._read(2)
            size = second & 0x7F
            if size == 126:
                size = struct.unpack(">H", self._read(2))[0]
            elif size == 127:
                size = struct.unpack(">Q", self._read(8))[0]
            data = self._read(size)
            opcode = first & 0x0F
            if opcode == 0x8:
                raise ConnectionError("DevTools closed the WebSocket")
            if opcode == 0x9:
                continue  # ping: the DevTools server does not send them, and needs no pong
            message += data
            if first & 0x80:
                return message.decode()

    def close(self) -> None:
        """Drop the connection."""
        self.sock.close()


# ---------------------------------------------------------------- Chromium


@dataclass(frozen=True, kw_only=True, slots=True)
class PageLoad:
    """What loading one page did: console output, script errors, requests, and a screenshot."""

    url: str
    console: tuple[str, ...]
    requests: tuple[str, ...]
    screenshot: bytes


class Chromium:
    """A headless Chromium and its first tab, spoken to through the DevTools protocol."""

    def __init__(self, profile: Path) -> None:
        binary = require_tool("chromium")
        self.process = subprocess.Popen(
            [
                binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--remote-debugging-port=0",
                f"--user-data-dir={profile}",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                "--mute-audio",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            port = self._port(profile / "DevToolsActivePort")
            self.socket = WebSocket(self._page_socket(port))
        except BaseException:
            self.close()
            raise
        self.next_id = 0
        self.events: list[dict[str, Any]] = []
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")
        width, height = VIEWPORT
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )

    def _port(self, active_port: Path) -> int:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.process.returncode} before it listened")
            lines = active_port.read_text().splitlines() if active_port.exists() else []
            if lines and lines[0].isdigit():
                return int(lines[0])
            time.sleep(0.1)
        raise TimeoutError("chromium did not open its DevTools port")

    def _page_socket(self, port: int) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as response:  # noqa: S310 - loopback
            targets = json.load(response)
        return next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one command and wait for its result; events that arrive meanwhile are kept."""
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.receive())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)

    def _wait_for(self, method: str) -> None:
        while not any(e["method"] == method for e in self.events):
            message = json.loads(self.socket.receive())
            if "method" in message:
                self.events.append(message)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page; promises are awaited."""
        result = self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"JavaScript error: {result['exceptionDetails']}")
        return result["result"].get("value")

    def load(self, url: str) -> PageLoad:
        """Navigate to `url`, wait for its load event and a moment of scripts, then screenshot it."""
        self.events.clear()
        self.call("Page.navigate", url=url)
        self._wait_for("Page.loadEventFired")
        # let load-time scripts finish and log
        self.evaluate("new Promise(resolve => setTimeout(resolve, 200))")
        width, height = VIEWPORT
        # Half scale: a quarter of the pixels for the pure-Python PNG decoder, still every box and line.
        clip = {"x": 0, "y": 0, "width": width, "height": height, "scale": 0.5}
        shot = base64.b64decode(self.call("Page.captureScreenshot", format="png", clip=clip)["data"])
        return PageLoad(
            url=url,
            console=tuple(_console_lines(self.events)),
            screenshot=shot,
            requests=tuple(
                e["params"]["request"]["url"]
                for e in self.events
                if e["method"] == "Network.requestWillBeSent"
            ),
        )

    def close(self) -> None:
        """Stop the browser and every process it started (it runs in its own process group)."""
        if getattr(self, "socket", None) is not None:
            self.socket.close()
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def _console_lines(events: list[dict[str, Any]]) -> list[str]:
    lines = []
    for event in events:
        params = event["params"]
        if event["method"] == "Runtime.consoleAPICalled":
            lines.append(
                f"console.{params['type']}: "
                + " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
            )
        elif event["method"] == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            lines.append(f"exception: {details.get('exception', {}).get('description', details)}")
        elif event["method"] == "Log.entryAdded":
            lines.append(
                f"log.{params['entry']['level']} ({params['entry']['source']}): {params['entry']['text']}"
            )
    return lines


# ---------------------------------------------------------------- Mermaid


def mermaid_js() -> Path:
    """The pinned mermaid.min.js, installed with `npm ci` under .cache/npm when missing or of another version."""
    wanted = json.loads((NPM_SOURCE / "package.json").read_text())["dependencies"]["mermaid"]
    installed = NPM_DIR / "node_modules" / "mermaid" / "package.json"
    if MERMAID_JS.exists() and json.loads(installed.read_text())["version"] == wanted:
        return MERMAID_JS
    npm = require_tool("npm")
    NPM_DIR.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copyfile(NPM_SOURCE / name, NPM_DIR / name)
    subprocess.run(
        [npm, "ci", "--prefix", str(NPM_DIR), "--no-audit", "--no-fund", "--loglevel=error"],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return MERMAID_JS


def mermaid_page(directory: Path) -> str:
    """A file:// URL of an empty page that loads the real Mermaid library."""
    page = directory / "mermaid.html"
    page.write_text(
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><script src="{mermaid_js().as_uri()}"></script>'
        "</head><body></body></html>\n"
    )
    return page.as_uri()


def mermaid_check(browser: Chromium, diagram: str, index: int) -> dict[str, Any]:
    """Parse and render one diagram with Mermaid in the loaded Mermaid page: {ok, error, svg}."""
    script = f"""(async () => {{
      const text = {json.dumps(diagram)};
      mermaid.initialize({{startOnLoad: false, securityLevel: "strict"}});
      try {{
        await mermaid.parse(text);
        const result = await mermaid.render("meshc-diagram-{index}", text);
        return {{ok: true, error: "", svg: result.svg}};
      }} catch (error) {{
        return {{ok: false, error: String(error && error.message || error), svg: ""}};
      }}
    }})()"""
    return browser.evaluate(script)


# ---------------------------------------------------------------- PNG


def png_pixels(png: bytes) -> tuple[int, int, int, list[bytes]]:
    """Width, height, bytes per pixel and unfiltered rows of an 8-bit RGB or RGBA PNG."""
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat, header = 8, b"", b""
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind, data = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = data
        elif kind == b"IDAT":
            idat += data
    width, height, depth, color = struct.unpack(">IIBB", header[:10])
    if depth != 8 or color not in (2, 6):
        raise ValueError(f"unsupported PNG: bit depth {depth}, colour type {color}")
    bpp = 3 if color == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows: list[bytes] = []
    previous = bytes(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        _unfilter(kind, line, previous, bpp)
        rows.append(bytes(line))
        previous = bytes(line)
    return width, height, bpp, rows


def _unfilter(kind: int, line: bytearray, previous: bytes, bpp: int) -> None:
    for i in range(len(line)):
        left = line[i - bpp] if i >= bpp else 0
        up = previous[i]
        if kind == 1:
            line[i] = (line[i] + left) & 0xFF
        elif kind == 2:
            line[i] = (line[i] + up) & 0xFF
        elif kind == 3:
            line[i] = (line[i] + (left + up) // 2) & 0xFF
        elif kind == 4:
            corner = previous[i - bpp] if i >= bpp else 0
            estimate = left + up - corner
            pa, pb, pc = abs(estimate - left), abs(estimate - up), abs(estimate - corner)
            line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 0xFF


def ink(png: bytes) -> float:
    """The share of pixels (sampled on a grid) that differ from the most common colour: 0.0 for a blank page."""
    width, height, bpp, rows = png_pixels(png)
    samples = [row[x * bpp : x * bpp + 3] for row in rows[::4] for x in range(0, width, 4)]
    background = max(set(samples), key=samples.count)
    return sum(s != background for s in samples) / len(samples)
