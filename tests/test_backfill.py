"""Gap backfill against real HTTP: the replay exchange where it can produce
the case, else a small Binance-like klines server on 127.0.0.1 (the replay
derives everything from one recorded day of 1m candles: no months, no 1s
candles, no short pages). Candles are stored in a real SQLite store."""
import itertools
import json
import queue
import threading
import time
import urllib.parse
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from app import create_app
from app.backfill import Backfiller
from app.candles import INTERVALS, Candle, candle_close_time, next_open_time
from app.exchange import BinanceRest
from app.storage import SqliteStore
from app.storage.schema import Point
from tests.harness import wait_until


def ms(*args) -> int:
    return int(datetime(*args, tzinfo=timezone.utc).timestamp() * 1000)


def price(open_time: int) -> float:
    return 100.0 + open_time // 1000 % 97


def candle(symbol: str, interval: str, open_time: int) -> Candle:
    p = price(open_time)
    close = candle_close_time(open_time, interval)
    return Candle(symbol, interval, open_time, close, p, p + 1, p - 1, p, 2.0, 2.0 * p, 3, True, close + 1)


class KlinesServer:
    """GET /api/v3/klines as Binance answers it, over a made-up market: a
    candle every interval (calendar months for 1M) from `first` up to the
    one open at `now()` (the wall clock unless given), the open one last.
    `page_max` answers fewer rows than asked; `gate` holds answers until set."""

    def __init__(self, interval: str, first: int, now=None, page_max: int = 1000):
        self.interval, self.first, self.page_max = interval, first, page_max
        self.now = now or (lambda: int(time.time() * 1000))
        self.gate = threading.Event()
        self.gate.set()
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                url = urllib.parse.urlsplit(self.path)
                params = dict(urllib.parse.parse_qsl(url.query))
                server.requests.append(params)
                server.gate.wait(10)
                body = json.dumps(server.rows(params)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="test-klines", daemon=True)
        self.thread.start()

    def rows(self, params: dict) -> list:
        now = self.now()
        times, t = [], self.first
        while t <= now:
            times.append(t)
            t = next_open_time(t, self.interval)
        limit = min(int(params.get("limit", 500)), 1000, self.page_max)
        if "startTime" in params:
            times = [t for t in times if t >= int(params["startTime"])][:limit]
        else:
            times = times[-limit:]
        return [self.row(t, now) for t in times]

    def row(self, t: int, now: int) -> list:
        c = candle("ANY", self.interval, t)
        volume = c.volume if c.close_time < now else c.volume / 2     # the open candle: traded so far
        return [t, str(c.open), str(c.high), str(c.low), str(c.close), str(volume), c.close_time,
                str(c.quote_volume), c.trades, "1.0", "1.0", "0"]

    def stop(self):
        self.gate.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def klines():
    servers = []

    def make(*args, **kwargs) -> KlinesServer:
        servers.append(KlinesServer(*args, **kwargs))
        return servers[-1]
    yield make
    for s in servers:
        s.stop()


@pytest.fixture
def store(tmp_path):
    s = SqliteStore(str(tmp_path / "candles.sqlite3"))
    yield s
    s.close()


@pytest.fixture
def backfiller():
    made = []

    def make(url: str, store, wanted=lambda stream: True, initial: int = 0) -> Backfiller:
        made.append(Backfiller(BinanceRest(url), store, queue.Queue(), initial, wanted))
        made[-1].start()
        return made[-1]
    yield make
    for b in made:
        b.stop()
        assert not b.alive


def store_candles(store, symbol: str, interval: str, open_times) -> None:
    store.write([Point(candle(symbol, interval, t)) for t in open_times])


def backfilled(b: Backfiller, stream: str, gaps: int = 1) -> list[Candle]:
    """Request a backfill and return what it put on the ingest queue once it
    recorded the gap filled."""
    b.request([stream])
    wait_until(lambda: b.stats()["gaps_filled"] >= gaps, 20, message=f"{stream} backfilled")
    out = []
    while not b.ingest.empty():
        c, source = b.ingest.get_nowait()
        assert source == "backfill"
        out.append(c)
    return out


# -- time --------------------------------------------------------------------------------------

def test_next_open_and_close_times_follow_calendar_months():
    assert next_open_time(ms(2024, 1, 1), "1M") == ms(2024, 2, 1)
    assert next_open_time(ms(2024, 2, 1), "1M") == ms(2024, 3, 1)     # 29 days
    assert next_open_time(ms(2023, 12, 1), "1M") == ms(2024, 1, 1)
    assert candle_close_time(ms(2024, 2, 1), "1M") == ms(2024, 3, 1) - 1
    assert next_open_time(ms(2024, 2, 1), "1m") == ms(2024, 2, 1) + 60_000
    assert candle_close_time(ms(2024, 2, 1), "1w") == ms(2024, 2, 1) + INTERVALS["1w"] - 1


def test_a_month_read_back_from_the_store_closes_at_the_month_end(store):
    store_candles(store, "BTCUSDT", "1M", [ms(2024, 2, 1), ms(2024, 3, 1)])
    feb, mar = store.history("BTCUSDT", "1M", limit=10)
    assert feb.close_time == ms(2024, 3, 1) - 1 and feb.event_time == ms(2024, 3, 1)
    assert mar.close_time == ms(2024, 4, 1) - 1


# -- paging ------------------------------------------------------------------------------------

