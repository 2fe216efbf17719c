"""The one shape a stored candle has, whatever the backend: measurement
`crypto_price`, tags symbol and interval, one point per candle at its open
time (ms), so every update of a candle overwrites the same point."""
from typing import NamedTuple

from influxdb_client import Point as InfluxPoint, WritePrecision

from ..candles import Candle, candle_close_time

MEASUREMENT = "crypto_price"
CHECK_MEASUREMENT = "crypto_price_check"
FIELDS = ("open", "high", "low", "close", "volume", "quote_volume", "trades", "closed")


class Point(NamedTuple):
    candle: Candle
    source: str = "live"
    received: float = 0.0   # time.time() when submitted: the lag measurements start here

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.candle.symbol, self.candle.interval, self.candle.open_time)


def line_protocol(point: Point, measurement: str = MEASUREMENT) -> str:
    c = point.candle
    return (InfluxPoint(measurement)
            .tag("symbol", c.symbol.upper()).tag("interval", c.interval)
            .field("price", c.close)
            .field("open", c.open).field("high", c.high).field("low", c.low).field("close", c.close)
            .field("volume", c.volume).field("quote_volume", c.quote_volume)
            .field("trades", int(c.trades)).field("closed", bool(c.closed))
            .field("source", point.source)
            .time(c.open_time, WritePrecision.MS)
            .to_line_protocol())


def candle_from_fields(symbol: str, interval: str, open_time: int, values: dict) -> Candle:
    """Rebuild a Candle from stored fields. The exchange's event time is not
    stored: a closed candle gets its close time + 1 ms (as the CSV loader
    does), an open one its open time."""
    close_time = candle_close_time(int(open_time), interval)
    closed = bool(values["closed"])
    return Candle(
        symbol=symbol, interval=interval, open_time=int(open_time), close_time=close_time,
        open=float(values["open"]), high=float(values["high"]), low=float(values["low"]),
        close=float(values["close"]), volume=float(values["volume"]),
        quote_volume=float(values["quote_volume"] or 0.0), trades=int(values["trades"] or 0),
        closed=closed, event_time=close_time + 1 if closed else int(open_time))
