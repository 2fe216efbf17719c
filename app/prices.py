"""Latest candle of every stream: what /prices, /health and new WebSocket
clients (their snapshot) read. The dispatcher is its only writer."""
import threading

from .candles import Candle


class PriceBook:
    def __init__(self):
        self._lock = threading.Lock()
        self._latest: dict[tuple[str, str], Candle] = {}

    def update(self, candle: Candle) -> bool:
        """Keep the newest state; returns False for a stale update (an older
        candle, or an older event of the same candle), which is not passed on."""
        with self._lock:
            cur = self._latest.get(candle.key)
            if cur is not None and (candle.open_time, candle.event_time, candle.closed) < (
                    cur.open_time, cur.event_time, cur.closed):
                return False
            self._latest[candle.key] = candle
            return True

    def forget(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._latest.pop(key, None)

    def snapshot(self) -> list[Candle]:
        with self._lock:
            return sorted(self._latest.values(), key=lambda c: c.key)

    def get(self, key: tuple[str, str]) -> Candle | None:
        with self._lock:
            return self._latest.get(key)
