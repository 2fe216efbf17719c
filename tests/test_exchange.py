"""Binance's REST API asked sparingly: requests counted where they arrive, at
a real HTTP server on 127.0.0.1 that answers like Binance in trouble (429
and 418 with Retry-After, 5xx)."""
import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from app import create_app
from app.exchange import BinanceRest, ExchangeUnavailable
from app.services import SubscriptionError
from tests.harness import free_port, wait_until

EXCHANGE_INFO = {"symbols": [{"symbol": "BTCUSDT", "status": "TRADING"}, {"symbol": "XRPUSDT", "status": "TRADING"}]}


class Binance:
    """Answers every request with `status` (and Retry-After when set), or
    200 with a small exchangeInfo / an empty klines list; counts requests."""

    def __init__(self):
        self.status, self.retry_after = 200, None
        self.weight = 1         # X-MBX-USED-WEIGHT-1M
        self.hits: dict[str, list[float]] = {}
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                path = urllib.parse.urlsplit(self.path).path
                with server._lock:
                    server.hits.setdefault(path, []).append(time.monotonic())
                    status, retry_after = server.status, server.retry_after
                if status == 200:
                    body = EXCHANGE_INFO if path.endswith("exchangeInfo") else []
                else:
                    body = {"code": -1003, "msg": "Way too much request weight used; IP banned until later."}
                data = json.dumps(body).encode()
                self.send_response(status)
                if retry_after is not None:
                    self.send_header("Retry-After", str(retry_after))
                self.send_header("X-MBX-USED-WEIGHT-1M", str(server.weight))
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="test-binance", daemon=True)
        self.thread.start()

    def answer(self, status: int, retry_after: int | None = None) -> None:
        with self._lock:
            self.status, self.retry_after = status, retry_after

    def count(self, path: str) -> int:
        with self._lock:
            return len(self.hits.get(path, []))

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def binance():
    server = Binance()
    yield server
    server.stop()


@pytest.fixture
def services(binance, tmp_path):
    """The app's services (not started: nothing listens for the feed) asking `binance`."""
    app = create_app(TESTING=True, BINANCE_WS_URL=f"ws://127.0.0.1:{free_port()}", BINANCE_REST_URL=binance.url,
                     SQLITE_PATH=str(tmp_path / "candles.sqlite3"), SPOOL_DIR=str(tmp_path / "spool"))
    yield app.extensions["services"]
    app.extensions["services"].backfill.stop()


def subscribe_storm(services, n: int = 40) -> list:
    """n subscribe requests at once; their outcomes."""
    outcomes = [None] * n

    def one(i):
        try:
            outcomes[i] = services.subscribe("XRPUSDT", "1m")
        except SubscriptionError as exc:
            outcomes[i] = exc
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return outcomes


@pytest.mark.parametrize("status", [429, 418])
def test_a_storm_of_subscribes_during_a_rate_limit_asks_binance_once(binance, services, status):
    binance.answer(status, retry_after=30)
    outcomes = subscribe_storm(services)
    assert all(isinstance(o, SubscriptionError) and o.reason == "upstream_unavailable" for o in outcomes), outcomes
    assert binance.count("/api/v3/exchangeInfo") == 1
    assert f"HTTP {status}" in str(outcomes[0]) and "asking Binance again in" in str(outcomes[0])
    assert all(20 < o.retry_after <= 30 for o in outcomes)
    # Not even another path: Binance's limits are per IP.
    with pytest.raises(ExchangeUnavailable) as refused:
        services.exchange.get("/api/v3/klines", symbol="BTCUSDT", interval="1m")
    assert refused.value.status == status and binance.count("/api/v3/klines") == 0


def test_the_backfill_waits_out_a_ban_that_exchange_info_met(binance, services):
    binance.answer(418, retry_after=2)
    with pytest.raises(SubscriptionError):
        services.subscribe("XRPUSDT", "1m")
    banned_until = time.monotonic() + 2
    services.feed.add(["btcusdt@kline_1m"])
    backfill = services.backfill
    backfill.start()
    backfill.request(["btcusdt@kline_1m"])
    wait_until(lambda: backfill.stats()["gaps_failed"] >= 1, 10, message="the backfill refused")
    assert "418" in backfill.stats()["last_error"] and binance.count("/api/v3/klines") == 0
    binance.answer(200)
    wait_until(lambda: binance.count("/api/v3/klines"), 10, message="the backfill after the ban")
    assert binance.hits["/api/v3/klines"][0] >= banned_until - 0.5
    assert services.subscribe("XRPUSDT", "1m")["status"] == "queued"


def test_failures_are_remembered_briefly(binance):
    rest = BinanceRest(binance.url, symbols_retry=1.0)
    binance.answer(503)
    for _ in range(20):
        with pytest.raises(ExchangeUnavailable, match="HTTP 503"):
            rest.symbols()
    assert binance.count("/api/v3/exchangeInfo") == 1
    binance.answer(200)
    wait_until(lambda: _answers(rest), 5, message="asked again after symbols_retry")
    assert binance.count("/api/v3/exchangeInfo") == 2


def _answers(rest: BinanceRest) -> bool:
    try:
        return "BTCUSDT" in rest.symbols()
    except ExchangeUnavailable:
        return False


def test_the_last_symbol_list_is_kept_while_binance_cannot_be_asked(binance):
    rest = BinanceRest(binance.url, symbols_ttl=0.2)
    assert rest.symbols() == {"BTCUSDT", "XRPUSDT"}
    binance.answer(500)
    time.sleep(0.3)         # past the list's time to live
    for _ in range(10):
        assert rest.symbols() == {"BTCUSDT", "XRPUSDT"}
    assert binance.count("/api/v3/exchangeInfo") == 2


def test_weight_near_the_limit_paces_bulk_requests(binance):
    rest = BinanceRest(binance.url)
    rest.get("/api/v3/klines")
    assert rest.pace() == 0.0
    binance.weight = 5000       # of 6000 a minute
    rest.get("/api/v3/klines")
    assert 0 < rest.pace() <= 60
