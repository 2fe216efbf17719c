"""Fault injection, end to end: a replay exchange of each test's own, the app
under gunicorn, and a real influxd where the database is what fails.

After every fault the stored closed 1m candles of the replayed window must
equal the recording exactly: none missing, none duplicated, every value as
recorded. The window starts at the first recorded candle (the exchange starts
there, and the app's first backfill fetches what was replayed before it was
up) and ends at a candle the exchange had closed once the fault was over.
The store is read with plain SQL or InfluxQL, not through the app."""
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from contextlib import closing
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import pairwise

import pytest

from app.storage.spool import Spool
from tests.dbservers import influxd, influxd_own, recorded, unique_db  # noqa: F401
from tests.harness import LiveApp, wait_until
from tests.replay_helpers import start_replay, stop_replay
from tests.test_streaming import Listener

SPEED = 600                 # a 1m candle every 0.1 s; each recording lasts 144 s
MINUTE = 60_000
RECORDING = {"BTCUSDT": recorded(), "ETHUSDT": recorded("ETHUSDT-1m-2022-08-14.csv")}
FIELDS = ("open", "high", "low", "close", "volume", "quote_volume", "trades")


def recorded_rows(symbol: str, through: int) -> list[tuple]:
    return [(c.open_time, *(getattr(c, f) for f in FIELDS), True)
            for c in RECORDING[symbol] if c.open_time <= through]


class SqliteFile:
    """The app's default store (LiveApp puts it in the test's tmp dir)."""

    def __init__(self, tmp):
        self.path = tmp / "candles.sqlite3"
        self.app_env: dict = {}

    def _query(self, sql: str, *args) -> list[tuple]:
        with closing(sqlite3.connect(self.path)) as db:
            return db.execute(sql, args).fetchall()

    def rows(self, symbol: str, first: int, last: int) -> list[tuple]:
        found = self._query(f"SELECT open_time, {','.join(FIELDS)}, closed FROM crypto_price"
                            " WHERE symbol = ? AND interval = '1m' AND open_time BETWEEN ? AND ?"
                            " ORDER BY open_time", symbol, first, last)
        return [(*r[:-1], bool(r[-1])) for r in found]

    def sources(self, symbol: str) -> Counter:
        return Counter(dict(self._query("SELECT source, count(*) FROM crypto_price"
                                        " WHERE symbol = ? GROUP BY source", symbol)))


class InfluxDatabase:
    """A database on a real influxd; the app may be pointed at it through a
    proxy (`app_url`)."""

    def __init__(self, server, app_url: str | None = None):
        self.server = server
        self.db = server.create_database(unique_db("faults"))
        self.app_env = {"INFLUXDB_HOST": app_url or server.url, "INFLUXDB_API": "v1",
                        "INFLUXDB_DATABASE": self.db, "STORAGE_TIMEOUT": 2}

    def rows(self, symbol: str, first: int, last: int) -> list[tuple]:
        fields = ",".join(f'"{f}"' for f in FIELDS)
        found = self.server.rows(f'SELECT {fields},"closed" FROM crypto_price WHERE "symbol" = \'{symbol}\''
                                 f' AND "interval" = \'1m\' AND time >= {first}ms AND time <= {last}ms', self.db)
        return [(r["time"], *(r[f] for f in FIELDS), r["closed"]) for r in found]


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M")


def difference(got: list[tuple], expected: list[tuple]) -> str:
    have, want = {r[0]: r for r in got}, {r[0]: r for r in expected}
    parts = [f"{len(got)} rows stored, {len(expected)} recorded"]
    for name, times in (("missing", sorted(want.keys() - have.keys())),
                        ("duplicated", sorted(t for t, n in Counter(r[0] for r in got).items() if n > 1)),
                        ("never recorded", sorted(have.keys() - want.keys()))):
        if times:
            parts.append(f"{name}: {len(times)}, e.g. {[iso(t) for t in times[:5]]}")
    differing = [t for t in sorted(have.keys() & want.keys()) if have[t] != want[t]]
    if differing:
        t = differing[0]
        parts.append(f"{len(differing)} differ, e.g. stored {have[t]} recorded {want[t]}")
    return "; ".join(parts)


def closed_at_exchange(replay, symbol: str) -> int:
    """Open time of the newest candle the exchange has closed."""
    now = replay.stats()["clock"][symbol]
    return now - now % MINUTE - MINUTE


def assert_store_matches_recording(store, replay, timeout: float = 30) -> None:
    """The store comes to hold exactly the recording, up to a candle the
    exchange has closed by now (gaps are filled in the background, so this
    waits for it, and shows what differs if it never happens)."""
    for symbol in RECORDING:
        assert_stored_as_recorded(store, symbol, closed_at_exchange(replay, symbol), timeout)


