"""Gap backfill: Binance does not replay what was sent while we were away,
so after every (re)connect and on every new subscription we compare the
last stored closed candle of each stream with the exchange and fetch the
missing closed candles from GET /api/v3/klines.

Backfilled candles go through the normal path (ingest queue -> dispatcher),
marked source="backfill": the writer stores them idempotently (same point
key, so a candle that also arrived live is simply overwritten with the same
values) and clients see them as updates marked backfill.

Binance's REST limits: a weight budget per minute reported in
X-MBX-USED-WEIGHT-1M (we pause near it), 429 with Retry-After (we wait),
418 when banned (we stop until Retry-After has passed), 451 for a blocked
region (reported with the hint to use Binance.US).
"""
import logging
import queue
import threading
import time
from collections import deque

from .candles import INTERVALS, Candle, parse_stream_name
from .exchange import BinanceRest, ExchangeUnavailable
from .storage.errors import StorageError
from .worker import Worker

log = logging.getLogger(__name__)

PAGE = 1000                 # Binance's maximum klines per request
WEIGHT_LIMIT = 6000         # Binance spot's request weight per minute
WEIGHT_PAUSE_AT = 0.8       # pause when this share of the budget is used
GAP_LOG = 200               # gap records kept for /stats
RETRY_INITIAL = 1.0         # seconds before a stream whose backfill failed is tried again,
RETRY_MAX = 60.0            # doubling with each failure up to this


def kline_row_to_candle(symbol: str, interval: str, row: list) -> Candle:
    """One row of /api/v3/klines: [t, o, h, l, c, v, T, q, n, V, Q, ignore]."""
    return Candle(symbol=symbol, interval=interval, open_time=int(row[0]), close_time=int(row[6]),
                  open=float(row[1]), high=float(row[2]), low=float(row[3]), close=float(row[4]),
                  volume=float(row[5]), quote_volume=float(row[7]), trades=int(row[8]),
                  closed=True, event_time=int(row[6]) + 1)


def newest_before_hole(open_times: list[int], interval: str) -> int:
    """The newest of these sorted open times that every older one leads up
    to without a hole: where a backfill starts looking."""
    longest = 31 * INTERVALS["1d"] if interval == "1M" else INTERVALS[interval]  # months vary
    for older, newer in zip(open_times, open_times[1:]):
        if newer - older > longest:
            return older
    return open_times[-1]


