"""Recorded 1m klines and the kline updates the replay exchange derives from
them. Pure functions over immutable values, so they can be tested without a
server.

Why not `app.candles.candles_from_csv`: the replay must reproduce Binance's
payload byte for byte, which needs the taker-buy columns the Candle model
drops and exact decimal arithmetic for the sums of higher intervals (float
sums of 1440 quote volumes drift in the 8th decimal). So the replay keeps
its own Decimal bar and reuses only the timestamp rule (`to_ms`).

How one recorded 1m candle becomes several updates (`minute_update`): the
price walks the candle's path O->L->H->C when it closed up (close >= open),
else O->H->L->C. Update j of U shows the vertex reached after j/U of the
walk, with high/low/close over the part walked so far, so every price sent
was really traded in that minute. Volumes, quote volumes, taker volumes and
trade counts are the fraction j/U of the recorded totals: they are
interpolated, not recorded. Update U carries exactly the recorded values and
the final `"x": true` update repeats them, as Binance's final frame does.

Trade ids (`f`, `L`) are not in Binance Vision files; they are counted from
the start of each symbol's recording (first trade = 1), so they are
consistent with the trade counts but are not Binance's ids.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from decimal import ROUND_DOWN, Decimal
from pathlib import Path

from app.candles import INTERVALS, candle_close_time, dumps, to_ms

MINUTE = INTERVALS["1m"]
EIGHT_PLACES = Decimal("0.00000001")
ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Bar:
    """One kline's values, as Binance reports them (all ms, Decimals)."""
    open_time: int
    close_time: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    quote_volume: Decimal
    trades: int
    taker_base: Decimal
    taker_quote: Decimal
    first_trade: int     # -1 when the bar has no trades, as Binance sends
    last_trade: int


def read_csv(path: str | Path, first_trade: int = 1) -> list[Bar]:
    """One Binance Vision 1m kline file (12 columns, no header; a header row
    is tolerated). Trade ids continue from `first_trade`."""
    bars = []
    with Path(path).open(newline="") as f:
        for row in csv.reader(f):
            if not row or not row[0].strip().isdigit():
                continue
            trades = int(row[8])
            bars.append(Bar(
                open_time=to_ms(int(row[0])), close_time=to_ms(int(row[6])),
                open=Decimal(row[1]), high=Decimal(row[2]), low=Decimal(row[3]), close=Decimal(row[4]),
                volume=Decimal(row[5]), quote_volume=Decimal(row[7]), trades=trades,
                taker_base=Decimal(row[9]), taker_quote=Decimal(row[10]),
                first_trade=first_trade if trades else -1,
                last_trade=first_trade + trades - 1 if trades else -1))
            first_trade += trades
    return bars


def load_recordings(directory: str | Path) -> dict[str, list[Bar]]:
    """Every `<SYMBOL>-1m-<date>.csv` in a directory, joined per symbol in
    time order (several days of one symbol make one continuous recording)."""
    files: dict[str, list[Path]] = {}
    for path in sorted(Path(directory).glob("*-1m-*.csv")):
        files.setdefault(path.name.split("-")[0].upper(), []).append(path)
    recordings = {}
    for symbol, paths in files.items():
        bars: dict[int, Bar] = {}
        next_trade = 1
        for path in sorted(paths):
            for bar in read_csv(path, next_trade):
                bars.setdefault(bar.open_time, bar)
                next_trade = max(next_trade, bar.last_trade + 1)
        recordings[symbol] = [bars[t] for t in sorted(bars)]
    return recordings


