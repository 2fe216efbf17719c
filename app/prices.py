"""Latest candle of every stream and its per-stream sequence number: what
/prices, /health and new WebSocket clients (their snapshot) read. The
dispatcher is its only writer."""
import threading

from .candles import Candle


class PriceBook:
    def __init__(self):
        self._lock = threading.Lock()
        self._latest: dict[tuple[str, str], Candle] = {}
        # Kept when a stream is forgotten, so a resubscribed stream never
        # reuses a number a resuming client may hold.
        self._seq: dict[tuple[str, str], int] = {}
        # Bumped by every change: snapshots encoded at one version are
        # reused until the next (app/clients/snapshots.py).
        self.version = 0

    def update(self, candle: Candle, backfill: bool = False) -> int | None:
        """Keep the newest state and return the update's sequence number.
        A stale live update (an older candle, or an older event of the same
        candle, e.g. after a reconnect) returns None and is not passed on;
        a backfilled candle is always passed on but never replaces a newer
        latest state."""
        with self._lock:
            cur = self._latest.get(candle.key)
            older = cur is not None and (candle.open_time, candle.event_time, candle.closed) < (
                cur.open_time, cur.event_time, cur.closed)
            if older and not backfill:
                return None
            if not older:
                self._latest[candle.key] = candle
            seq = self._seq[candle.key] = self._seq.get(candle.key, 0) + 1
            self.version += 1
            return seq

    def forget(self, key: tuple[str, str]) -> None:
        with self._lock:
            if self._latest.pop(key, None) is not None:
                self.version += 1

    def snapshot(self) -> list[tuple[Candle, int]]:
        with self._lock:
            return sorted(((c, self._seq[k]) for k, c in self._latest.items()), key=lambda cs: cs[0].key)
