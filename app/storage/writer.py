"""The storage writer: a thread between the dispatcher and the database.

`submit` only touches a dict under a lock, so the dispatcher never waits on
the database. The dict holds the latest state of each candle (a 1m candle
gets ~30 updates; one write carries the last), and is written out by size
or every flush interval. What the database does not take goes to the spool
on disk, which is drained, oldest first, once the database answers again.
While the spool holds anything, new batches go through it too, so an older
state of a candle can never overwrite a newer one in the database.

Stopping has a deadline, because a database that hangs can hold one write
for STORAGE_TIMEOUT (and its connect) while gunicorn waits only so long: if
the writer is still busy when the deadline nears, `stop` itself spools what
the writer holds, and the writer thread, once free, leaves the spool alone."""
import bisect
import itertools
import logging
import threading
import time
from collections import deque
from datetime import datetime, timezone

from ..candles import Candle
from .base import Store, check_candle
from .errors import StorageError
from .schema import Point
from .spool import Spool

log = logging.getLogger(__name__)

LAG_SAMPLES = 10_000
# Upper bounds (seconds) of the write-lag histogram /metrics exposes.
LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
# Of stop's timeout, what is kept for spooling from the stopping thread
# (100k candles, the memory bound, take about a second).
HANDOVER_SECONDS = 2.0


