"""Each symbol's recording laid out on its own replay timeline, and the one
clock that says how far every timeline has played.

A recorded 1m bar is replayed as `steps` updates followed by its final
(`"x": true`) update. Step s (1..steps) of the bar opening at t is sent at
replay time t + s * 60000 / (steps + 1); the final one at t + 60000, when
the minute is over. Step 0 (before the first update) is the bar's state a
REST client sees right after it opened.
"""
from __future__ import annotations

import threading
import time
from bisect import bisect_left, bisect_right

from .timeline import MINUTE, Bar, merge, minute_update, window


class Tape:
    def __init__(self, symbol: str, bars: list[Bar], steps: int):
        if not bars:
            raise ValueError(f"{symbol}: no recorded klines")
        self.symbol = symbol
        self.bars = bars
        self.steps = steps
        self.open_times = [b.open_time for b in bars]
        # interval -> (window open, bars folded, their merge): the clock asks
        # for the same window every step, so it is folded incrementally.
        self._folded: dict[str, tuple[int, int, Bar | None]] = {}

    @property
    def first(self) -> int:
        return self.bars[0].open_time

    @property
    def final_step(self) -> int:
        return self.steps + 1

    def step_time(self, index: int, step: int) -> int:
        return self.bars[index].open_time + step * MINUTE // self.final_step

    def position(self, now: int) -> tuple[int, int] | None:
        """(bar index, step) that the replay has reached at `now`, or None
        before the recording starts."""
        index = bisect_right(self.open_times, now) - 1
        if index < 0:
            return None
        step = self.final_step
        while step and self.step_time(index, step) > now:
            step -= 1
        return index, step

    def next_step(self, index: int, step: int) -> tuple[int, int] | None:
        if step < self.final_step:
            return index, step + 1
        if index + 1 < len(self.bars):
            return index + 1, 1
        return None  # the recording is over: the symbol goes quiet

    def bar(self, interval: str, index: int, step: int) -> tuple[Bar, bool]:
        """The `interval` kline containing bar `index` at `step`, and whether
        this update is its final one."""
        minute = minute_update(self.bars[index], min(step, self.steps), self.steps)
        minute_closed = step == self.final_step
        if interval == "1m":
            return minute, minute_closed
        opens, closes = window(minute.open_time, interval)
        done = self._fold(interval, opens, index)
        merged = merge([done, minute] if done else [minute], opens, closes)
        return merged, minute_closed and minute.close_time == closes

    def _fold(self, interval: str, opens: int, index: int) -> Bar | None:
        """The merge of the bars of this window before bar `index`."""
        cached = self._folded.get(interval)
        if cached and cached[0] == opens and cached[1] <= index:
            _, upto, done = cached
        else:
            upto, done = bisect_left(self.open_times, opens), None
        if upto < index:
            closes = window(opens, interval)[1]
            done = merge(([done] if done else []) + self.bars[upto:index], opens, closes)
        self._folded[interval] = (opens, index, done)
        return done

    def klines(self, interval: str, now: int, start: int | None = None,
               end: int | None = None, limit: int = 500) -> list[Bar]:
        """GET /api/v3/klines over what has been replayed by `now`: closed
        klines, then the open one in its current state, like Binance."""
        position = self.position(now)
        if position is None:
            return []
        index, step = position
        lo = bisect_left(self.open_times, start) if start is not None else 0
        hi = min(index, bisect_right(self.open_times, end) - 1) if end is not None else index
        groups: list[tuple[int, int, int, int]] = []   # (opens, closes, first, last) bar indexes
        for i in range(lo, hi + 1):
            opens, closes = window(self.open_times[i], interval)
            if groups and groups[-1][0] == opens:
                groups[-1] = (opens, closes, groups[-1][2], i)
            elif start is None or opens >= start:
                groups.append((opens, closes, i, i))
        groups = groups[:limit] if start is not None else groups[-limit:]
        out = []
        for opens, closes, first, last in groups:
            bars = self.bars[first:last + 1]
            if last == index:
                bars[-1] = minute_update(bars[-1], min(step, self.steps), self.steps)
            out.append(bars[0] if interval == "1m" else merge(bars, opens, closes))
        return out


class ReplayClock:
    """One clock for the whole server, so every connection sees the same
    replay: replay elapsed = wall elapsed x speed, and each symbol's time is
    its own start + replay elapsed."""

    def __init__(self, starts: dict[str, int], speed: float):
        self.starts = starts
        self._lock = threading.Lock()
        self._speed = speed
        self._base_elapsed = 0.0           # replay ms at _base_wall
        self._base_wall = time.monotonic()

    @property
    def speed(self) -> float:
        return self._speed

    def elapsed(self, wall: float | None = None) -> float:
        with self._lock:
            wall = time.monotonic() if wall is None else wall
            return self._base_elapsed + (wall - self._base_wall) * 1000.0 * self._speed

    def now(self, symbol: str) -> int:
        return self.starts[symbol] + int(self.elapsed())

    def wall_at(self, symbol: str, replay_ms: int) -> float:
        """The monotonic time at which `symbol`'s clock reaches `replay_ms`."""
        with self._lock:
            return self._base_wall + (replay_ms - self.starts[symbol] - self._base_elapsed) / 1000.0 / self._speed

    def set_speed(self, speed: float) -> None:
        """Change speed without a jump: the replay continues from where it is."""
        if speed <= 0:
            raise ValueError("speed must be positive")
        wall = time.monotonic()
        elapsed = self.elapsed(wall)
        with self._lock:
            self._base_elapsed, self._base_wall, self._speed = elapsed, wall, speed
