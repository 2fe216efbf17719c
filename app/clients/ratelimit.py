"""The pace of one client's messages."""
import time


class TokenBucket:
    """`rate` tokens a second, bursts of up to `rate`. Used by one thread."""

    def __init__(self, rate: float):
        self.rate = rate
        self._tokens = rate
        self._at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self.rate, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True