class Backfiller(Worker):
    def __init__(self, rest: BinanceRest, store, ingest: queue.Queue, initial_candles: int):
        super().__init__("backfill")
        self.rest = rest
        self.store = store
        self.ingest = ingest
        self.initial_candles = initial_candles   # history fetched for a stream we never stored
        self.gaps: deque[dict] = deque(maxlen=GAP_LOG)
        self.gap_totals: dict[str, dict[str, int]] = {}   # stream -> gaps filled / failed, ever
        self.candles_fetched = 0
        self.requests = 0
        self.last_error = ""
        self._todo: list[str] = []
        self._retry: dict[str, tuple[float, float]] = {}   # failed stream -> (when to retry, delay)
        self._lock = threading.Lock()
        self._banned_until = 0.0

    def request(self, streams) -> None:
        """Check these streams for gaps soon (called from feed threads and REST)."""
        with self._lock:
            self._todo.extend(s for s in streams if s not in self._todo)
        self._wake.set()

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._todo)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self._next_retry_in())
            self._wake.clear()
            self._requeue_due()
            while not self._stopping.is_set():
                with self._lock:
                    if not self._todo:
                        break
                    stream = self._todo.pop(0)
                try:
                    self._fill(stream)
                except (ExchangeUnavailable, StorageError) as exc:
                    # Nothing else would ask again until the next reconnect: the
                    # gap would stay open if Binance or the store was briefly away.
                    self.last_error = str(exc)
                    delay = self._retry_later(stream)
                    log.warning("backfill of %s failed, trying again in %.0fs: %s", stream, delay, exc)
                    self._record(stream, None, 0, filled=False, error=str(exc))
                    continue
                except Exception:  # a bug: retrying would only repeat it
                    log.exception("backfill of %s failed", stream)
                with self._lock:
                    self._retry.pop(stream, None)

    def _retry_later(self, stream: str) -> float:
        with self._lock:
            _, delay = self._retry.get(stream, (0.0, RETRY_INITIAL / 2))
            delay = min(RETRY_MAX, delay * 2)
            self._retry[stream] = (time.monotonic() + delay, delay)
        return delay

    def _next_retry_in(self) -> float | None:
        with self._lock:
            due = min((when for when, _ in self._retry.values()), default=None)
        return None if due is None else max(0.0, due - time.monotonic())

    def _requeue_due(self) -> None:
        now = time.monotonic()
        with self._lock:
            self._todo.extend(s for s, (when, _) in self._retry.items() if when <= now and s not in self._todo)

    def _fill(self, stream: str) -> None:
        """Fetch the closed candles missing after the first hole among the
        recently stored ones. Not simply after the newest stored one: a
        backfill that runs late (a retry, a long queue after a restart) finds
        live candles from after the gap stored already. Binance always
        returns the candle that is still open as the last row, so a row is
        known closed once a later row exists; the newest row is left to the
        live stream (no server clock needed: the replay exchange has one per
        symbol, and a clock skew must not turn an open candle into a closed one)."""
        symbol, interval = parse_stream_name(stream)
        step = INTERVALS[interval]
        stored = sorted(c.open_time for c in self.store.history(symbol, interval, limit=PAGE) if c.closed)
        last = newest_before_hole(stored, interval) if stored else self.store.last_closed(symbol, interval)
        known = set(stored)
        if last is None:
            if not self.initial_candles:
                return
            params = {"limit": min(PAGE, self.initial_candles + 1)}
        else:
            params = {"startTime": last + step, "limit": PAGE}
        held = None          # newest row so far: closed only if a later one comes
        got, first = 0, None
        while not self._stopping.is_set():
            rows = self._get("/api/v3/klines", symbol=symbol, interval=interval, **params)
            closed = ([held] if held is not None and rows else []) + rows[:-1]
            missing = [row for row in closed if int(row[0]) not in known]
            for row in missing:
                self.ingest.put((kline_row_to_candle(symbol, interval, row), "backfill"))
            got += len(missing)
            if missing and first is None:
                first = int(missing[0][0])
            if not rows:
                break
            held = rows[-1]
            if last is None or len(rows) < params["limit"]:
                break
            params["startTime"] = int(held[0]) + step
        self.candles_fetched += got
        if last is not None and got:
            log.info("backfilled %d candles of %s after a gap", got, stream)
            self._record(stream, first, got, filled=True)

    def _get(self, path: str, **params):
        now = time.monotonic()
        if now < self._banned_until:
            raise ExchangeUnavailable(f"waiting out a Binance ban for {self._banned_until - now:.0f}s")
        while True:
            self.requests += 1
            try:
                body, headers = self.rest.get(path, **params)
            except ExchangeUnavailable as exc:
                if exc.status == 429:
                    wait = exc.retry_after or 60
                    log.warning("Binance rate limit (429): waiting %ss", wait)
                    if self._stopping.wait(wait):
                        raise
                    continue
                if exc.status == 418:
                    self._banned_until = time.monotonic() + (exc.retry_after or 3600)
                raise
            used = int(headers.get("X-MBX-USED-WEIGHT-1M") or headers.get("x-mbx-used-weight-1m") or 0)
            if used >= WEIGHT_LIMIT * WEIGHT_PAUSE_AT:
                pause = 60 - time.time() % 60  # the weight window resets each minute
                log.info("Binance request weight %d of %d used; pausing %.0fs", used, WEIGHT_LIMIT, pause)
                self._stopping.wait(pause)
            return body

    def _record(self, stream, first, count, filled, error=""):
        with self._lock:
            self.gaps.append({"stream": stream, "at": int(time.time() * 1000), "from_open_time": first,
                              "candles": count, "filled": filled, "error": error})
            totals = self.gap_totals.setdefault(stream, {"filled": 0, "failed": 0})
            totals["filled" if filled else "failed"] += 1

    def stats(self) -> dict:
        with self._lock:
            totals = {stream: dict(t) for stream, t in self.gap_totals.items()}
            recent = list(self.gaps)[-20:]
        return {"pending": self.pending, "requests": self.requests, "candles_fetched": self.candles_fetched,
                "gaps_filled": sum(t["filled"] for t in totals.values()),
                "gaps_failed": sum(t["failed"] for t in totals.values()),
                "gaps_by_stream": totals, "last_error": self.last_error, "recent_gaps": recent}