def test_monthly_backfill_skips_no_month(klines, store, backfiller):
    """After February, 30 days land on 2 March: paging by the nominal month
    asked from there and got April first, skipping March on every run."""
    server = klines("1M", ms(2023, 10, 1), now=lambda: ms(2024, 6, 15))
    store_candles(store, "BTCUSDT", "1M", [ms(2023, 12, 1), ms(2024, 1, 1), ms(2024, 2, 1)])
    got = backfilled(backfiller(server.url, store), "btcusdt@kline_1M")
    # June is still open: the live stream closes it.
    assert [c.open_time for c in got] == [ms(2024, 3, 1), ms(2024, 4, 1), ms(2024, 5, 1)]
    assert got[0].close_time == ms(2024, 4, 1) - 1


def test_short_pages_do_not_end_the_backfill(klines, store, backfiller):
    """Binance may answer fewer rows than asked; only the present ends a backfill."""
    minute = INTERVALS["1m"]
    now = int(time.time() * 1000) // minute * minute
    first = now - 2000 * minute
    server = klines("1m", first, page_max=300)
    store_candles(store, "BTCUSDT", "1m", range(first, first + 10 * minute, minute))
    got = [c.open_time for c in backfilled(backfiller(server.url, store), "btcusdt@kline_1m")]
    assert got == list(range(first + 10 * minute, got[-1] + minute, minute))
    assert got[-1] >= now - minute
    assert len(server.requests) <= 2000 // 300 + 2


def test_a_candle_that_closes_between_pages_has_its_final_values(klines, store, backfiller):
    """The exchange's clock moves on between two requests (the replay's is
    far behind ours): the open candle ending one page has closed by the next."""
    minute = INTERVALS["1m"]
    first = ms(2024, 5, 1)
    requests = itertools.count()
    server = klines("1m", first, now=lambda: first + (20 + min(1, next(requests))) * minute + 1)
    store_candles(store, "BTCUSDT", "1m", range(first, first + 10 * minute, minute))
    got = backfilled(backfiller(server.url, store), "btcusdt@kline_1m")
    assert [c.open_time for c in got] == list(range(first + 10 * minute, first + 21 * minute, minute))
    assert {c.volume for c in got} == {2.0}


def test_a_hole_older_than_a_thousand_1s_candles_is_found(klines, store, backfiller):
    """1000 candles of 1s are 17 minutes: a backfill that runs later than
    that (a ban, retries, a restart) must still see the hole."""
    second = INTERVALS["1s"]
    now = int(time.time() * 1000) // second * second
    first = now - 2000 * second
    hole = set(range(first + 100 * second, first + 160 * second, second))
    stored = set(range(first, now, second)) - hole
    store_candles(store, "BTCUSDT", "1s", sorted(stored))
    server = klines("1s", first)
    got = {c.open_time for c in backfilled(backfiller(server.url, store), "btcusdt@kline_1s")}
    assert hole <= got
    assert not got & stored       # what is stored already is not fetched into the ingest again


# -- streams removed meanwhile -----------------------------------------------------------------

def test_a_stream_removed_during_its_backfill_gets_no_candles(klines, store, backfiller):
    """The feed is asked before fetching and before the candles go on."""
    server = klines("1m", int(time.time() * 1000) // 60_000 * 60_000 - 100 * 60_000)
    wanted = {"btcusdt@kline_1m", "ethusdt@kline_1m"}
    b = backfiller(server.url, store, wanted.__contains__, initial=5)
    server.gate.clear()
    b.request(["btcusdt@kline_1m"])
    wait_until(lambda: server.requests, 10, message="the BTCUSDT request")
    wanted.discard("btcusdt@kline_1m")           # unsubscribed while Binance answers
    server.gate.set()
    b.request(["xrpusdt@kline_1m", "ethusdt@kline_1m"])    # XRPUSDT is not followed
    wait_until(lambda: b.ingest.qsize() >= 5, 10, message="the ETHUSDT candles")
    got = [b.ingest.get_nowait()[0] for _ in range(b.ingest.qsize())]
    assert {c.symbol for c in got} == {"ETHUSDT"} and len(got) == 5
    assert [r["symbol"] for r in server.requests] == ["BTCUSDT", "ETHUSDT"]


def test_a_stream_unsubscribed_while_its_subscribe_is_in_flight_stays_out_of_prices(replay_server, tmp_path):
    """Unsubscribed before Binance confirmed it: neither the confirmation
    (which asks for a backfill) nor live data may bring it back."""
    app = create_app(TESTING=True, BINANCE_WS_URL=replay_server.ws_url, BINANCE_REST_URL=replay_server.url,
                     BINANCE_SYMBOLS=["BTCUSDT"], SQLITE_PATH=str(tmp_path / "c.sqlite3"),
                     SPOOL_DIR=str(tmp_path / "spool"), FEED_BACKOFF_INITIAL=0.2)
    services = app.extensions["services"]
    services.start()
    try:
        feed = services.feed
        wait_until(lambda: feed.connected, 10, message="connected")
        assert feed.wait_settled(["btcusdt@kline_1m"], True, 10) == {"btcusdt@kline_1m": "active"}
        stream = "ethusdt@kline_5m"
        replay_server.control("delay-control", delay=1, seconds=5)
        try:
            subscribing = threading.Thread(target=services.subscribe, args=("ETHUSDT", "5m"))
            subscribing.start()
            wait_until(lambda: any(stream in p for c in feed.connections for _, p, _ in list(c.inflight.values())),
                       5, 0.01, "the SUBSCRIBE sent")
            assert services.unsubscribe("ETHUSDT", "5m")["status"] == "removed"
            subscribing.join(10)
        finally:
            replay_server.control("delay-control", delay=0, seconds=0)
        assert stream not in replay_server.stats()["subscriptions"]
        wait_until(lambda: services.ingest.empty() and not services.backfill.pending, 10, message="all dispatched")
        assert ("ETHUSDT", "5m") not in {c.key for c, _ in services.prices.snapshot()}
    finally:
        services.stop()
