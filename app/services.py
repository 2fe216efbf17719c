"""The background services and how they are wired:

    feed threads ----ingest queue--> dispatcher --> price book
    backfill thread --^
                                              --> update log --> client sessions
                                              --> storage writer --> database

`Services` owns them all: it builds them, starts them in the serving process,
and stops them in the reverse order so nothing is lost on the way out.
"""
import gc
import logging
import queue
import threading
import time

from .backfill import Backfiller
from .candles import check_interval, normalize_symbol, stream_name, parse_stream_name
from .clients import ClientHub
from .dispatch import Dispatcher
from .exchange import BinanceRest, ExchangeUnavailable
from .feed import BinanceFeed, StreamLimitError
from .gcpauses import GcPauses
from .prices import PriceBook
from .storage import open_storage
from .subscriptions import SubscriptionFile, path_for
from .updates import UpdateLog

log = logging.getLogger(__name__)

INGEST_CAPACITY = 100_000
SUBSCRIBE_WAIT = 5.0
# gunicorn SIGKILLs a worker still stopping after graceful_timeout (20 s).
STOP_BUDGET = 15.0
WRITER_STOP_SHARE = 5.0


class SubscriptionError(Exception):
    """A refused subscription change. `reason` says why, for the caller to
    map (the web layer to HTTP statuses): invalid, unknown_symbol, limit,
    upstream_refused, upstream_unavailable."""
    def __init__(self, reason: str, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.reason = reason
        self.retry_after = retry_after    # seconds until asking upstream again makes sense


class Services:
    def __init__(self, config):
        self.config = config
        self.started_at: float | None = None
        # Bounded so a stalled dispatcher pushes back on the feed (TCP then
        # buffers upstream) instead of growing memory without limit.
        self.ingest: queue.Queue = queue.Queue(maxsize=INGEST_CAPACITY)
        self.prices = PriceBook()
        self.updates = UpdateLog(config["WS_BACKLOG"])
        self.hub = ClientHub(self.updates, self.prices, config)
        self.storage = open_storage(config)
        self.dispatcher = Dispatcher(self.ingest, self.prices, self.updates, self.hub,
                                     [self.storage.writer], config["WS_TICK_MS"] / 1000)
        self.feed = BinanceFeed(config, self.ingest)
        self.exchange = BinanceRest(config["BINANCE_REST_URL"])
        self.backfill = Backfiller(self.exchange, self.storage.store, self.ingest,
                                   config["BACKFILL_INITIAL_CANDLES"], self.feed.wants)
        self.feed.on_subscribed = self.backfill.request
        interval = check_interval(config["BINANCE_INTERVAL"])
        self.saved = SubscriptionFile(path_for(config), [stream_name(normalize_symbol(s), interval)
                                                         for s in config["BINANCE_SYMBOLS"]])
        self.feed.add(self.saved.streams_at_start(config["MAX_STREAMS"]))
        self.refusals: dict[str, int] = {}
        self._refusals_lock = threading.Lock()
        self.gc_pauses = GcPauses()

    def count_refusal(self, reason: str) -> None:
        """Refused requests by reason (api_key, origin), for /stats."""
        with self._refusals_lock:
            self.refusals[reason] = self.refusals.get(reason, 0) + 1

    def _refusal_counts(self) -> dict:
        with self._refusals_lock:
            return dict(self.refusals)

    def start(self) -> None:
        self.started_at = time.time()
        # What exists now (modules, the app, the services) lives as long as
        # the process. Out of the collector's sight, it no longer lengthens
        # every full collection: ~60 ms of each one on this machine. Before
        # the threads start, so this one collection pauses nobody.
        gc.collect()
        gc.freeze()
        self.gc_pauses.install()
        self.storage.writer.start()
        self.hub.start()
        self.dispatcher.start()
        self.backfill.start()
        self.feed.start()
        log.info("services started: %d streams from %s", len(self.feed.streams()), self.feed.ws_base)

    def stop(self) -> None:
        """Clients first (1001), then the feed, then drain what is queued
        through the dispatcher into the writer, and flush the writer last,
        all within STOP_BUDGET: the writer keeps WRITER_STOP_SHARE of it."""
        log.info("stopping services")
        deadline = time.monotonic() + STOP_BUDGET

        def share(most: float = 5.0) -> float:
            return max(0.1, min(most, deadline - WRITER_STOP_SHARE - time.monotonic()))
        self.hub.close_all(share())
        self.feed.stop(share())
        self.backfill.stop(share())
        self.dispatcher.stop(share())
        self.hub.stop(share())
        self.storage.writer.stop(max(WRITER_STOP_SHARE / 2, deadline - time.monotonic()))
        self.gc_pauses.remove()
        gc.unfreeze()
        log.info("services stopped")

    # -- subscriptions ------------------------------------------------------
    def _validate(self, symbol: str, interval: str) -> str:
        try:
            symbol = normalize_symbol(symbol)
            check_interval(interval)
        except ValueError as exc:
            raise SubscriptionError("invalid", str(exc)) from None
        return symbol

    def subscribe(self, symbol: str, interval: str) -> dict:
        symbol = self._validate(symbol, interval)
        stream = stream_name(symbol, interval)
        if stream not in self.feed.streams():
            try:
                known = self.exchange.symbols()
            except ExchangeUnavailable as exc:
                raise SubscriptionError("upstream_unavailable", f"cannot check the symbol with Binance: {exc}",
                                        exc.retry_after) from None
            if symbol not in known:
                raise SubscriptionError("unknown_symbol",
                                        f"unknown symbol {symbol}: Binance does not list it as trading")
            try:
                self.feed.add([stream])
            except StreamLimitError as exc:
                raise SubscriptionError("limit", str(exc)) from None
        state = self.feed.wait_settled([stream], True, SUBSCRIBE_WAIT)[stream]
        # A refused stream has left the feed's set: saving drops it too.
        remembered = self.saved.save(self.feed.streams)
        if state not in ("active", "pending", "queued"):
            raise SubscriptionError("upstream_refused", state)
        return {"symbol": symbol, "interval": interval, "stream": stream, "status": state, "remembered": remembered}

    def unsubscribe(self, symbol: str, interval: str) -> dict:
        symbol = self._validate(symbol, interval)
        stream = stream_name(symbol, interval)
        self.feed.remove([stream])
        remembered = self.saved.save(self.feed.streams)
        state = self.feed.wait_settled([stream], False, SUBSCRIBE_WAIT)[stream]
        # After a backfill putting candles of the stream, before any it might put later.
        with self.backfill.emitting:
            self.dispatcher.forget((symbol, interval))
        return {"symbol": symbol, "interval": interval, "stream": stream, "status": state, "remembered": remembered}

    def subscriptions(self) -> list[dict]:
        out = []
        for s in self.feed.streams():
            symbol, interval = parse_stream_name(s)
            out.append({"symbol": symbol, "interval": interval, "stream": s})
        return out

    # -- health and statistics ---------------------------------------------
    def uptime(self) -> float:
        return round(time.time() - self.started_at, 1) if self.started_at else 0.0

    def health(self) -> dict:
        feed_ok = self.feed.connected
        streams = self.feed.streams()
        age = self.feed.seconds_since_last_message()
        threads_ok = self.dispatcher.alive and self.hub.alive
        # With no streams there is no connection to have: the server works
        # and has nothing to follow, which is worth a look, not a restart.
        if not threads_ok or (streams and self.started_at and not feed_ok and self.uptime() > 30):
            status = "unhealthy"
        elif not feed_ok or (age is not None and age > self.config["FEED_SILENCE_TIMEOUT"] / 2):
            status = "degraded"
        else:
            status = "healthy"
        return {
            "status": status,
            "crypto_provider": "binance",
            "feed_connected": feed_ok,
            "seconds_since_last_message": age,
            "dispatcher_running": threads_ok,
            "active_websocket_connections": self.hub.clients,
            "subscribed_symbols": sorted({s["symbol"] for s in self.subscriptions()}),
            "subscribed_streams": streams,
            "storage": self.storage.writer.stats(),
            "uptime_seconds": self.uptime(),
        }

    def stats(self) -> dict:
        return {
            "uptime_seconds": self.uptime(),
            "messages_in": self.dispatcher.received.total,
            "messages_in_per_second": round(self.dispatcher.received.rate(), 1),
            "stale_updates": self.dispatcher.stale,
            "ingest_queue": self.ingest.qsize(),
            "feed": self.feed.stats(),
            "clients": self.hub.stats(),
            "refusals": self._refusal_counts(),
            "storage": self.storage.writer.stats(),
            "backfill": self.backfill.stats(),
            "gc": self.gc_pauses.stats(),
        }