def minute_update(bar: Bar, step: int, steps: int) -> Bar:
    """The state of a recorded 1m bar after `step` of `steps` updates
    (0 <= step <= steps; step == steps is the recorded bar itself)."""
    if step >= steps:
        return bar
    path = ((bar.open, bar.low, bar.high, bar.close) if bar.close >= bar.open
            else (bar.open, bar.high, bar.low, bar.close))
    walked = path[:step * (len(path) - 1) // steps + 1]
    trades = math.ceil(bar.trades * step / steps)

    def part(total: Decimal) -> Decimal:
        return (total * step / steps).quantize(EIGHT_PLACES, rounding=ROUND_DOWN)

    return replace(
        bar, high=max(walked), low=min(walked), close=walked[-1],
        volume=part(bar.volume), quote_volume=part(bar.quote_volume),
        taker_base=part(bar.taker_base), taker_quote=part(bar.taker_quote), trades=trades,
        last_trade=bar.first_trade + trades - 1 if trades else -1,
        first_trade=bar.first_trade if trades else -1)


def merge(bars: list[Bar], open_time: int, close_time: int) -> Bar:
    """Aggregate consecutive bars into one of a higher interval: open of the
    first, highest high, lowest low, close of the last, summed volumes."""
    traded = [b for b in bars if b.trades]
    return Bar(
        open_time=open_time, close_time=close_time,
        open=bars[0].open, high=max(b.high for b in bars), low=min(b.low for b in bars),
        close=bars[-1].close,
        volume=sum((b.volume for b in bars), ZERO),
        quote_volume=sum((b.quote_volume for b in bars), ZERO),
        trades=sum(b.trades for b in bars),
        taker_base=sum((b.taker_base for b in bars), ZERO),
        taker_quote=sum((b.taker_quote for b in bars), ZERO),
        first_trade=traded[0].first_trade if traded else -1,
        last_trade=traded[-1].last_trade if traded else -1)


# 1970-01-01 was a Thursday; Binance's weeks start on Monday (1970-01-05).
_WEEK_OFFSET = 4 * INTERVALS["1d"]


def window(open_time: int, interval: str) -> tuple[int, int]:
    """The [open, close] ms of the `interval` kline containing `open_time`.
    Intervals up to 3d are counted from the Unix epoch, weeks from Monday,
    months by the UTC calendar."""
    if interval == "1M":
        d = datetime.fromtimestamp(open_time / 1000, timezone.utc)
        t = int(datetime(d.year, d.month, 1, tzinfo=timezone.utc).timestamp() * 1000)
    else:
        offset = _WEEK_OFFSET if interval == "1w" else 0
        t = open_time - (open_time - offset) % INTERVALS[interval]
    return t, candle_close_time(t, interval)


def fmt(value: Decimal) -> str:
    """Binance's decimal strings: always 8 places ("7195.24000000")."""
    return f"{value:.8f}"


def kline_event(symbol: str, interval: str, bar: Bar, closed: bool, event_time: int) -> dict:
    """Binance's kline stream payload, keys in the order Binance sends them."""
    return {
        "e": "kline", "E": event_time, "s": symbol,
        "k": {
            "t": bar.open_time, "T": bar.close_time, "s": symbol, "i": interval,
            "f": bar.first_trade, "L": bar.last_trade,
            "o": fmt(bar.open), "c": fmt(bar.close), "h": fmt(bar.high), "l": fmt(bar.low),
            "v": fmt(bar.volume), "n": bar.trades, "x": closed,
            "q": fmt(bar.quote_volume), "V": fmt(bar.taker_base), "Q": fmt(bar.taker_quote),
            "B": "0",
        },
    }


def kline_row(bar: Bar) -> list:
    """One row of GET /api/v3/klines."""
    return [bar.open_time, fmt(bar.open), fmt(bar.high), fmt(bar.low), fmt(bar.close),
            fmt(bar.volume), bar.close_time, fmt(bar.quote_volume), bar.trades,
            fmt(bar.taker_base), fmt(bar.taker_quote), "0"]


def encode_event(stream: str, event: dict) -> tuple[str, str]:
    """(raw, combined) encodings of one event, built once for all clients."""
    raw = dumps(event)
    return raw, f'{{"stream":{dumps(stream)},"data":{raw}}}'
