"""Test helper: serve a folder on 127.0.0.1 and run a page in headless Chromium with WebGPU.

The page POSTs to /progress after each step it completes and its report to /result;
run_page() returns the report. There is no limit on the page's total time: run_page fails
only when Chromium exits, or when `stall` seconds pass with no step completed and no file
requested (see STALL_SECONDS), so a loaded machine makes the run slower, not red.
Chromium is Debian's (`apt-get install chromium`), whose WebGPU adapter headless is SwiftShader.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import http.server
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

#: Flags that expose WebGPU in headless Chromium on a machine without a GPU.
CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu-sandbox", "--enable-unsafe-webgpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--enable-logging=stderr", "--v=0",
)

#: Seconds without progress (a step reported or a file requested) after which run_page gives
#: up. The slowest single step of tests/web/harness.html, measured on the 2-core development
#: machine, is the first run of the tiled kernel (SwiftShader compiles tiled.wgsl for ~4 s):
#: 5.6 s idle, 7.6 s at most with two busy-loop processes on its two cores. 120 s is 16x
#: that, so only a page that has stopped, not a slow machine, reaches it.
STALL_SECONDS = 120.0


class BrowserUnavailable(RuntimeError):
    """Chromium is missing, or exited or stalled before the page asked for anything."""


class PageFailed(RuntimeError):
    """The page started but did not report: Chromium exited, or the page stopped making progress."""


@dataclasses.dataclass
class PageRun:
    """What a page sent: its report (the /result body) and its progress.

    events: (what, seconds since the previous event or, for the first, since Chromium
    started) for every file requested ("GET /path") and step reported, in order; `slowest`
    is the longest of those gaps: what STALL_SECONDS must exceed.
    """

    report: bytes
    events: list[tuple[str, float]]

    @property
    def slowest(self) -> tuple[str, float]:
        return max(self.events, key=lambda s: s[1], default=("", 0.0))


def chromium_path() -> str:
    """Q4GSW_CHROMIUM, else `chromium` or `chromium-browser` on PATH."""
    path = os.environ.get("Q4GSW_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        raise BrowserUnavailable("no chromium on PATH (Debian: apt-get install -y chromium; or set Q4GSW_CHROMIUM)")
    return path


class _Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.server.touch(f"GET {self.path}")
        super().do_GET()

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/progress":
            self.server.touch(json.loads(body)["step"], step=True)
        else:
            self.server.posted[self.path] = body
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass

    def end_headers(self):
        self.send_header("Cache-Control", "no-store")
        super().end_headers()


class PageServer(http.server.ThreadingHTTPServer):
    """Serves a folder; records the page's POSTs and its progress (PageRun.events)."""

    def __init__(self, folder: Path):
        super().__init__(("127.0.0.1", 0), functools.partial(_Handler, directory=str(folder)))
        self.posted: dict[str, bytes] = {}
        self.events: list[tuple[str, float]] = []
        self.last_step = "(none)"
        self._lock = threading.Lock()
        self.start_clock()

    def start_clock(self) -> None:
        self.last = self.started = time.monotonic()

    def touch(self, what: str, *, step: bool = False) -> None:
        """Progress: a file requested or (step) a step of the page completed."""
        with self._lock:
            now = time.monotonic()
            self.events.append((what, now - self.last))
            self.last = now
            if step:
                self.last_step = what


@contextlib.contextmanager
def serve(folder: Path):
    """An HTTP server for folder on 127.0.0.1 (ephemeral port) in a thread; yields it."""
    server = PageServer(folder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def run_page(folder: Path, page: str, *, stall: float = STALL_SECONDS) -> PageRun:
    """Serve folder, open page in headless Chromium, and return what the page reports.

    Raises BrowserUnavailable when there is no Chromium, or it exits or stalls before requesting
    the page; PageFailed when it exits later or `stall` seconds pass without progress.
    """
    exe = chromium_path()
    with serve(folder) as server, tempfile.TemporaryDirectory(prefix="q4gsw-chromium-") as profile:
        log_path = Path(profile) / "chromium.log"
        url = f"http://127.0.0.1:{server.server_port}/{page}"
        with open(log_path, "wb") as log:
            try:
                proc = subprocess.Popen([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}/data", url],
                                        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            except OSError as exc:
                raise BrowserUnavailable(f"{exe} did not start: {exc}") from exc
        server.start_clock()
        try:
            return wait_for_report(proc, server, stall=stall, log_path=log_path)
        finally:
            _stop(proc)


def wait_for_report(proc: subprocess.Popen, server: "PageServer", *, stall: float = STALL_SECONDS,
                    log_path: Path | None = None) -> PageRun:
    """Wait until the page served by `server` POSTs /result, the browser `proc` exits, or
    `stall` seconds pass with no progress (a file requested or a step reported); see run_page."""
    while "/result" not in server.posted:
        if proc.poll() is not None:
            cls = PageFailed if server.events else BrowserUnavailable
            raise cls(f"chromium exited with {proc.returncode} before the page reported "
                      f"(last step: {server.last_step}):\n" + _tail(log_path))
        idle = time.monotonic() - server.last
        if idle > stall:
            cls = PageFailed if server.events else BrowserUnavailable
            raise cls(f"no progress for {idle:.0f} s (limit {stall:.0f} s; last step: "
                             f"{server.last_step}; {len(server.events)} events in "
                             f"{time.monotonic() - server.started:.0f} s):\n" + _tail(log_path))
        time.sleep(0.05)
    return PageRun(server.posted["/result"], list(server.events))


def _stop(proc: subprocess.Popen) -> None:
    """End the Chromium we started: its own process group (start_new_session), by its id."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def _tail(path: Path | None, lines: int = 15) -> str:
    text = path.read_text(errors="replace") if path is not None and path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])
