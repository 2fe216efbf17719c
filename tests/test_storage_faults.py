"""Storage under hostile conditions, with real parts: a spool file that is
garbage or torn, a spool row that cannot be decoded, a disk that refuses
writes (the kernel's file size limit), a database that answers 400 to
everything (an HTTP server on 127.0.0.1), one that accepts connections and
never answers (a TCP server on 127.0.0.1) at shutdown, and a live update
that arrives after the candle it belongs to was stored closed."""
import json
import os
import random
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from app import create_app
from app.services import STOP_BUDGET
from app.storage import Point
from app.storage.influx import InfluxStore
from app.storage.spool import Spool
from app.storage.sqlite import SqliteStore
from tests.dbservers import first_update, influxd, make_writer, recorded, unique_db  # noqa: F401
from tests.harness import ROOT, LiveApp, free_port, wait_until
from tests.test_streaming import Listener
from tests.test_metrics import parse, value

BTC = recorded()
ETH = recorded("ETHUSDT-1m-2022-08-14.csv")


def make_app(tmp_path, **overrides):
    """The app with fast storage timings; its upstream is a port nobody
    listens on, so candles come only from the test, through the ingest
    queue and the real dispatcher."""
    dead = f"127.0.0.1:{free_port()}"
    return create_app(TESTING=True, BINANCE_WS_URL=f"ws://{dead}", BINANCE_REST_URL=f"http://{dead}",
                      SQLITE_PATH=str(tmp_path / "candles.sqlite3"), SPOOL_DIR=str(tmp_path / "spool"),
                      STORAGE_FLUSH_INTERVAL=0.05, STORAGE_RETRY_INITIAL=0.05, STORAGE_RETRY_MAX=0.3,
                      **overrides)


def ingest(services, candles) -> None:
    for c in candles:
        services.ingest.put((c, "live"))


def spooled(spool_dir) -> list:
    spool = Spool(str(spool_dir), 1 << 30)
    spool.open()
    try:
        return sorted((p.candle for _, p in spool.oldest(1 << 20)), key=lambda c: c.open_time)
    finally:
        spool.close()


