"""The candle: one Binance kline, as every other module sees it.

Binance sends prices and volumes as decimal strings; we keep them as floats
because every consumer (JSON clients, InfluxDB fields, analysis) wants
numbers, and float(str) round-trips the 8-decimal values Binance uses.
"""
from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

# Binance's kline intervals and their lengths in ms ("1M" is a calendar
# month; its nominal length is only used for ordering and sanity checks:
# step from one candle to the next with `next_open_time`).
INTERVALS: dict[str, int] = {
    "1s": 1_000,
    "1m": 60_000,
    "3m": 180_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "2h": 7_200_000,
    "4h": 14_400_000,
    "6h": 21_600_000,
    "8h": 28_800_000,
    "12h": 43_200_000,
    "1d": 86_400_000,
    "3d": 259_200_000,
    "1w": 604_800_000,
    "1M": 2_592_000_000,
}

# Binance symbols are upper-case letters and digits; 20 is generous.
SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,20}$")


class InvalidCandle(ValueError):
    """An upstream frame that claims to be a kline but is not a valid one."""


def normalize_symbol(symbol: str) -> str:
    """Upper-case and validate a symbol; raises ValueError with a message."""
    s = (symbol or "").strip().upper()
    if not SYMBOL_RE.match(s):
        raise ValueError(
            f"invalid symbol {symbol!r}: expected 2-20 letters or digits, e.g. BTCUSDT")
    return s


def check_interval(interval: str) -> str:
    if interval not in INTERVALS:
        raise ValueError(
            f"invalid interval {interval!r}: expected one of {' '.join(INTERVALS)}")
    return interval


def next_open_time(open_time: int, interval: str) -> int:
    """Open time of the candle after the one opening at `open_time`. Every
    interval is a fixed length except "1M": Binance's months are UTC
    calendar months, so 30 days after 1 February is 2 March, not 1 March."""
    if interval != "1M":
        return open_time + INTERVALS[interval]
    d = datetime.fromtimestamp(open_time / 1000, timezone.utc)
    year, month = divmod(d.year * 12 + d.month, 12)      # the month after d's, as (year, 0-based month)
    return int(datetime(year, month + 1, 1, tzinfo=timezone.utc).timestamp() * 1000)


def candle_close_time(open_time: int, interval: str) -> int:
    """Binance's close time: the last millisecond before the next candle."""
    return next_open_time(open_time, interval) - 1


def stream_name(symbol: str, interval: str) -> str:
    """Binance's stream name, e.g. btcusdt@kline_1m."""
    return f"{symbol.lower()}@kline_{interval}"


def parse_stream_name(name: str) -> tuple[str, str]:
    """Inverse of stream_name; raises ValueError."""
    sym, sep, rest = name.partition("@kline_")
    if not sep:
        raise ValueError(f"not a kline stream: {name!r}")
    return normalize_symbol(sym), check_interval(rest)


@dataclass(slots=True, frozen=True)
class Candle:
    symbol: str
    interval: str
    open_time: int       # ms, the candle's identity together with symbol+interval
    close_time: int      # ms, candle_close_time(open_time, interval)
    open: float
    high: float
    low: float
    close: float
    volume: float
    quote_volume: float
    trades: int
    closed: bool         # Binance's "x": the final update of this candle
    event_time: int      # ms, when the exchange sent this update

    @property
    def key(self) -> tuple[str, str]:
        return (self.symbol, self.interval)

    @property
    def price_change(self) -> float:
        """Change since the candle opened (Binance's own kline convention)."""
        return self.close - self.open

    @property
    def price_change_percent(self) -> float:
        return (self.close - self.open) / self.open * 100.0 if self.open else 0.0

    def to_dict(self) -> dict:
        """The public JSON shape (WebSocket updates, /prices, /history)."""
        return {
            "symbol": self.symbol,
            "interval": self.interval,
            "open_time": self.open_time,
            "close_time": self.close_time,
            "open": self.open,
            "high": self.high,
            "low": self.low,
            "close": self.close,
            "volume": self.volume,
            "quote_volume": self.quote_volume,
            "price": self.close,
            "price_change": round(self.price_change, 10),
            "price_change_percent": round(self.price_change_percent, 6),
            "trades": self.trades,
            "closed": self.closed,
            "event_time": self.event_time,
        }


def candle_from_kline_event(event: dict) -> Candle:
    """Build a Candle from Binance's kline event (the "data" of a combined
    stream message): {"e":"kline","E":..,"s":..,"k":{t,T,s,i,o,c,h,l,v,n,x,q,..}}."""
    try:
        k = event["k"]
        interval = k["i"]
        if interval not in INTERVALS:
            raise InvalidCandle(f"unknown interval {interval!r}")
        c = Candle(
            symbol=str(k["s"]).upper(),
            interval=interval,
            open_time=int(k["t"]),
            close_time=int(k["T"]),
            open=float(k["o"]),
            high=float(k["h"]),
            low=float(k["l"]),
            close=float(k["c"]),
            volume=float(k["v"]),
            quote_volume=float(k.get("q", 0.0)),
            trades=int(k.get("n", 0)),
            closed=bool(k["x"]),
            event_time=int(event.get("E", 0)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidCandle(f"malformed kline: {exc!r}") from exc
    if not (c.low <= min(c.open, c.close) and max(c.open, c.close) <= c.high):
        raise InvalidCandle(f"inconsistent OHLC for {c.symbol} {c.open_time}")
    return c


def to_ms(ts: int) -> int:
    """Binance Vision files from 2025 on use microseconds; accept both."""
    return ts // 1000 if ts > 10**14 else ts


def candles_from_csv(path: str | Path, symbol: str | None = None) -> Iterator[Candle]:
    """Read a Binance Vision 1m kline CSV (no header, 12 columns). The symbol
    defaults to the file-name prefix (BTCUSDT-1m-2020-01-01.csv)."""
    path = Path(path)
    symbol = symbol or path.name.split("-")[0].upper()
    interval = path.name.split("-")[1] if path.name.count("-") >= 2 else "1m"
    with path.open(newline="") as f:
        for row in csv.reader(f):
            if not row or not row[0].strip().isdigit():
                continue  # tolerate a header row
            open_time = to_ms(int(row[0]))
            yield Candle(
                symbol=symbol,
                interval=interval,
                open_time=open_time,
                close_time=to_ms(int(row[6])),
                open=float(row[1]),
                high=float(row[2]),
                low=float(row[3]),
                close=float(row[4]),
                volume=float(row[5]),
                quote_volume=float(row[7]),
                trades=int(row[8]),
                closed=True,
                event_time=to_ms(int(row[6])) + 1,
            )


def dumps(obj) -> str:
    """Compact JSON, the one encoding used for everything we send."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False)