def assert_stored_as_recorded(store, symbol: str, through: int, timeout: float) -> None:
    expected = recorded_rows(symbol, through)
    got: list[tuple] = []

    def complete():
        got[:] = store.rows(symbol, expected[0][0], through)
        return got == expected
    try:
        wait_until(complete, timeout, 0.2)
    except AssertionError:
        pytest.fail(f"{symbol} up to {iso(through)} after {timeout}s: {difference(got, expected)}")


def stats(app) -> dict:
    status, body = app.get("/stats")
    assert status == 200, body
    return body


def subscribed(app) -> bool:
    """Every feed connection is up and the exchange confirmed all its streams."""
    conns = stats(app)["feed"]["connections"]
    return bool(conns) and all(c["connected"] and c["active_streams"] == c["streams"] for c in conns)


class Rig:
    def __init__(self, replay, app: LiveApp, store):
        self.replay, self.app, self.store = replay, app, store

    def reconnects(self) -> int:
        return stats(self.app)["feed"]["reconnects"]

    def writer(self) -> dict:
        return stats(self.app)["storage"]

    def wait_subscribed(self, timeout: float = 20) -> None:
        wait_until(lambda: subscribed(self.app), timeout, 0.05, f"the feed to resubscribe ({self.app.log_path})")

    def reconnect_after(self, fault) -> None:
        """Inject `fault`, then wait until the feed has noticed (until then it
        still looks subscribed) and has subscribed again."""
        before = self.reconnects()
        fault()
        wait_until(lambda: self.reconnects() > before, 10, message="the feed to notice the fault")
        self.wait_subscribed()

    def drop(self) -> None:
        self.reconnect_after(self.replay.drop)


@pytest.fixture
def rig(tmp_path):
    """rig(store=None, replay=None, **env): this test's own exchange (replay
    options), and the app following its two symbols and storing in `store`
    (default: the SQLite file), with `env` on top."""
    started = []

    def make(store=None, replay=None, **env) -> Rig:
        exchange = start_replay(**{"speed": SPEED, **(replay or {})})
        started.append(lambda: stop_replay(exchange))
        store = store or SqliteFile(tmp_path)
        app = LiveApp(tmp_path, exchange.url, BINANCE_SYMBOLS=",".join(RECORDING), **store.app_env, **env)
        started.append(app.stop)
        app.start()
        made = Rig(exchange, app, store)
        made.wait_subscribed()
        return made

    yield make
    for stop in reversed(started):
        stop()


# -- upstream faults -------------------------------------------------------------------
def drop_near_close(r: Rig, offset_ms: int) -> None:
    """Cut the upstream connections `offset_ms` of replayed time after the
    next candle close (negative: before it). Updates come every 12 s of
    replayed time and the final one at the close, so -6000 cuts between a
    candle's last update and its final one, +6000 right after the final one."""
    clock = r.replay.stats()
    now, speed = clock["clock"]["BTCUSDT"], clock["speed"]
    at = now - now % MINUTE + MINUTE + offset_ms
    if at <= now:
        at += MINUTE
    time.sleep((at - now) / speed / 1000)
    r.drop()


def test_drops_at_candle_closes_are_backfilled(rig):
    drops = 12
    # 300x: a candle every 0.2 s, so the reconnect after each drop misses a few.
    r = rig(replay={"speed": 300}, FEED_BACKOFF_MAX=0.5)
    for i in range(drops):
        drop_near_close(r, -6000 if i % 2 else 6000)
    assert_store_matches_recording(r.store, r.replay)
    assert r.replay.stats()["connections_accepted"] == drops + 1
    backfill = stats(r.app)["backfill"]
    assert backfill["gaps_filled"] > 0 and backfill["gaps_failed"] == 0, backfill
    assert all(g["filled"] and g["candles"] > 0 for g in backfill["recent_gaps"]), backfill["recent_gaps"]
    for symbol in RECORDING:
        assert r.store.sources(symbol)["backfill"] > 0


@pytest.mark.parametrize("status,refusals", [
    # Retry-After says when to come back: one refusal, then the wait.
    pytest.param(429, range(1, 2), id="429-retry-after"),
    # No Retry-After: back off and try again.
    pytest.param(503, range(2, 100), id="503"),
])
def test_refused_handshakes_are_waited_out(rig, status, refusals):
    r = rig()
    r.replay.control("refuse", status=status, seconds=3)
    r.drop()
    assert r.app.log().count(f"handshake refused with HTTP {status}") in refusals
    assert_store_matches_recording(r.store, r.replay)


