"""What one client may take: gunicorn's threads (slow request headers), the
analysis endpoints' CPU and memory, /history's row cap."""
import dataclasses
import socket
import sqlite3
import threading

import pytest

from app import create_app
from app.storage import Point
from app.storage.sqlite import SqliteStore
from app.web.data import HISTORY_MAX
from tests.dbservers import recorded
from tests.harness import LiveApp, free_port, http, wait_until

BTC = recorded()
ETH = recorded("ETHUSDT-1m-2022-08-14.csv")
DAY_MS = 86_400_000


# -- slow clients under real gunicorn -------------------------------------------------
@pytest.fixture
def few_threads(tmp_path):
    """gunicorn with 33 threads (WS_MAX_CLIENTS + 32) and a 2 s header deadline."""
    app = LiveApp(tmp_path, None, BINANCE=f"http://127.0.0.1:{free_port()}", BINANCE_SYMBOLS="",
                  WS_MAX_CLIENTS=1, REQUEST_HEADER_TIMEOUT=2).start(wait_connected=False)
    yield app
    app.stop()


def connect(app) -> socket.socket:
    return socket.create_connection(("127.0.0.1", app.port), timeout=30)


def closed_by_server(sock) -> bool:
    """True once the server has closed the connection (reads EOF or a reset)."""
    sock.settimeout(0.01)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except (TimeoutError, BlockingIOError):
        return False
    except OSError:
        return True


def test_slow_request_headers_cannot_hold_the_threads(few_threads):
    app = few_threads
    # More connections than threads, each one byte short of finishing its
    # headers and kept alive by a byte every 0.2 s: gthread gave each a
    # thread blocked in recv for as long as the bytes kept coming.
    slow = [connect(app) for _ in range(40)]
    idle = [connect(app) for _ in range(5)]  # send nothing at all
    stop = threading.Event()

    def trickle():
        for s in slow:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        while not stop.wait(0.2):
            for s in slow:
                try:
                    s.sendall(b"X")
                except OSError:
                    pass

    trickler = threading.Thread(target=trickle, name="test-trickle")
    trickler.start()
    try:
        status, body = http("GET", app.url + "/health", timeout=20)
        assert status in (200, 503) and "status" in body
        # A kept-alive connection's next request is held to the same deadline.
        kept = connect(app)
        kept.sendall(b"GET /config HTTP/1.1\r\nHost: x\r\n\r\nGET /config HTTP/1.1\r\n")
        assert kept.recv(65536).startswith(b"HTTP/1.1 200")
        # Everyone short of a whole request is closed at the deadline.
        wait_until(lambda: all(closed_by_server(s) for s in slow + idle + [kept]), 15,
                   message="slow connections closed")
    finally:
        stop.set()
        trickler.join()
        for s in slow + idle:
            s.close()
    assert http("GET", app.url + "/config")[0] == 200


def test_oversized_request_headers_get_431(few_threads):
    with connect(few_threads) as s:
        s.sendall(b"GET /health HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 70_000 + b"\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 431")


# -- analysis and history, through the app ----------------------------------------
def shifted(candles, days):
    """The recorded candles moved whole days later: real prices, more rows."""
    return [dataclasses.replace(c, open_time=c.open_time + days * DAY_MS,
                                close_time=c.close_time + days * DAY_MS,
                                event_time=c.event_time + days * DAY_MS) for c in candles]


@pytest.fixture
def stored(tmp_path):
    """Path of a SQLite file with 4 days of BTCUSDT 1m (5760 candles, more
    than HISTORY_MAX) and one of ETHUSDT; nothing holds it open."""
    path = str(tmp_path / "candles.sqlite3")
    store = SqliteStore(path)
    store.write([Point(c) for day in range(4) for c in shifted(BTC, day)] + [Point(c) for c in ETH])
    store.close()
    return path


def make_app(tmp_path, path, **settings):
    dead = f"127.0.0.1:{free_port()}"
    return create_app(TESTING=True, BINANCE_WS_URL=f"ws://{dead}", BINANCE_REST_URL=f"http://{dead}",
                      SQLITE_PATH=path, SPOOL_DIR=str(tmp_path / "spool"), **settings)


def test_history_is_capped(tmp_path, stored):
    assert 4 * len(BTC) > HISTORY_MAX
    client = make_app(tmp_path, stored).test_client()
    newest = shifted(BTC, 3)[-1].open_time
    for limit in (HISTORY_MAX, HISTORY_MAX + 1, 100_000):
        r = client.get(f"/history/BTCUSDT?limit={limit}")
        assert r.status_code == 200 and r.json["limit"] == HISTORY_MAX
        times = [c["open_time"] for c in r.json["candles"]]
        assert len(times) == HISTORY_MAX and times[-1] == newest
        assert times == sorted(times) and times[0] == newest - (HISTORY_MAX - 1) * 60_000
    r = client.get("/history/BTCUSDT?start=0&limit=100000")
    assert r.json["count"] == HISTORY_MAX and r.json["candles"][0]["open_time"] == BTC[0].open_time


def test_analysis_reads_at_most_its_budget(tmp_path, stored):
    client = make_app(tmp_path, stored, ANALYSIS_MAX_CANDLES=2000).test_client()
    # Two symbols: 1440 candles each is 2880 to read, more than 2000.
    r = client.get("/analysis?interval=1m&window=24h")
    assert r.status_code == 400 and r.json["error"] == "Bad Request"
    assert "2880 in all" in r.json["message"] and "at most 1000 candles" in r.json["message"]
    r = client.get("/analysis?interval=1m&window=1000")
    assert r.status_code == 200 and len(r.json["movers"]) == 2
    assert client.get("/analysis/BTCUSDT?window=2000").json["count"] == 2000
    r = client.get("/analysis/BTCUSDT?window=2001")
    assert r.status_code == 400 and "at most 2000" in r.json["message"]
    assert client.get("/analysis/BTCUSDT?window=100000").status_code == 400  # past MAX_WINDOW too


def test_analyses_beyond_the_concurrency_cap_are_told_to_retry(tmp_path, stored):
    app = make_app(tmp_path, stored, ANALYSIS_MAX_CONCURRENT=1, STORAGE_TIMEOUT=60)
    # A real lock on the database file: the first analysis waits for it
    # while holding the one slot.
    locker = sqlite3.connect(stored, isolation_level=None)
    locker.execute("PRAGMA locking_mode=EXCLUSIVE")
    locker.execute("BEGIN EXCLUSIVE")
    first = {}
    waiting = threading.Thread(target=lambda: first.update(r=app.test_client().get("/analysis/BTCUSDT")),
                               name="test-analysis")
    try:
        waiting.start()
        slots = app.extensions["analysis_slots"]
        wait_until(lambda: not slots.acquire(blocking=False) or slots.release(), 10,
                   message="the first analysis to take the slot")
        client = app.test_client()
        for url in ("/analysis/ETHUSDT", "/analysis?window=60"):
            r = client.get(url)
            assert r.status_code == 503 and r.json["error"] == "Busy", r.json
            assert r.headers["Retry-After"] == "1"
        assert client.get("/stats").json["refusals"]["analysis_busy"] == 2
    finally:
        locker.execute("COMMIT")
        locker.close()
        waiting.join(30)
    assert first["r"].status_code == 200 and first["r"].json["count"] == 1440
    assert app.test_client().get("/analysis/ETHUSDT").status_code == 200  # the slot is free again
