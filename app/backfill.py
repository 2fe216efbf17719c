"""Gap backfill: Binance does not replay what was sent while we were away,
so after every (re)connect and on every new subscription we compare the
stored closed candles of each stream with the exchange and fetch the
missing closed candles from GET /api/v3/klines.

Backfilled candles go through the normal path (ingest queue -> dispatcher),
marked source="backfill": the writer stores them idempotently (same point
key, so a candle that also arrived live is simply overwritten with the same
values) and clients see them as updates marked backfill. A stream the feed
no longer follows is not fetched, and its fetched candles are not passed on.

Binance's REST limits (429 with Retry-After, 418 bans, the weight budget)
are kept by `BinanceRest`, shared with the subscribe requests: a rate limit
is waited out, a ban makes the stream be tried again once it has passed.
"""
import logging
import queue
import threading
import time
from collections import deque
from typing import Callable

from .candles import INTERVALS, Candle, candle_close_time, next_open_time, parse_stream_name
from .exchange import RATE_LIMIT_WAIT, BinanceRest, ExchangeUnavailable
from .storage.errors import StorageError
from .worker import Worker

log = logging.getLogger(__name__)

PAGE = 1000                 # Binance's maximum klines per request
LOOKBACK_MS = INTERVALS["1d"]   # how far back holes are looked for, at least (see _resume_after)
MAX_PAGES = 1000            # klines requests per backfill run; the rest is left to a retry
GAP_LOG = 200               # gap records kept for /stats
RETRY_INITIAL = 1.0         # seconds before a stream whose backfill failed is tried again,
RETRY_MAX = 60.0            # doubling with each failure up to this


def kline_row_to_candle(symbol: str, interval: str, row: list) -> Candle:
    """One row of /api/v3/klines: [t, o, h, l, c, v, T, q, n, V, Q, ignore]."""
    return Candle(symbol=symbol, interval=interval, open_time=int(row[0]), close_time=int(row[6]),
                  open=float(row[1]), high=float(row[2]), low=float(row[3]), close=float(row[4]),
                  volume=float(row[5]), quote_volume=float(row[7]), trades=int(row[8]),
                  closed=True, event_time=int(row[6]) + 1)


