"""Test helper: serve a folder on 127.0.0.1 and run a page in headless Chromium with WebGPU.

The page reports by POSTing to /result; run_page() returns that body. Chromium is Debian's
(`apt-get install chromium`), whose WebGPU adapter headless is SwiftShader.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
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


class BrowserUnavailable(RuntimeError):
    """Chromium is missing, did not start, or the page did not report in time."""


def chromium_path() -> str:
    """Q4GSW_CHROMIUM, else `chromium` or `chromium-browser` on PATH."""
    path = os.environ.get("Q4GSW_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        raise BrowserUnavailable("no chromium on PATH (Debian: apt-get install -y chromium; or set Q4GSW_CHROMIUM)")
    return path


class _Handler(http.server.SimpleHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.posted[self.path] = body
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass

    def end_headers(self):
        self.send_header("Cache-Control", "no-store")
        super().end_headers()


@contextlib.contextmanager
def serve(folder: Path):
    """An HTTP server for folder on 127.0.0.1 (ephemeral port) in a thread; yields it."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(folder)))
    server.posted = {}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def run_page(folder: Path, page: str, *, timeout: float = 45.0) -> bytes:
    """Serve folder, open page in headless Chromium, and return what the page POSTs to /result."""
    exe = chromium_path()
    with serve(folder) as server, tempfile.TemporaryDirectory(prefix="q4gsw-chromium-") as profile:
        log_path = Path(profile) / "chromium.log"
        url = f"http://127.0.0.1:{server.server_port}/{page}"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}/data", url],
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + timeout
            while "/result" not in server.posted:
                if proc.poll() is not None:
                    raise BrowserUnavailable(f"chromium exited with {proc.returncode} before the page reported:\n"
                                             + _tail(log_path))
                if time.monotonic() > deadline:
                    raise BrowserUnavailable(f"the page did not report within {timeout:.0f} s:\n" + _tail(log_path))
                time.sleep(0.05)
            return server.posted["/result"]
        finally:
            _stop(proc)


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


def _tail(path: Path, lines: int = 15) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])
