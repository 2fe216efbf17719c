"""Snapshot messages: the latest candle of every stream a client wants.

With thousands of streams a snapshot is megabytes of JSON, wanted by every
new client and by every client that fell off the update log at once. Each
stream is encoded once per change of the price book and shared; a client's
snapshot is then only a join of the pieces it wants."""
import threading

from ..candles import dumps
from ..prices import PriceBook
from ..updates import text_frame


class Snapshots:
    def __init__(self, prices: PriceBook, epoch: str):
        self.prices = prices
        self.epoch = epoch
        self._lock = threading.Lock()
        self._version = -1
        self._pieces: list[tuple[tuple[str, str], bytes]] = []

    def pieces(self) -> list[tuple[tuple[str, str], bytes]]:
        """(stream, its JSON) for every stream, as of now or later: the
        version is read first, so a cached list is never older than the
        caller's view of the update log."""
        version = self.prices.version
        with self._lock:
            if version != self._version:
                self._pieces = [(c.key, dumps({**c.to_dict(), "seq": seq}).encode())
                                for c, seq in self.prices.snapshot()]
                self._version = version
            return self._pieces

    def frame(self, reason: str, wanted, pieces=None) -> bytes:
        """A snapshot frame of the streams `wanted(key)` accepts."""
        data = b",".join(p for key, p in (pieces if pieces is not None else self.pieces()) if wanted(key))
        head = dumps({"type": "snapshot", "reason": reason, "epoch": self.epoch}).encode()[:-1]
        return text_frame(head + b',"data":[' + data + b"]}")
