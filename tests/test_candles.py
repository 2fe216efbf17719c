import json
from pathlib import Path

import pytest

from app.candles import (Candle, InvalidCandle, candle_from_kline_event, candles_from_csv,
                         normalize_symbol, parse_stream_name, stream_name)

DATA = Path(__file__).resolve().parent.parent / "data"


def captured_klines():
    """Every kline frame of a real Binance combined-stream capture."""
    lines = (DATA / "captures" / "BINANCE.ws.1.0").read_text().splitlines()[1:]
    frames = [json.loads(line.split(": ", 1)[1]) for line in lines]
    return [f for f in frames if f["stream"].endswith("@kline_1m")]


def test_every_captured_kline_parses_to_its_values():
    frames = captured_klines()
    assert len(frames) == 17
    for f in frames:
        k = f["data"]["k"]
        c = candle_from_kline_event(f["data"])
        assert (c.symbol, c.interval, c.open_time, c.close_time) == (k["s"], "1m", k["t"], k["T"])
        assert (c.open, c.high, c.low, c.close, c.volume) == tuple(float(k[x]) for x in "ohlcv")
        assert c.trades == k["n"] and c.closed is k["x"] and c.event_time == f["data"]["E"]
        assert stream_name(c.symbol, c.interval) == f["stream"]
    assert sum(candle_from_kline_event(f["data"]).closed for f in frames) == 2


@pytest.mark.parametrize("event", [
    {},
    {"e": "kline", "k": None},
    {"e": "kline", "k": {"i": "1m"}},
    {"e": "kline", "k": {"t": 1, "T": 2, "s": "BTCUSDT", "i": "7m", "o": "1", "c": "1", "h": "1", "l": "1",
                         "v": "1", "x": False}},
    {"e": "kline", "k": {"t": 1, "T": 2, "s": "BTCUSDT", "i": "1m", "o": "abc", "c": "1", "h": "1", "l": "1",
                         "v": "1", "x": False}},
    # high below close: not a candle Binance would send
    {"e": "kline", "k": {"t": 1, "T": 2, "s": "BTCUSDT", "i": "1m", "o": "1", "c": "3", "h": "2", "l": "1",
                         "v": "1", "x": False}},
])
def test_malformed_klines_are_refused(event):
    with pytest.raises(InvalidCandle):
        candle_from_kline_event(event)


def test_csv_rows_become_closed_candles_with_recorded_values():
    candles = list(candles_from_csv(DATA / "klines" / "BTCUSDT-1m-2020-01-01.csv"))
    assert len(candles) == 1440
    first = candles[0]
    assert first == Candle("BTCUSDT", "1m", 1577836800000, 1577836859999, 7195.24, 7196.25, 7183.14,
                           7186.68, 51.642812, 371233.51835535, 493, True, 1577836860000)
    assert all(b.open_time - a.open_time == 60_000 for a, b in zip(candles, candles[1:]))


def test_symbols_and_streams():
    assert normalize_symbol(" btcusdt ") == "BTCUSDT"
    assert parse_stream_name("ethusdt@kline_5m") == ("ETHUSDT", "5m")
    for bad in ("", "BTC-USDT", "b", "x" * 21):
        with pytest.raises(ValueError):
            normalize_symbol(bad)
    with pytest.raises(ValueError):
        parse_stream_name("btcusdt@kline_7m")
