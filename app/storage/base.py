"""What every backend offers, and the `check-db` round trip built on it."""
import time

from ..candles import Candle
from .errors import StorageError
from .schema import CHECK_MEASUREMENT, Point


def check_candle() -> Candle:
    """The well-formed sample `check-db` writes to the check measurement, at
    the current minute."""
    minute = int(time.time() // 60 * 60_000)
    return Candle("CHECKUSDT", "1m", minute, minute + 59_999, 1.0, 2.0, 0.5, 1.5,
                  10.0, 15.0, 3, True, minute + 60_000)


class Store:
    """A candle store. `write` upserts by (symbol, interval, open_time) and
    raises StorageError; reads return Candles in time order."""

    backend = "?"

    def describe(self) -> str:
        raise NotImplementedError

    def write(self, points: list[Point]) -> None:
        raise NotImplementedError

    def history(self, symbol: str, interval: str, start_ms: int | None = None,
                end_ms: int | None = None, limit: int = 500) -> list[Candle]:
        """With a start: the first `limit` candles from start (up to end).
        Without: the most recent `limit` candles up to end (or ever)."""
        raise NotImplementedError

    def last_closed(self, symbol: str, interval: str) -> int | None:
        """Open time of the newest closed candle stored for the stream."""
        raise NotImplementedError

    def symbols(self, interval: str) -> list[str]:
        raise NotImplementedError

    def ping(self) -> str:
        """Connect; returns what the server says it is."""
        raise NotImplementedError

    def probe(self) -> "Store":
        """The same store, writing to the throwaway check measurement/table."""
        raise NotImplementedError

    def drop(self) -> str:
        """Remove this store's measurement/table; returns what was done."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def check(self) -> dict:
        """Connect, write a sample point to the check measurement, read it
        back and remove it. Stops at the first failing step."""
        report = {"backend": self.backend, "target": self.describe(), "ok": False,
                  "steps": [], "diagnosis": None}

        def step(name: str, fn):
            started = time.monotonic()
            try:
                detail = fn()
            except StorageError as exc:
                report["steps"].append({"step": name, "ok": False, "detail": str(exc)})
                report["diagnosis"] = exc.diagnosis
                return False
            ms = (time.monotonic() - started) * 1000
            report["steps"].append({"step": name, "ok": True, "detail": f"{detail} ({ms:.0f} ms)"})
            return True

        probe = self.probe()
        sample = check_candle()
        minute = sample.open_time

        def read_back():
            got = probe.history(sample.symbol, sample.interval, minute, minute, 1)
            if not got or got[0].close != sample.close or got[0].trades != sample.trades:
                raise StorageError("bad_data", f"wrote close=1.5 at {minute} but read back {got[:1]}")
            return f"read it back: close={got[0].close}, trades={got[0].trades}"

        def remove():
            try:
                return probe.drop()
            except StorageError as exc:
                return f"left it in place ({exc.detail}); it is one point in {CHECK_MEASUREMENT}"

        try:
            ok = (step("connect", self.ping)
                  and step("write", lambda: probe.write([Point(sample, "check")])
                           or f"wrote 1 point to {CHECK_MEASUREMENT} (symbol=CHECKUSDT, time={minute})")
                  and step("read", read_back)
                  and step("remove", remove))
        finally:
            probe.close()
        report["ok"] = bool(ok)
        return report
