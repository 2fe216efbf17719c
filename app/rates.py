"""Counters with a recent per-second rate, for /stats and the dashboard."""
import threading
import time
from collections import deque


class RateCounter:
    """A monotonically increasing count, safe to add to from many threads,
    with the rate over roughly the last `window` seconds."""

    def __init__(self, window: float = 10.0):
        self.total = 0
        self._lock = threading.Lock()
        self._window = window
        # Counting starts now, so the very first read already has a base.
        self._samples: deque[tuple[float, int]] = deque([(time.monotonic(), 0)])

    def add(self, n: int = 1) -> None:
        with self._lock:
            self.total += n

    def rate(self) -> float:
        now = time.monotonic()
        with self._lock:
            self._samples.append((now, self.total))
            while len(self._samples) > 2 and now - self._samples[1][0] >= self._window:
                self._samples.popleft()
            t0, n0 = self._samples[0]
            return (self.total - n0) / (now - t0) if now - t0 >= 0.5 else 0.0
