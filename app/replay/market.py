"""The replayed market: every symbol's tape on the shared clock, and the
clock thread that turns replay steps into frames for the hub."""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path

from app.candles import parse_stream_name
from app.worker import Worker

from .hub import Hub
from .tape import ReplayClock, Tape
from .timeline import encode_event, kline_event, load_recordings

log = logging.getLogger(__name__)

MAX_SLEEP = 0.25     # re-check this often even when no step is due (speed changes, new symbols followed)


class Market:
    def __init__(self, data_dir: str | Path, speed: float, steps: int = 4,
                 start: int | None = None, symbols: list[str] | None = None,
                 wall_clock_events: bool = False):
        # Benchmarks stamp "E" with the wall clock at sending, so a client can
        # measure end-to-end latency; otherwise E is the replayed time.
        self.wall_clock_events = wall_clock_events
        recordings = load_recordings(data_dir)
        if symbols:
            missing = sorted(set(symbols) - set(recordings))
            if missing:
                raise ValueError(f"no recorded klines for {', '.join(missing)} in {data_dir}")
            recordings = {s: recordings[s] for s in symbols}
        if not recordings:
            raise ValueError(f"no <SYMBOL>-1m-<date>.csv files in {data_dir}")
        self.tapes = {s: Tape(s, bars, steps) for s, bars in sorted(recordings.items())}
        starts = {}
        for symbol, tape in self.tapes.items():
            starts[symbol] = max(tape.first, start or 0)
            if starts[symbol] > tape.bars[-1].open_time:
                log.warning("%s: the recording ends before the start time; it will send nothing", symbol)
        self.clock = ReplayClock(starts, speed)

    def now(self, symbol: str) -> int:
        return self.clock.now(symbol)

    def event_time(self, replayed: int) -> int:
        return int(time.time() * 1000) if self.wall_clock_events else replayed

    def server_time(self) -> int:
        """Binance has one clock; ours has one per symbol. The earliest one is
        reported, so that a client never sees as closed a kline that is still
        open on its own symbol's timeline."""
        return min(self.clock.now(s) for s in self.tapes)


class Player(Worker):
    """The clock thread. At each due step of each symbol it builds the frame
    of every followed stream of that symbol once and hands it to the hub."""

    def __init__(self, market: Market, hub: Hub):
        super().__init__("replay-clock")
        self.market = market
        self.hub = hub
        self.cursors = {s: tape.position(market.now(s)) for s, tape in market.tapes.items()}
        self._warned: set[str] = set()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                due = self._emit_due()
            except Exception:
                log.exception("replay step failed")
                due = math.inf
            self._wake.wait(min(MAX_SLEEP, max(0.0, due - time.monotonic())))
            self._wake.clear()

    def _emit_due(self) -> float:
        """Emit every step that is due; returns when the next one is."""
        followed: dict[str, list[tuple[str, str]]] = {}
        for stream in self.hub.followed():
            try:
                symbol, interval = parse_stream_name(stream)
            except ValueError:
                continue        # accepted but not a kline stream: Binance would send it, we have no data
            if interval == "1s":
                if stream not in self._warned:
                    self._warned.add(stream)
                    log.warning("%s: 1s klines cannot be derived from 1m recordings; sending nothing", stream)
                continue
            followed.setdefault(symbol, []).append((stream, interval))
        soonest = math.inf
        for symbol, tape in self.market.tapes.items():
            now = self.market.now(symbol)
            cursor = self.cursors[symbol]
            while not self._stopping.is_set():
                step = tape.next_step(*cursor) if cursor else (0, 1)
                if step is None:
                    break
                at = tape.step_time(*step)
                if at > now:
                    soonest = min(soonest, self.market.clock.wall_at(symbol, at))
                    break
                cursor = step
                for stream, interval in followed.get(symbol, ()):
                    bar, closed = tape.bar(interval, *step)
                    self.hub.publish(stream, *encode_event(stream, kline_event(symbol, interval, bar, closed, self.market.event_time(at))))
            self.cursors[symbol] = cursor
        return soonest
