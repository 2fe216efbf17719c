"""Real database servers for the storage tests: Debian's influxd (1.6) and
VictoriaMetrics, each started on free 127.0.0.1 ports with its data in a
temporary directory. `stop()`/`start()` on the same instance (same port, same
data) simulates an outage."""
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.harness import ROOT, free_port

INFLUXD = shutil.which("influxd") or "/usr/bin/influxd"
VICTORIA = shutil.which("victoria-metrics") or "/usr/bin/victoria-metrics"


def _http(method: str, url: str, data: bytes | None = None, timeout: float = 5.0):
    req = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class _Server:
    name = "server"
    ready_path = "/"

    def __init__(self, tmp: Path):
        self.dir = tmp
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / f"{self.name}.log"
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self, timeout: float = 30.0):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                     cwd=self.dir, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
            try:
                status, _ = _http("GET", self.url + self.ready_path, timeout=1)
                if status < 500:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer on {self.url} within {timeout}s:\n{self.log()}")

    def stop(self, timeout: float = 15.0):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class InfluxServer(_Server):
    """influxd 1.x. With auth=True an admin user `admin:secret` exists and
    every request needs credentials."""
    name = "influxd"
    ready_path = "/ping"
    ADMIN = ("admin", "secret")

    def __init__(self, tmp: Path, auth: bool = False):
        super().__init__(tmp)
        self.auth = auth
        self.rpc_port = free_port()
        self.config_path = tmp / "influxdb.conf"
        self.config_path.write_text(f"""
reporting-disabled = true
bind-address = "127.0.0.1:{self.rpc_port}"

[meta]
  dir = "{tmp / 'meta'}"

[data]
  dir = "{tmp / 'data'}"
  wal-dir = "{tmp / 'wal'}"
  query-log-enabled = false

[http]
  bind-address = "127.0.0.1:{self.port}"
  auth-enabled = {str(auth).lower()}
  log-enabled = false

[monitor]
  store-enabled = false

[continuous_queries]
  enabled = false
""")

    def command(self):
        return [INFLUXD, "run", "-config", str(self.config_path)]

    def start(self, timeout: float = 30.0):
        super().start(timeout)
        if self.auth:
            # The first user may be created without credentials.
            self.query(f"CREATE USER {self.ADMIN[0]} WITH PASSWORD '{self.ADMIN[1]}' WITH ALL PRIVILEGES")
        return self

    def query(self, q: str, db: str = "") -> dict:
        params = {"q": q, "epoch": "ms", **({"db": db} if db else {})}
        if self.auth:
            params.update(u=self.ADMIN[0], p=self.ADMIN[1])
        status, body = _http("POST", self.url + "/query?" + urllib.parse.urlencode(params))
        if status != 200:
            raise RuntimeError(f"influxd query {q!r}: HTTP {status} {body[:200]!r}")
        return json.loads(body)

    def create_database(self, db: str) -> str:
        self.query(f'CREATE DATABASE "{db}"')
        return db

    def rows(self, q: str, db: str) -> list[dict]:
        """The rows of a single-series (or merged) InfluxQL answer as dicts."""
        out = []
        for result in self.query(q, db)["results"]:
            assert "error" not in result, result
            for series in result.get("series", []):
                out += [dict(zip(series["columns"], values)) for values in series["values"]]
        return out


class VictoriaServer(_Server):
    """VictoriaMetrics single node. It accepts influxdb-client's /api/v2/write
    and stores each field as a series `{measurement}_{field}`."""
    name = "victoria-metrics"
    ready_path = "/health"

    def command(self):
        return [VICTORIA, f"-httpListenAddr=127.0.0.1:{self.port}",
                f"-storageDataPath={self.dir / 'data'}", "-retentionPeriod=100y",
                "-search.latencyOffset=0s", "-loggerLevel=ERROR"]

    def flush(self):
        # Makes just-written samples visible to searches without waiting.
        _http("GET", self.url + "/internal/force_flush")

    def export(self, match: str) -> list[dict]:
        """Every series matching `match`, as VictoriaMetrics' JSON lines."""
        self.flush()
        q = urllib.parse.urlencode({"match[]": match, "start": "0"})
        status, body = _http("GET", f"{self.url}/api/v1/export?{q}")
        if status != 200:
            raise RuntimeError(f"export {match}: HTTP {status} {body[:200]!r}")
        return [json.loads(line) for line in body.splitlines() if line.strip()]


@pytest.fixture(scope="session")
def influxd(tmp_path_factory):
    """A shared influxd 1.6 without auth; tests create their own databases."""
    server = InfluxServer(tmp_path_factory.mktemp("influxd")).start()
    yield server
    server.stop()


@pytest.fixture
def influxd_own(tmp_path):
    """An influxd of this test's own, free to be stopped and restarted."""
    server = InfluxServer(tmp_path / "influxd").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def influxd_auth(tmp_path_factory):
    server = InfluxServer(tmp_path_factory.mktemp("influxd-auth"), auth=True).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def victoria(tmp_path_factory):
    server = VictoriaServer(tmp_path_factory.mktemp("victoria")).start()
    yield server
    server.stop()


def unique_db(prefix: str = "t") -> str:
    return f"{prefix}_{os.getpid()}_{time.monotonic_ns()}"


# -- recorded candles and writers for the storage tests -------------------------
KLINES = ROOT / "data" / "klines"


def recorded(name: str = "BTCUSDT-1m-2020-01-01.csv") -> list:
    from app.candles import candles_from_csv
    return list(candles_from_csv(KLINES / name))


def first_update(candle):
    """The first update Binance sends for a candle: one trade at the open
    price, not closed. Built from the recorded candle, no invented prices."""
    from dataclasses import replace
    return replace(candle, high=candle.open, low=candle.open, close=candle.open,
                   volume=0.0, quote_volume=0.0, trades=0, closed=False,
                   event_time=candle.open_time)


def make_writer(store, spool_dir, **options):
    """A writer with test-friendly timings (fast flushes and retries)."""
    from app.storage.spool import Spool
    from app.storage.writer import Writer
    spool = Spool(str(spool_dir), options.pop("spool_max_bytes", 64 * 1024 * 1024))
    settings = dict(batch_size=5000, flush_interval=0.05, retry_initial=0.05, retry_max=0.3)
    return Writer(store, spool, **{**settings, **options})