def test_a_silent_upstream_is_left_and_the_silence_backfilled(rig):
    r = rig(FEED_SILENCE_TIMEOUT=1)
    r.replay.control("silence", seconds=3)
    wait_until(lambda: "no data for" in r.app.log(), 5, message="the silence noticed")
    wait_until(lambda: not r.replay.stats()["silenced"], 5)
    r.wait_subscribed()
    assert_store_matches_recording(r.store, r.replay)


def announce_shutdowns(r: Rig) -> None:
    for _ in range(3):
        r.reconnect_after(lambda: r.replay.control("shutdown-event"))


def wait_for_rotations(r: Rig) -> None:
    wait_until(lambda: r.reconnects() >= 3, 20, message="three rotations")
    r.wait_subscribed()


@pytest.mark.parametrize("replay,env,rotate,logged", [
    pytest.param({}, {}, announce_shutdowns, "announced a server shutdown", id="serverShutdown-event"),
    pytest.param({"max_connection_age": 1}, {}, wait_for_rotations, "closed by server with code 1001",
                 id="exchange-closes-old-connections"),
    pytest.param({}, {"FEED_ROTATE_AFTER": 1}, wait_for_rotations, "rotating a connection",
                 id="own-rotation-age"),
])
def test_rotations_lose_nothing(rig, replay, env, rotate, logged):
    r = rig(replay=replay, **env)
    rotate(r)
    assert logged in r.app.log()
    assert_store_matches_recording(r.store, r.replay)


# -- database faults ---------------------------------------------------------------
def test_database_outage_and_an_upstream_drop_during_it_lose_nothing(rig, influxd_own):
    """The writer and its spool alone are tested in test_storage_influx's
    test_outage_loses_nothing; here the app keeps streaming through a ~20 s
    influxd outage, and a drop near its end needs a backfill while the
    database cannot say what it holds (so it must be tried again later)."""
    r = rig(InfluxDatabase(influxd_own), STORAGE_RETRY_MAX=1)
    wait_until(lambda: r.writer()["points_written"] > 0, 10, message="the first write")
    influxd_own.stop()
    # 20 candles a second at 600x: about 20 s of outage.
    wait_until(lambda: r.writer()["spool_points"] >= 400, 60, message="400 candles spooled")
    r.drop()
    wait_until(lambda: stats(r.app)["backfill"]["gaps_failed"] > 0, 10, message="a backfill to fail")
    influxd_own.start()
    wait_until(lambda: r.writer()["spool_points"] == 0, 30, message="the spool drained")
    assert_store_matches_recording(r.store, r.replay)
    assert r.writer()["dropped"] == 0


class FlakyDatabase(ThreadingHTTPServer):
    """A proxy in front of influxd that, while refusing, answers every
    request with an error status and Retry-After. It notes when each write
    arrived and when it was answered, with what status."""

    daemon_threads = True

    def __init__(self, upstream: str):
        self.upstream = upstream
        self.writes: list[tuple[float, float, int]] = []   # (arrived, answered, status)
        self.refusal: tuple[int, float, float] | None = None   # (status, retry_after, until)
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def refuse(self, status: int, retry_after: float, seconds: float) -> None:
        self.refusal = (status, retry_after, time.monotonic() + seconds)

    def refused_writes(self, status: int) -> int:
        return sum(s == status for _, _, s in self.writes)


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        arrived = time.monotonic()
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        refusal = self.server.refusal
        if refusal and arrived < refusal[2]:
            status, headers, payload = refusal[0], {"Retry-After": f"{refusal[1]:g}"}, b'{"error":"busy"}'
        else:
            status, headers, payload = self._forward(body)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        self.wfile.flush()
        if self.path.startswith("/write"):
            self.server.writes.append((arrived, time.monotonic(), status))

    do_POST = do_GET

    def _forward(self, body: bytes):
        req = urllib.request.Request(self.server.upstream + self.path, data=body or None, method=self.command,
                                     headers={k: v for k, v in self.headers.items()
                                              if k.lower() not in ("host", "content-length", "connection")})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                status, headers, payload = resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as exc:
            status, headers, payload = exc.code, exc.headers, exc.read()
        keep = ("Content-Type", "Content-Encoding", "X-Influxdb-Version", "X-Influxdb-Error")
        return status, {k: headers[k] for k in keep if headers.get(k)}, payload

    def log_message(self, *args):
        pass


@pytest.fixture
def flaky_database(influxd):
    proxy = FlakyDatabase(influxd.url)
    yield proxy
    proxy.shutdown()
    proxy.server_close()