class Backfiller(Worker):
    def __init__(self, rest: BinanceRest, store, ingest: queue.Queue, initial_candles: int,
                 wanted: Callable[[str], bool]):
        super().__init__("backfill")
        self.rest = rest
        self.store = store
        self.ingest = ingest
        self.initial_candles = initial_candles   # history fetched for a stream we never stored
        self.wanted = wanted                     # is the stream still followed (the feed's answer)
        # Held while candles go on the ingest queue. Unsubscribing takes it
        # before the dispatcher is told to forget the stream: candles being
        # put go in before the forget, and none are put once the feed has
        # dropped the stream, so a backfill cannot bring a removed stream back.
        self.emitting = threading.Lock()
        self.gaps: deque[dict] = deque(maxlen=GAP_LOG)
        self.gap_totals: dict[str, dict[str, int]] = {}   # stream -> gaps filled / failed, ever
        self.candles_fetched = 0
        self.requests = 0
        self.last_error = ""
        self._todo: list[str] = []
        self._retry: dict[str, tuple[float, float]] = {}   # failed stream -> (when to retry, delay)
        self._lock = threading.Lock()

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
                    complete = self._fill(stream)
                except (ExchangeUnavailable, StorageError) as exc:
                    # Nothing else would ask again until the next reconnect: the
                    # gap would stay open if Binance or the store was briefly away.
                    self.last_error = str(exc)
                    delay = self._retry_later(stream, exc.retry_after)
                    log.warning("backfill of %s failed, trying again in %.0fs: %s", stream, delay, exc)
                    self._record(stream, None, 0, filled=False, error=str(exc))
                    continue
                except Exception:  # a bug: retrying would only repeat it
                    log.exception("backfill of %s failed", stream)
                    complete = True
                if complete:
                    with self._lock:
                        self._retry.pop(stream, None)
                else:
                    self._retry_later(stream, None)

    def _retry_later(self, stream: str, at_least: float | None) -> float:
        with self._lock:
            _, delay = self._retry.get(stream, (0.0, RETRY_INITIAL / 2))
            delay = min(RETRY_MAX, delay * 2)
            wait = max(delay, at_least or 0.0)     # a ban's Retry-After, however long
            self._retry[stream] = (time.monotonic() + wait, delay)
        return wait

    def _next_retry_in(self) -> float | None:
        with self._lock:
            due = min((when for when, _ in self._retry.values()), default=None)
        return None if due is None else max(0.0, due - time.monotonic())

    def _requeue_due(self) -> None:
        now = time.monotonic()
        with self._lock:
            self._todo.extend(s for s, (when, _) in self._retry.items() if when <= now and s not in self._todo)

    def _fill(self, stream: str) -> bool:
        """Fetch the closed candles missing after the first hole (see
        `_resume_after`), page by page up to the present. Binance always
        returns the candle that is still open as the last row, so a row is
        known closed once a later row exists; the newest row is left to the
        live stream (no server clock needed: the replay exchange has one per
        symbol, and a clock skew must not turn an open candle into a closed
        one). Returns False if it stopped at MAX_PAGES with more to fetch."""
        if not self.wanted(stream):
            return True            # removed while it waited in the queue
        symbol, interval = parse_stream_name(stream)
        last = self._resume_after(symbol, interval)
        if last is None:
            if not self.initial_candles:
                return True
            params = {"limit": min(PAGE, self.initial_candles + 1)}
        else:
            # From the next millisecond rather than the next open time: months
            # differ in length, and Binance answers from the first candle
            # opening at or after startTime.
            params = {"startTime": last + 1, "limit": PAGE}
        newest = None        # open time of the newest row so far: closed only if a later one comes
        got, first = 0, None
        complete = False
        for _ in range(MAX_PAGES):
            rows = self._get("/api/v3/klines", symbol=symbol, interval=interval, **params)
            if self._stopping.is_set() or not rows or (newest is not None and int(rows[-1][0]) <= newest):
                complete = True      # nothing after the newest row: it is the open candle
                break
            missing = self._missing(symbol, interval, rows[:-1])
            if not self._emit(stream, symbol, interval, missing):
                return True
            got += len(missing)
            if missing and first is None:
                first = int(missing[0][0])
            newest = int(rows[-1][0])
            # A short page normally ends at the open candle. Binance may also
            # answer fewer rows than asked for other reasons, so a short page
            # ends the backfill only when its last row is still open by our
            # clock; otherwise the next page decides.
            if last is None or (len(rows) < params["limit"]
                                and candle_close_time(newest, interval) >= time.time() * 1000):
                complete = True
                break
            # The next page starts with the newest row again: asked for now,
            # it carries the values the candle closed with, if it has closed.
            params["startTime"] = newest
        else:
            log.warning("backfill of %s: %d pages fetched and more to come; continuing later",
                        stream, MAX_PAGES)
        self.candles_fetched += got
        if last is not None and got:
            log.info("backfilled %d candles of %s after a gap", got, stream)
            self._record(stream, first, got, filled=True)
        return complete

    def _resume_after(self, symbol: str, interval: str) -> int | None:
        """Open time of the stored closed candle after which the first hole
        begins (the newest one if there is none); None if none is stored.
        Not simply the newest: a backfill that runs late (retries, a queue
        of streams after a restart, a weight pause, a ban) finds the live
        candles from after the gap stored already.

        Holes are looked for over LOOKBACK_MS or the last PAGE candles,
        whichever reaches further back. PAGE candles alone are only 16.7
        minutes of 1s candles, less than a ban or a slow restart can last; a
        day covers those, and for 1m and longer intervals PAGE candles reach
        back at least as far. The store is read a page at a time: a day of
        1s candles is 87 reads, with one page in memory."""
        newest = self.store.last_closed(symbol, interval)
        if newest is None:
            return None
        since = newest - max(LOOKBACK_MS, PAGE * INTERVALS[interval])
        previous = None
        while True:      # ends: `since` grows with every full page, up to `newest`
            page = self.store.history(symbol, interval, start_ms=since, end_ms=newest, limit=PAGE)
            for candle in page:
                if not candle.closed:
                    continue
                if previous is not None and candle.open_time > next_open_time(previous, interval):
                    return previous
                previous = candle.open_time
            if len(page) < PAGE or self._stopping.is_set():
                return newest if previous is None else previous
            since = page[-1].open_time + 1

    def _missing(self, symbol: str, interval: str, rows: list) -> list:
        """The rows whose candle is not stored as closed yet."""
        if not rows:
            return []
        stored = {c.open_time for c in self.store.history(symbol, interval, int(rows[0][0]), int(rows[-1][0]),
                                                          limit=2 * PAGE) if c.closed}
        return [row for row in rows if int(row[0]) not in stored]

    def _emit(self, stream: str, symbol: str, interval: str, rows: list) -> bool:
        """Put the candles on the ingest queue unless the stream has been
        removed meanwhile (then False)."""
        with self.emitting:
            if not self.wanted(stream):
                log.info("backfill of %s dropped: the stream is no longer followed", stream)
                return False
            for row in rows:
                self.ingest.put((kline_row_to_candle(symbol, interval, row), "backfill"))
        return True

    def _get(self, path: str, **params) -> list:
        while True:
            pause = self.rest.pace()
            if pause:
                log.info("Binance request weight near its limit; backfill pausing %.0fs", pause)
                if self._stopping.wait(pause):
                    return []      # stopping: the next start backfills what is left
            self.requests += 1
            try:
                rows = self.rest.get(path, **params)
            except ExchangeUnavailable as exc:
                # A rate limit ends with Binance's minute: waiting beats
                # failing the gap. A ban (418) can last days: raised, and the
                # stream is tried again once it is over.
                if exc.status != 429:
                    raise
                wait = exc.retry_after or RATE_LIMIT_WAIT
                log.warning("Binance rate limit (429): backfill waiting %.0fs", wait)
                if self._stopping.wait(wait):
                    return []
                continue
            if not isinstance(rows, list):
                raise ExchangeUnavailable(f"{path} answered {str(rows)[:200]} instead of a list of klines")
            return rows

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
