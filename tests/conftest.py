"""Shared fixtures. Everything here is real: the replay exchange is a real
WebSocket/HTTP server on 127.0.0.1, the app runs under gunicorn in its own
process, and clients are real WebSocket clients."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from app import create_app

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, timeout: float = 10.0, **headers):
    """(status, parsed JSON or text) without raising on HTTP errors."""
    req = urllib.request.Request(url, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, body = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode("utf-8", "replace")


def wait_until(predicate, timeout: float, interval: float = 0.05, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


class LiveApp:
    """The app under gunicorn (the same command as the Procfile), in its own process."""

    def __init__(self, tmp: Path, replay_url: str | None, **env):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws/price"
        self.tmp = tmp
        self.log_path = tmp / f"gunicorn-{self.port}.log"
        self.env = {
            **os.environ,
            "BIND": f"127.0.0.1:{self.port}",
            "SQLITE_PATH": str(tmp / "candles.sqlite3"),
            "SPOOL_DIR": str(tmp / "spool"),
            "FEED_BACKOFF_INITIAL": "0.2",
            "FEED_BACKOFF_MAX": "2",
            "LOG_LEVEL": "INFO",
            "WS_MAX_CLIENTS": "100",
            **({"BINANCE_WS_URL": "ws" + replay_url[4:], "BINANCE_REST_URL": replay_url} if replay_url else {}),
            **{k: str(v) for k, v in env.items()},
        }
        self.proc: subprocess.Popen | None = None

    def start(self, wait_connected: bool = True) -> "LiveApp":
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
            cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        wait_until(lambda: self._ready(wait_connected), 30, 0.1, f"app on {self.url} ({self.log_path})")
        return self

    def _ready(self, wait_connected: bool) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"gunicorn exited with {self.proc.returncode}:\n{self.log()}")
        try:
            status, body = http("GET", self.url + "/health", timeout=2)
        except OSError:
            return False
        return isinstance(body, dict) and (body.get("feed_connected") or not wait_connected)

    def get(self, path: str, **headers):
        return http("GET", self.url + path, **headers)

    def post(self, path: str, **headers):
        return http("POST", self.url + path, **headers)

    def stop(self, sig=signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"gunicorn did not stop within {timeout}s:\n{self.log()}")
        self._log.close()
        return self.proc.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture(scope="session")
def replay_server():
    """The replay exchange at 600x: a 1m candle every 0.1 s."""
    from tests.replay_helpers import start_replay, stop_replay
    server = start_replay(speed=600)
    yield server
    stop_replay(server)


@pytest.fixture(scope="session")
def live_app(replay_server, tmp_path_factory):
    """The app under gunicorn following three streams of the replay."""
    app = LiveApp(tmp_path_factory.mktemp("live"), replay_server.url,
                  BINANCE_SYMBOLS="BTCUSDT,ETHUSDT").start()
    status, body = app.post("/symbol/BTCUSDT/subscribe?interval=5m")
    assert status == 200, body
    yield app
    app.stop()


@pytest.fixture
def app(tmp_path):
    """An app whose services are not started (nothing listens on its upstream)."""
    dead = f"127.0.0.1:{free_port()}"
    app = create_app(TESTING=True, BINANCE_WS_URL=f"ws://{dead}", BINANCE_REST_URL=f"http://{dead}",
                     SQLITE_PATH=str(tmp_path / "candles.sqlite3"), SPOOL_DIR=str(tmp_path / "spool"))
    yield app


@pytest.fixture
def client(app):
    return app.test_client()