@pytest.mark.parametrize("status", [500, 503])
def test_database_errors_with_retry_after_are_waited_out(rig, influxd, flaky_database, status):
    retry_after = 2.0
    # The writer's own backoff (0.2 s .. 0.5 s) is shorter than Retry-After:
    # only honouring Retry-After keeps it away for 2 s.
    r = rig(InfluxDatabase(influxd, app_url=flaky_database.url), STORAGE_RETRY_INITIAL=0.2, STORAGE_RETRY_MAX=0.5)
    wait_until(lambda: r.writer()["points_written"] > 0, 10, message="the first write")
    flaky_database.refuse(status, retry_after, seconds=5)
    wait_until(lambda: flaky_database.refused_writes(status) >= 2 and flaky_database.writes[-1][2] == 204, 20,
               message="two refused writes, then one taken")
    assert_store_matches_recording(r.store, r.replay)
    writes = list(flaky_database.writes)
    for (_, answered, got), (arrived, _, _) in pairwise(writes):
        if got == status:
            assert arrived - answered >= retry_after, writes
    assert r.writer()["dropped"] == 0


# -- the server stops ------------------------------------------------------------------
# For a busy writer: more streams on top of the two compared, at 1200x.
BUSY_INTERVALS = ("3m", "5m", "15m", "30m", "1h")


def start_busy(rig, request, database_down: bool) -> Rig:
    """The app writing many streams; with `database_down`, into its spool
    because influxd has just been stopped."""
    store = InfluxDatabase(request.getfixturevalue("influxd_own")) if database_down else None
    r = rig(store, replay={"speed": 1200})
    for symbol in RECORDING:
        for interval in BUSY_INTERVALS:
            status, body = r.app.post(f"/symbol/{symbol}/subscribe?interval={interval}")
            assert status == 200, body
    r.wait_subscribed()
    if database_down:
        wait_until(lambda: r.writer()["points_written"] > 0, 10, message="the first write")
        r.store.server.stop()
        wait_until(lambda: r.writer()["spool_points"] > 100, 20, message="candles spooled")
    return r


def database_back(r: Rig) -> None:
    if isinstance(r.store, InfluxDatabase):
        r.store.server.start()


def restart(r: Rig) -> None:
    r.app.start()
    r.wait_subscribed()
    wait_until(lambda: r.writer()["spool_points"] == 0, 30, message="the spool drained")
    assert_store_matches_recording(r.store, r.replay)


def spooled(r: Rig) -> set[tuple]:
    """(symbol, row) of every 1m candle left in the spool of a stopped app."""
    spool = Spool(r.app.env["SPOOL_DIR"], 1 << 30)
    spool.open()
    try:
        return {(p.candle.symbol, p.candle.open_time, *(getattr(p.candle, f) for f in FIELDS), p.candle.closed)
                for _, p in spool.oldest(1 << 20) if p.candle.interval == "1m"}
    finally:
        spool.close()


DATABASE = [pytest.param(False, id="sqlite"), pytest.param(True, id="influxd-down")]


@pytest.mark.parametrize("database_down", DATABASE)
def test_sigterm_keeps_every_acknowledged_candle(rig, request, database_down):
    """What a client was sent as closed before SIGTERM is in the database or
    the spool when the server has exited; after a restart the store is whole."""
    r = start_busy(rig, request, database_down)
    client = Listener(r.app.ws_url + "?symbols=" + ",".join(f"{s}@1m" for s in RECORDING))
    wait_until(lambda: sum(u["closed"] for u in client.updates()) > 50, 10, message="closed candles sent")
    assert r.app.stop() == 0
    client.join(10)
    assert client.closed_with == 1001
    acknowledged = {(u["symbol"], u["open_time"]) for u in client.updates() if u["closed"]}
    database_back(r)
    held = spooled(r)
    for symbol, candles in RECORDING.items():
        held |= {(symbol, *row) for row in r.store.rows(symbol, candles[0].open_time, candles[-1].open_time)}
    as_recorded = {(s, row[0]) for s in RECORDING for row in recorded_rows(s, RECORDING[s][-1].open_time)
                   if (s, *row) in held}
    lost = sorted(acknowledged - as_recorded)
    assert not lost, f"{len(lost)} of {len(acknowledged)} acknowledged candles are neither stored nor spooled" \
                     f" as recorded: {[(s, iso(t)) for s, t in lost[:5]]}"
    restart(r)


@pytest.mark.parametrize("database_down", DATABASE)
def test_sigkill_and_restart_lose_nothing(rig, request, database_down):
    """A crash loses what the writer held in memory; the restart drains the
    spool and backfills that and the downtime."""
    r = start_busy(rig, request, database_down)
    r.app.kill()
    assert bool(spooled(r)) == database_down
    database_back(r)
    restart(r)
