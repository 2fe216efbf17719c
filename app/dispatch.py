"""The dispatcher thread: the one consumer of the ingest queue, whose items
are (candle, source) with source "live" or "backfill".

For every candle update it updates the price
book, serialises the client message once into the shared update log, and
hands the candle to the storage writer. Clients are woken at most once per
tick, so under load each wake-up carries many updates.
"""
import logging
import queue
import threading
import time

from .candles import Candle, dumps
from .clients import ClientHub
from .prices import PriceBook
from .rates import RateCounter
from .updates import UpdateLog

log = logging.getLogger(__name__)

_STOP = object()
_FORGET = "forget"


class Dispatcher:
    def __init__(self, ingest: queue.Queue, prices: PriceBook, updates: UpdateLog,
                 hub: ClientHub, sinks: list, tick_seconds: float):
        self.ingest = ingest
        self.prices = prices
        self.updates = updates
        self.hub = hub
        self.sinks = sinks          # objects with submit(candle): the storage writer
        self.tick = tick_seconds
        self.received = RateCounter()
        self.stale = 0
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="dispatcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Process everything already queued, then stop."""
        if self._thread and self._thread.is_alive():
            deadline = time.monotonic() + timeout
            try:  # a full queue behind a stuck dispatcher must not hold up the shutdown
                self.ingest.put(_STOP, timeout=timeout)
            except queue.Full:
                log.error("dispatcher did not take the stop within %.1fs", timeout)
                return
            self._thread.join(max(0.0, deadline - time.monotonic()))

    def forget(self, key: tuple[str, str]) -> None:
        """Drop a stream from the price book once the updates already queued
        for it have gone through (forgetting it directly would let them
        bring it back)."""
        self.ingest.put((key, _FORGET))

    @property
    def alive(self) -> bool:
        return bool(self._thread and self._thread.is_alive())

    def _run(self) -> None:
        last_wake = 0.0
        pending_wake = False
        while True:
            timeout = max(0.0, last_wake + self.tick - time.monotonic()) if pending_wake else None
            try:
                item = self.ingest.get(timeout=timeout)
            except queue.Empty:
                item = None
            batch = []
            stop = False
            while item is not None:
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)
                if len(batch) >= 1000:
                    break
                try:
                    item = self.ingest.get_nowait()
                except queue.Empty:
                    item = None
            if batch:
                try:
                    self._dispatch(batch)
                except Exception:  # a bug here must not silence the whole server
                    log.exception("dispatch failed for a batch of %d updates", len(batch))
                pending_wake = True
            now = time.monotonic()
            if pending_wake and (stop or now - last_wake >= self.tick):
                self.hub.wake()
                last_wake, pending_wake = now, False
            if stop:
                return

    def _dispatch(self, batch: list[tuple[Candle, str]]) -> None:
        self.received.add(len(batch))
        out = []
        for candle, source in batch:
            if source == _FORGET:
                self.prices.forget(candle)
                continue
            seq = self.prices.update(candle, backfill=source == "backfill")
            if seq is None:
                # Not stored either: the writer may have written the newer
                # state already, and this one would overwrite it.
                self.stale += 1
                continue
            for sink in self.sinks:
                sink.submit(candle, source)
            data = candle.to_dict()
            data["seq"] = seq
            data["source"] = source
            out.append((candle.key, seq, dumps({"type": "price_update", "data": data}).encode()))
        if out:
            self.updates.append(out)
