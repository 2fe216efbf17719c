"""Test and benchmark harness: free ports, HTTP without exceptions, polling,
and the app under gunicorn in its own process (the Procfile's command)."""
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
            # every test client comes from 127.0.0.1
            "WS_MAX_CLIENTS_PER_IP": "100",
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

    def worker_pid(self) -> int:
        """The gunicorn worker: the one process that serves and runs the feed."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        assert len(children) == 1, f"gunicorn has workers {children}"
        return int(children[0])

    def kill(self) -> None:
        """A crash: SIGKILL to the master first, so it cannot fork a new
        worker, then to the worker; no shutdown code runs in either."""
        worker = self.worker_pid()
        self.proc.kill()
        os.kill(worker, signal.SIGKILL)
        self.proc.wait()
        wait_until(lambda: _exited(worker), 10, message=f"worker {worker} to die")
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _exited(pid: int) -> bool:
    """Every thread of the process has exited, and with the last one its
    files and locks are released. The leader alone may stay a zombie: an
    orphaned worker is init's to reap, not ours."""
    try:
        threads = os.listdir(f"/proc/{pid}/task")
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return threads == [str(pid)] and "\nState:\tZ" in status
