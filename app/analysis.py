"""Candle statistics (the seed's DataAnalyzer): pure functions over candles
in time order, plus the two reads that feed them from a store (one stream
over a window; every stored symbol ranked by return)."""
import math
import re
import statistics
from datetime import datetime, timezone

from .candles import INTERVALS, Candle

YEAR_MS = 365 * 86_400_000  # crypto trades around the clock
MAX_WINDOW = 50_000         # candles per analysis: a month of 1m candles is 43,200
DEFAULT_WINDOW = "24h"
UNITS_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
SMA_PERIOD = EMA_PERIOD = 20
RSI_PERIOD = 14


def log_returns(closes: list[float]) -> list[float]:
    return [math.log(b / a) for a, b in zip(closes, closes[1:]) if a > 0 and b > 0]


def sma(values: list[float], n: int) -> float | None:
    """Mean of the last n values."""
    return sum(values[-n:]) / n if len(values) >= n else None


def ema(values: list[float], n: int) -> float | None:
    """Exponential moving average, seeded with the SMA of the first n."""
    if len(values) < n:
        return None
    alpha = 2 / (n + 1)
    avg = sum(values[:n]) / n
    for v in values[n:]:
        avg += alpha * (v - avg)
    return avg


def rsi(closes: list[float], n: int = RSI_PERIOD) -> float | None:
    """Wilder's RSI: simple averages of the first n gains and losses, then
    Wilder's smoothing (avg = (avg * (n - 1) + x) / n)."""
    if len(closes) <= n:
        return None
    changes = [b - a for a, b in zip(closes, closes[1:])]
    gain = sum(max(c, 0.0) for c in changes[:n]) / n
    loss = sum(max(-c, 0.0) for c in changes[:n]) / n
    for c in changes[n:]:
        gain = (gain * (n - 1) + max(c, 0.0)) / n
        loss = (loss * (n - 1) + max(-c, 0.0)) / n
    if loss == 0:
        return 100.0 if gain > 0 else 50.0
    return 100 - 100 / (1 + gain / loss)


def max_drawdown_pct(closes: list[float]) -> float:
    """Largest fall from a running peak close, as a positive percentage."""
    peak, worst = -math.inf, 0.0
    for c in closes:
        peak = max(peak, c)
        if peak > 0:
            worst = max(worst, (peak - c) / peak * 100)
    return worst


def vwap(candles: list[Candle]) -> float | None:
    """Exact VWAP from Binance's quote volume (sum of price x quantity)."""
    volume = sum(c.volume for c in candles)
    return sum(c.quote_volume for c in candles) / volume if volume > 0 else None


def volatility(closes: list[float], interval: str) -> tuple[float | None, float | None]:
    """(sample stdev of log returns, the same annualised), both in percent."""
    returns = log_returns(closes)
    if len(returns) < 2:
        return None, None
    sd = statistics.stdev(returns)
    return sd * 100, sd * math.sqrt(YEAR_MS / INTERVALS[interval]) * 100


def summarize(candles: list[Candle], interval: str) -> dict:
    """Everything we report about one stream over a window of candles."""
    if not candles:
        return {"count": 0}
    closes = [c.close for c in candles]
    first, last = candles[0], candles[-1]
    vol, vol_annual = volatility(closes, interval)
    return {
        "count": len(candles),
        "first_time": iso(first.open_time),
        "last_time": iso(last.open_time),
        "first_open_time": first.open_time,
        "last_open_time": last.open_time,
        "last_closed": last.closed,
        "first_close": first.close,
        "last_close": last.close,
        "min": min(c.low for c in candles),
        "max": max(c.high for c in candles),
        "mean": sum(closes) / len(closes),
        "return_pct": (last.close / first.close - 1) * 100 if first.close else None,
        "volatility_pct": vol,
        "volatility_annualised_pct": vol_annual,
        "vwap": vwap(candles),
        f"sma_{SMA_PERIOD}": sma(closes, SMA_PERIOD),
        f"ema_{EMA_PERIOD}": ema(closes, EMA_PERIOD),
        f"rsi_{RSI_PERIOD}": rsi(closes, RSI_PERIOD),
        "max_drawdown_pct": max_drawdown_pct(closes),
        "volume": sum(c.volume for c in candles),
        "quote_volume": sum(c.quote_volume for c in candles),
        "trades": sum(c.trades for c in candles),
    }


def rank_movers(summaries: dict[str, dict]) -> list[dict]:
    """Symbols with data, best return first."""
    rows = [{"symbol": s, **v} for s, v in summaries.items() if v.get("return_pct") is not None]
    return sorted(rows, key=lambda r: r["return_pct"], reverse=True)


def parse_window(text: str | int | None, interval: str) -> tuple[int, int | None]:
    """A window is a number of candles ("500") or a duration ("24h", "90m",
    "7d"). Returns (candles to read, duration in ms or None)."""
    text = str(text if text not in (None, "") else DEFAULT_WINDOW).strip()
    if text.isdigit():
        count, duration = int(text), None
    else:
        m = re.fullmatch(r"(\d+)\s*([smhdw])", text)
        if not m:
            raise ValueError(f"invalid window {text!r}: use a number of candles (500) "
                             f"or a duration such as 90m, 24h, 7d")
        duration = int(m.group(1)) * UNITS_MS[m.group(2)]
        count = duration // INTERVALS[interval]
    if not 1 <= count <= MAX_WINDOW:
        raise ValueError(f"window {text!r} is {count} {interval} candles; "
                         f"it must be between 1 and {MAX_WINDOW}")
    return count, duration


def check_budget(window, interval: str, streams: int, max_candles: int | None) -> None:
    """A request reads window x streams candles; more than max_candles is
    refused before anything is read."""
    count, _ = parse_window(window, interval)
    if max_candles is not None and count * streams > max_candles:
        shown = str(window or DEFAULT_WINDOW)
        per = f" for each of {streams} symbols, {count * streams} in all" if streams > 1 else ""
        raise ValueError(f"window {shown!r} is {count} {interval} candles{per}; at most {max_candles} "
                         f"are read per request: use a window of at most {max_candles // streams} candles")


def window_candles(store, symbol: str, interval: str, window) -> list[Candle]:
    """The most recent window of a stream's stored candles. A duration is
    measured back from the newest stored candle, not from now: recorded and
    replayed data can be years old."""
    count, duration = parse_window(window, interval)
    candles = store.history(symbol, interval, None, None, count)
    if duration and candles:
        since = candles[-1].open_time - duration
        candles = [c for c in candles if c.open_time > since]
    return candles


def analyze(store, symbol: str, interval: str, window=None, max_candles: int | None = None) -> dict:
    check_budget(window, interval, 1, max_candles)
    return {"symbol": symbol, "interval": interval, "window": str(window or DEFAULT_WINDOW),
            **summarize(window_candles(store, symbol, interval, window), interval)}


def top_movers(store, interval: str, window=None, max_candles: int | None = None) -> dict:
    symbols = store.symbols(interval)
    # also checks the window: a bad one is an error even with nothing stored
    check_budget(window, interval, max(len(symbols), 1), max_candles)
    summaries = {s: summarize(window_candles(store, s, interval, window), interval) for s in symbols}
    return {"interval": interval, "window": str(window or DEFAULT_WINDOW),
            "movers": rank_movers(summaries)}


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