# -- a corrupt spool file ---------------------------------------------------------------
@pytest.mark.parametrize("damage", ["garbage", "torn"])
def test_a_corrupt_spool_is_moved_aside_and_the_server_starts(tmp_path, damage):
    spool_dir = tmp_path / "spool"
    path = spool_dir / "spool.sqlite3"
    if damage == "garbage":
        spool_dir.mkdir()
        path.write_bytes(random.Random(9).randbytes(64 * 1024))
    else:  # a spool full of candles, cut in the middle
        spool = Spool(str(spool_dir), 1 << 30)
        spool.open()
        spool.put([Point(c) for c in BTC])
        spool.close()
        os.truncate(path, path.stat().st_size // 2)
    damaged = path.read_bytes()

    app = make_app(tmp_path)
    services = app.extensions["services"]
    services.start()
    try:
        ingest(services, ETH[:50])
        store = services.storage.store
        wait_until(lambda: store.history("ETHUSDT", "1m", limit=100) == ETH[:50], 10, message="candles stored")
        client = app.test_client()
        for endpoint in ("/stats", "/health"):
            storage = client.get(endpoint).json["storage"]
            assert storage["spool_corrupt"] == 1, endpoint
            assert storage["spool_corrupt_moved_to"].startswith(str(path) + ".corrupt-"), endpoint
        families = parse(client.get("/metrics").get_data(as_text=True))
        assert value(families, "pricestream_storage_spool_corrupt_total") == 1
    finally:
        services.stop()
    aside = [p for p in spool_dir.glob("spool.sqlite3.corrupt-*") if not p.name.endswith(("-wal", "-shm"))]
    assert [p.read_bytes() for p in aside] == [damaged]  # kept as it was, for an operator
    assert spooled(spool_dir) == []  # the fresh spool works


# -- a spool row that cannot be decoded ----------------------------------------------------
def test_an_undecodable_spool_row_is_set_aside_and_the_rest_drained(tmp_path):
    spool_dir = tmp_path / "spool"
    spool = Spool(str(spool_dir), 1 << 30)
    spool.open()
    spool.put([Point(c) for c in BTC[:100]])
    spool.close()
    with closing(sqlite3.connect(spool_dir / "spool.sqlite3")) as db, db:
        # seq 0: the oldest row, first in line for the drain
        db.execute("INSERT INTO pending VALUES ('BTCUSDT', '1m', ?, 0, 1, ?)",
                   (BTC[100].open_time, '[["BTCUSDT", "1m", 157'))
    store = SqliteStore(str(tmp_path / "candles.sqlite3"))
    writer = make_writer(store, spool_dir)
    writer.start()
    try:
        wait_until(lambda: writer.stats()["spool_points"] == 0, 10, message="the spool drained")
    finally:
        writer.stop()
    assert store.history("BTCUSDT", "1m", limit=1000) == BTC[:100]
    assert writer.stats()["spool_undecodable"] == 1
    with closing(sqlite3.connect(spool_dir / "spool.sqlite3")) as db:
        assert db.execute("SELECT open_time, point FROM undecodable").fetchall() == [
            (BTC[100].open_time, '[["BTCUSDT", "1m", 157')]
    store.close()


# -- a disk that refuses writes ------------------------------------------------------------
FULL_DISK = r"""
import json, resource, signal, sys
from app.storage import Point
from app.storage.spool import Spool
from tests.dbservers import first_update, recorded

btc = recorded()
spool = Spool(sys.argv[1], 1 << 30)
spool.open()
spool.put([Point(first_update(c)) for c in btc[:500]])
# From here the kernel refuses any write past the first KiB of a file
# (EFBIG): SQLite can neither insert nor delete, as on a full disk.
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1024, resource.RLIM_INFINITY))
full = spool.put([Point(c) for c in btc[500:600]] + [Point(first_update(c)) for c in btc[600:650]])
count_full = spool.count
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
freed = spool.put([Point(c) for c in btc[500:600]])
print(json.dumps({"full": full, "count_full": count_full, "freed": freed, "count": spool.count,
                  "kept": sum(p.candle.closed for _, p in spool.oldest(1000))}))
"""


def test_a_disk_that_refuses_even_the_evictions(tmp_path):
    """Spool.put on a full disk drops open candles to keep closed ones; when
    even those deletes fail it must drop the batch and go on, not raise."""
    done = subprocess.run([sys.executable, "-c", FULL_DISK, str(tmp_path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["full"] == [50, 100] and result["count_full"] == 500  # counted, spool unchanged
    assert result["freed"] == [0, 0] and result["count"] == 600 and result["kept"] == 100
    assert "spool write failed" in done.stderr


# -- a database that refuses every write -------------------------------------------------------
class RefusingDatabase(ThreadingHTTPServer):
    """Answers 400 to every write until `accept` is set, then 204, and
    keeps every answer and body."""
    daemon_threads = True

    def __init__(self):
        self.accept = False
        self.answers: list[tuple[int, bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status = 204 if outer.accept else 400
                outer.answers.append((status, body))
                self.send_response(status)
                payload = b"" if status == 204 else b'{"error":"unable to parse points"}'
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass
        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, name="refusing-db", daemon=True).start()

    def stored_open_times(self) -> set[int]:
        return {int(line.rsplit(b" ", 1)[1]) for status, body in self.answers if status == 204
                for line in body.splitlines() if line.startswith(b"crypto_price,")}


@pytest.fixture
def refusing_db():
    server = RefusingDatabase()
    yield server
    server.shutdown()
    server.server_close()


def test_a_database_that_refuses_everything_is_retried_not_bisected(tmp_path, refusing_db):
    store = InfluxStore(refusing_db.url, "crypto", api="v1", timeout=5)
    writer = make_writer(store, tmp_path / "spool")
    writer.start()
    try:
        for c in BTC[:100]:
            writer.submit(c)
        wait_until(lambda: writer.stats()["failures"] >= 3, 10, message="three refused attempts")
        stats = writer.stats()
        assert stats["rejected"] == 0 and stats["spool_points"] == 100  # nothing dropped
        assert stats["last_error"]["kind"] == "refused" and stats["refused_all"] >= 3
        refusing_db.accept = True
        wait_until(lambda: writer.stats()["spool_points"] == 0, 10, message="the spool drained")
    finally:
        writer.stop()
    stats = writer.stats()
    assert stats["rejected"] == 0 and stats["dropped"] == 0
    assert refusing_db.stored_open_times() >= {c.open_time for c in BTC[:100]}
    # Each failed attempt costs the batch and one probe (plus at most one
    # batch refused just before `accept`), not 2n-1 requests.
    refused = sum(status == 400 for status, _ in refusing_db.answers)
    assert refused <= 2 * stats["failures"] + 1, (refused, stats["failures"])


# -- a database that hangs at shutdown ------------------------------------------------------------
class HangingDatabase:
    """Accepts connections, reads the request, never answers."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.requests = 0
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, name="hanging-db", daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            if conn.recv(65536):
                self.requests += 1

    def close(self):
        self.sock.close()
        for conn in self.conns:  # frees a writer thread still waiting for an answer
            conn.close()


@pytest.fixture
def hanging_db():
    server = HangingDatabase()
    yield server
    server.close()


def test_stop_with_a_hanging_database_spools_within_the_budget(tmp_path, hanging_db, influxd):  # noqa: F811
    """A write that never returns (STORAGE_TIMEOUT is longer than the
    shutdown may take): stop still ends within its budget, with every
    candle in the spool, and the next start writes them."""
    app = make_app(tmp_path, INFLUXDB_HOST=hanging_db.url, INFLUXDB_API="v1", STORAGE_TIMEOUT=60)
    services = app.extensions["services"]
    services.start()
    ingest(services, BTC[:100])
    wait_until(lambda: hanging_db.requests, 10, message="the writer's first write to reach the database")
    ingest(services, BTC[100:200])
    started = time.monotonic()
    services.stop()
    assert time.monotonic() - started <= STOP_BUDGET + 1
    assert spooled(tmp_path / "spool") == BTC[:200]

    db = influxd.create_database(unique_db("hang"))
    app = make_app(tmp_path, INFLUXDB_HOST=influxd.url, INFLUXDB_API="v1", INFLUXDB_DATABASE=db)
    services = app.extensions["services"]
    services.start()
    try:
        store = services.storage.store
        wait_until(lambda: store.history("BTCUSDT", "1m", limit=1000) == BTC[:200], 20,
                   message="the spooled candles written after the restart")
    finally:
        services.stop()
    assert services.storage.writer.stats()["spool_points"] == 0


# -- a late live update ---------------------------------------------------------------------------
def test_a_stale_live_update_never_overwrites_a_stored_closed_candle(tmp_path):
    app = make_app(tmp_path)
    services = app.extensions["services"]
    store = services.storage.store
    services.start()
    try:
        ingest(services, [BTC[0]])
        wait_until(lambda: store.history("BTCUSDT", "1m", limit=10) == BTC[:1], 10, message="the closed candle")
        # An in-progress update of it, delivered late (a reconnect replays
        # it), then the next candle: once that is stored, so would it be.
        ingest(services, [first_update(BTC[0]), BTC[1]])
        wait_until(lambda: store.history("BTCUSDT", "1m", limit=10)[-1:] == BTC[1:2], 10, message="the next candle")
    finally:
        services.stop()
    assert store.history("BTCUSDT", "1m", limit=10) == BTC[:2]
    assert services.stats()["stale_updates"] == 1


def test_a_candle_the_database_refuses_is_dropped_and_the_rest_written(tmp_path, influxd):  # noqa: F811
    """The probe must not turn a real refusal into a retry loop: influxd
    refuses a point older than the retention policy, and takes the rest."""
    db = unique_db("retention")
    influxd.query(f'CREATE DATABASE "{db}" WITH DURATION 1h')
    shift = int(time.time() // 60 * 60_000) - BTC[9].open_time
    recent = [replace(c, open_time=c.open_time + shift, close_time=c.close_time + shift,
                      event_time=c.event_time + shift) for c in BTC[:10]]
    store = InfluxStore(influxd.url, db, api="v1", timeout=5)
    writer = make_writer(store, tmp_path / "spool", flush_interval=10)  # one batch, at stop
    writer.start()
    for c in recent[:5] + [BTC[100]] + recent[5:]:
        writer.submit(c)
    writer.stop()
    stats = writer.stats()
    assert stats["rejected"] == 1 and stats["failures"] == 0 and stats["spool_points"] == 0
    assert stats["last_error"]["kind"] == "bad_data"
    assert InfluxStore(influxd.url, db, api="v1").history("BTCUSDT", "1m", limit=100) == recent


def test_sigterm_with_a_hanging_database_keeps_every_acknowledged_candle(tmp_path, hanging_db, replay_server):
    """The same under gunicorn: the worker exits by itself within the
    graceful timeout (not SIGKILLed), and what a client was sent as closed
    is in the spool."""
    app = LiveApp(tmp_path, replay_server.url, BINANCE_SYMBOLS="BTCUSDT", INFLUXDB_HOST=hanging_db.url,
                  INFLUXDB_API="v1", STORAGE_TIMEOUT=60).start()
    try:
        client = Listener(app.ws_url + "?symbols=btcusdt@1m")
        wait_until(lambda: hanging_db.requests, 10, message="the writer's first write to reach the database")
        wait_until(lambda: sum(u["closed"] for u in client.updates()) >= 20, 20, message="closed candles sent")
        worker = app.worker_pid()
    finally:
        assert app.stop() == 0
    client.join(10)
    assert "SIGKILL" not in app.log() and f"Worker exiting (pid: {worker})" in app.log()
    acknowledged = {u["open_time"] for u in client.updates() if u["closed"]}
    held = {c.open_time for c in spooled(tmp_path / "spool") if c.closed and c.interval == "1m"}
    assert acknowledged <= held, sorted(acknowledged - held)[:5]
