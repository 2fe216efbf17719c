"""Start the replay exchange as a subprocess for a test suite.

    server = start_replay(speed=600)          # or: proc, url = start_replay(...)
    ... BINANCE_WS_URL = "ws" + server.url[4:], BINANCE_REST_URL = server.url
    server.drop()                             # any /_replay/ fault control
    stop_replay(server)

The server picks its own free port (--port 0) and announces it on the
"listening on" line, so parallel suites never race for a port.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
LISTENING = re.compile(r"replay exchange listening on (http://\S+)")


class ReplayProcess(NamedTuple):
    proc: subprocess.Popen
    url: str
    log_path: Path

    @property
    def ws_url(self) -> str:
        return "ws" + self.url[4:]

    def control(self, action: str, **params) -> dict:
        """POST /_replay/<action>?params, e.g. control("refuse", status=503, seconds=2)."""
        query = "&".join(f"{k}={v}" for k, v in params.items())
        req = urllib.request.Request(f"{self.url}/_replay/{action}" + (f"?{query}" if query else ""),
                                     method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.load(resp)

    def drop(self) -> dict:
        return self.control("drop")

    def stats(self) -> dict:
        with urllib.request.urlopen(self.url + "/_replay/stats", timeout=10) as resp:
            return json.load(resp)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_replay(speed: float = 600, symbols: list[str] | None = None, data: str | Path | None = None,
                 updates: int | None = None, start: str | int | None = None,
                 ping_interval: float | None = None, max_connection_age: float | None = None,
                 weight_limit: int | None = None, event_time: str | None = None,
                 timeout: float = 20.0) -> ReplayProcess:
    """`python -m app.replay` with these options; returns once it answers
    /api/v3/ping. Options left as None keep the server's defaults."""
    options = {"--speed": speed, "--symbols": ",".join(symbols) if symbols else None, "--data": data,
               "--updates": updates, "--start": start, "--ping-interval": ping_interval,
               "--max-connection-age": max_connection_age, "--weight-limit": weight_limit,
               "--event-time": event_time}
    args = [sys.executable, "-m", "app.replay", "--port", "0"]
    for flag, value in options.items():
        if value is not None:
            args += [flag, str(value)]
    fd, log_name = tempfile.mkstemp(prefix="replay-", suffix=".log")
    log_path = Path(log_name)
    with os.fdopen(fd, "wb") as log:
        proc = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"replay exchange exited with {proc.returncode}:\n{log_path.read_text()}")
        found = LISTENING.search(log_path.read_text(errors="replace"))
        if found and _answers(found.group(1)):
            return ReplayProcess(proc, found.group(1), log_path)
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"replay exchange not ready after {timeout}s:\n{log_path.read_text()}")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/api/v3/ping", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def stop_replay(server: ReplayProcess, timeout: float = 10.0) -> int:
    """SIGTERM, then SIGKILL if it has not exited within `timeout`; returns
    the exit status. The log file is removed unless the exit was unclean."""
    if server.proc.poll() is None:
        server.proc.terminate()
        try:
            server.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()
    if server.proc.returncode == 0:
        server.log_path.unlink(missing_ok=True)
    return server.proc.returncode