class Writer:
    def __init__(self, store: Store, spool: Spool, batch_size: int = 5000,
                 flush_interval: float = 1.0, memory_max: int = 100_000,
                 retry_initial: float = 1.0, retry_max: float = 60.0):
        self.store = store
        self.spool = spool
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.memory_max = memory_max
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self._pending: dict[tuple, Point] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._retry_at = 0.0
        # Taken from _pending and neither written nor spooled yet: what stop
        # spools if the thread is stuck with it in a database write.
        self._inflight: list[Point] = []
        self._spool_lock = threading.Lock()
        self._handed_over = False
        self._probe_store: Store | None = None
        self._stats_lock = threading.Lock()
        self._lags: deque[float] = deque(maxlen=LAG_SAMPLES)
        # Since start, for a Prometheus histogram: per bucket (the last is
        # +Inf, not cumulative here) and the sum, in seconds.
        self._lag_counts = [0] * (len(LAG_BUCKETS) + 1)
        self._lag_sum = 0.0
        self.points_written = 0
        self.batches_written = 0
        self.failures = 0
        self.consecutive_failures = 0
        self.dropped_open = 0
        self.dropped_closed = 0
        self.rejected = 0
        self.refused_all = 0
        self.last_write: float | None = None
        self.last_error: dict | None = None

    # -- the dispatcher's side ------------------------------------------------
    def submit(self, candle: Candle, source: str = "live") -> None:
        point = Point(candle, source, time.time())
        with self._lock:
            prev = self._pending.pop(point.key, None)
            if prev is not None and prev.candle.closed and not candle.closed:
                point = prev  # a late in-progress update must not undo the final one
            self._pending[point.key] = point  # re-inserted: the dict stays in update order
            size = len(self._pending)
            if size > self.memory_max:
                self._shed()
        if size >= self.batch_size:
            self._wake.set()

    def _shed(self) -> None:
        """Over the memory bound (the writer thread is stuck): drop the
        oldest 1%, in-progress candles first. Called with the lock held."""
        n = max(1, self.memory_max // 100)
        victims = list(itertools.islice((k for k, p in self._pending.items() if not p.candle.closed), n))
        self.dropped_open += len(victims)
        if len(victims) < n:
            closed = list(itertools.islice(self._pending, n - len(victims)))
            self.dropped_closed += len(closed)
            victims += closed
        for key in victims:
            del self._pending[key]

    # -- lifecycle ------------------------------------------------------------
    def start(self) -> None:
        if self.alive:
            return
        backlog = self.spool.open()  # here, so an unusable SPOOL_DIR fails start-up loudly
        if backlog:
            log.info("spool holds %d candles from before the restart; they will be written first", backlog)
        self._stopping.clear()
        self._handed_over = False
        self._thread = threading.Thread(target=self._run, name="storage-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Write (or spool) everything submitted so far, then stop, within
        `timeout` even if the database does not answer."""
        if not self.alive:
            return
        self._stopping.set()
        self._wake.set()
        self._thread.join(max(0.0, timeout - min(HANDOVER_SECONDS, timeout / 2)))
        if self._thread.is_alive():
            self._hand_over()

    def _hand_over(self) -> None:
        """The thread is stuck in a database write: spool what it holds from
        here. Its write may still land later; the spooled copy is then
        written again on the next start, which an upsert makes harmless."""
        if not self._spool_lock.acquire(timeout=HANDOVER_SECONDS):
            log.error("storage writer is stuck in the spool itself; %d candles are lost", len(self._pending))
            return
        try:
            with self._lock:
                points = self._inflight + list(self._pending.values())
                self._inflight, self._pending = [], {}
            self._handed_over = True
            if points:
                self._to_spool(points)
            log.error("the database held the storage writer past its stop deadline: spooled %d candles; "
                      "the spool (%d) is written on the next start", len(points), self.spool.count)
            self.spool.close()
        finally:
            self._spool_lock.release()

    @property
    def alive(self) -> bool:
        return bool(self._thread and self._thread.is_alive())

    # -- the writer thread ------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                wait = self.flush_interval
                if self.spool.count:
                    wait = min(wait, max(0.0, self._retry_at - time.monotonic()))
                self._wake.wait(wait)
                self._wake.clear()
                stopping = self._stopping.is_set()
                try:
                    self._cycle(final=stopping)
                except Exception:  # a bug here must not stop storage for good
                    log.exception("storage writer cycle failed")
                if stopping:
                    return
        finally:
            with self._spool_lock:
                self.spool.close()
            self.store.close()
            if self._probe_store is not None:
                self._probe_store.close()

    def _cycle(self, final: bool) -> None:
        with self._lock:
            batch, self._pending = list(self._pending.values()), {}
            self._inflight = batch
        # At the end a database that is failing gets no more chances: the
        # spool is quick and certain.
        backlog = (self.spool.count > 0 or time.monotonic() < self._retry_at
                   or (final and self.consecutive_failures > 0))
        for i in range(0, len(batch), self.batch_size):
            chunk = batch[i:i + self.batch_size]
            if self._handed_over:  # stop() has spooled what is left
                return
            if backlog or not self._try_write(chunk):
                with self._spool_lock:
                    if self._handed_over:
                        return
                    self._to_spool(chunk)
                backlog = True
            with self._lock:
                self._inflight = batch[i + self.batch_size:]
        if not final and self.spool.count and time.monotonic() >= self._retry_at:
            self._drain()

    def _drain(self) -> None:
        """Write the spool out, oldest first, for about a flush interval at a
        time so new updates keep reaching the spool meanwhile."""
        deadline = time.monotonic() + max(self.flush_interval, 1.0)
        while self.spool.count and time.monotonic() < deadline:
            with self._spool_lock:
                if self._handed_over:
                    return
                entries = self.spool.oldest(self.batch_size)
            if not entries or not self._try_write([p for _, p in entries]):
                return
            with self._spool_lock:
                if self._handed_over:
                    return
                self.spool.remove(entries)
            if not self.spool.count:
                log.info("spool drained")

    def _to_spool(self, points: list[Point]) -> None:
        dropped_open, dropped_closed = self.spool.put(points)
        self.dropped_open += dropped_open
        self.dropped_closed += dropped_closed

    def _try_write(self, points: list[Point]) -> bool:
        try:
            written = self._write(points)
        except StorageError as exc:
            self._failed(exc)
            return False
        now = time.time()
        lags = [now - p.received for p in points]
        with self._stats_lock:
            self._lags.extend(lag * 1000 for lag in lags)
            for lag in lags:
                self._lag_counts[bisect.bisect_left(LAG_BUCKETS, lag)] += 1
            self._lag_sum += sum(lags)
        if self.consecutive_failures:
            log.info("database writes work again after %d failures", self.consecutive_failures)
        self.consecutive_failures = 0
        self.points_written += written
        self.batches_written += 1
        self.last_write = now
        return True

    def _write(self, points: list[Point], probed: bool = False) -> int:
        """Write points; ones the database refuses as bad data are found by
        bisection, dropped and counted, so they cannot block the rest. But
        first a well-formed probe point: a database that refuses that too
        refuses everything (a proxy or wrong endpoint answering 400), which
        is a failure to retry, not 2n-1 requests that drop every candle."""
        try:
            self.store.write(points)
            return len(points)
        except StorageError as exc:
            if exc.kind != "bad_data":
                raise
            if not probed:
                self._probe(exc)
            if len(points) == 1:
                self.rejected += 1
                self._record_error(exc)
                log.error("database refused candle %s, dropping it: %s", points[0].key, exc.diagnosis)
                return 0
        mid = len(points) // 2
        return self._write(points[:mid], True) + self._write(points[mid:], True)

    def _probe(self, refusal: StorageError) -> None:
        """Raises unless the database takes the check point (the one
        `check-db` writes, in its own measurement)."""
        if self._probe_store is None:
            self._probe_store = self.store.probe()
        try:
            self._probe_store.write([Point(check_candle(), "check")])
        except StorageError as exc:
            if exc.kind != "bad_data":
                raise
            self.refused_all += 1
            raise StorageError("refused", refusal.detail, refusal.status, refusal.retry_after) from exc

    def _failed(self, exc: StorageError) -> None:
        self.failures += 1
        self.consecutive_failures += 1
        # A wrong token or database will not fix itself quickly: retry slowly.
        delay = self.retry_max if exc.permanent else min(
            self.retry_max, self.retry_initial * 2 ** (self.consecutive_failures - 1))
        if exc.retry_after is not None:
            delay = max(delay, exc.retry_after)
        self._retry_at = time.monotonic() + delay
        self._record_error(exc)
        level = logging.ERROR if exc.permanent else logging.WARNING
        log.log(level, "database write failed (%d in a row), spooling; retry in %.1fs: %s",
                self.consecutive_failures, delay, exc.diagnosis)

    def _record_error(self, exc: StorageError) -> None:
        self.last_error = {"kind": exc.kind, "permanent": exc.permanent, "status": exc.status,
                           "message": exc.diagnosis, "at": _iso(time.time())}

    # -- statistics -----------------------------------------------------------------
    def lag_histogram(self) -> tuple[list[tuple[str, int]], float]:
        """([(upper bound, cumulative count), ..., ("+Inf", total)], sum of
        seconds): every written candle's lag since start."""
        with self._stats_lock:
            counts, total = list(self._lag_counts), self._lag_sum
        bounds = [repr(b) for b in LAG_BUCKETS] + ["+Inf"]
        return list(zip(bounds, itertools.accumulate(counts))), total

    def stats(self) -> dict:
        with self._lock:
            depth = len(self._pending)
        with self._stats_lock:
            lags = sorted(self._lags)
        now = time.time()
        return {
            "backend": self.store.backend,
            "target": self.store.describe(),
            "running": self.alive,
            "state": "ok" if not self.consecutive_failures else "retrying",
            "queue_depth": depth,
            "spool_points": self.spool.count,
            "spool_bytes": self.spool.size_bytes(),
            "last_write": _iso(self.last_write) if self.last_write else None,
            "last_write_age_seconds": round(now - self.last_write, 1) if self.last_write else None,
            "points_written": self.points_written,
            "batches_written": self.batches_written,
            "failures": self.failures,
            "consecutive_failures": self.consecutive_failures,
            "retry_in_seconds": round(max(0.0, self._retry_at - time.monotonic()), 1),
            "dropped": self.dropped_open + self.dropped_closed,
            "dropped_open": self.dropped_open,
            "dropped_closed": self.dropped_closed,
            "rejected": self.rejected,
            "refused_all": self.refused_all,
            "spool_corrupt": self.spool.corrupt_files,
            "spool_corrupt_moved_to": self.spool.corrupt_path,
            "spool_undecodable": self.spool.undecodable,
            "last_error": self.last_error,
            "lag_ms_p50": _percentile(lags, 50),
            "lag_ms_p99": _percentile(lags, 99),
        }


def _percentile(ordered: list[float], pct: float) -> float | None:
    if not ordered:
        return None
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))], 1)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
