"""Analysis functions against values worked out by hand from the recorded
BTCUSDT 1m candles of 2020-01-01 (the rows are quoted where used)."""
import math

import pytest

from app import analysis
from app.storage import Point
from app.storage.sqlite import SqliteStore
from tests.dbservers import recorded

# The first 16 closes of data/klines/BTCUSDT-1m-2020-01-01.csv.
CLOSES = [7186.68, 7184.03, 7182.43, 7185.94, 7179.78, 7179.99, 7182.00, 7183.66,
          7187.68, 7191.07, 7187.36, 7188.71, 7187.02, 7182.08, 7180.97, 7183.06]


@pytest.fixture(scope="module")
def btc():
    return recorded()


def test_the_closes_are_the_recorded_ones(btc):
    assert [c.close for c in btc[:16]] == CLOSES


def test_summary_of_the_first_five_minutes(btc):
    s = analysis.summarize(btc[:5], "1m")
    assert s["count"] == 5
    assert s["first_time"] == "2020-01-01T00:00:00.000Z"
    assert s["last_time"] == "2020-01-01T00:04:00.000Z"
    assert (s["first_close"], s["last_close"]) == (7186.68, 7179.78)
    assert s["min"] == 7178.64 and s["max"] == 7196.25            # lows and highs, not closes
    assert s["mean"] == pytest.approx(35918.86 / 5)                # = 7183.772
    assert s["return_pct"] == pytest.approx(-6.90 / 7186.68 * 100)
    # The peak close is the first one; the deepest point is the last.
    assert s["max_drawdown_pct"] == pytest.approx(6.90 / 7186.68 * 100)
    volume = 51.642812 + 7.248148 + 11.681677 + 10.025391 + 14.911105
    quote = 371233.51835535 + 52080.1277878 + 83903.74163545 + 72033.22664851 + 107066.52182466
    assert s["volume"] == pytest.approx(volume)
    assert s["vwap"] == pytest.approx(quote / volume)              # ~7185.86
    assert s["trades"] == 493 + 135 + 202 + 136 + 161
    assert s["sma_20"] is None and s["rsi_14"] is None             # too few candles


def test_moving_averages():
    first5 = CLOSES[:5]
    assert analysis.sma(first5, 3) == pytest.approx((7182.43 + 7185.94 + 7179.78) / 3)
    # Seed 7184.38 (mean of the first three), alpha 0.5: 7185.16, then 7182.47.
    assert analysis.ema(first5, 3) == pytest.approx(7182.47)
    assert analysis.sma(first5, 6) is None and analysis.ema(first5, 6) is None


def test_wilder_rsi():
    # Changes over the first 15 closes: gains 3.51 .21 2.01 1.66 4.02 3.39 1.35
    # = 16.15; losses 2.65 1.60 6.16 3.71 1.69 4.94 1.11 = 21.86.
    assert analysis.rsi(CLOSES[:15]) == pytest.approx(100 * 16.15 / (16.15 + 21.86))
    # The 16th close rises 2.09: Wilder smoothing, (avg * 13 + x) / 14.
    gain, loss = (16.15 / 14 * 13 + 2.09) / 14, (21.86 / 14 * 13) / 14
    assert analysis.rsi(CLOSES) == pytest.approx(100 - 100 / (1 + gain / loss))
    assert analysis.rsi(CLOSES[:14]) is None


def test_volatility_of_log_returns():
    r1, r2 = math.log(7184.03 / 7186.68), math.log(7182.43 / 7184.03)
    sd = abs(r1 - r2) / math.sqrt(2)  # sample stdev of two values
    vol, annual = analysis.volatility(CLOSES[:3], "1m")
    assert vol == pytest.approx(sd * 100)
    assert annual == pytest.approx(sd * math.sqrt(525_600) * 100)  # minutes in a year
    assert analysis.volatility(CLOSES[:2], "1m") == (None, None)


def test_full_day(btc):
    s = analysis.summarize(btc, "1m")
    assert s["count"] == 1440
    assert s["last_time"] == "2020-01-01T23:59:00.000Z"
    assert s["first_close"] == 7186.68 and s["last_close"] == btc[-1].close
    assert s["min"] == min(c.low for c in btc) and s["max"] == max(c.high for c in btc)
    assert s["sma_20"] == pytest.approx(sum(c.close for c in btc[-20:]) / 20)
    assert 0 < s["rsi_14"] < 100
    assert s["volume"] == pytest.approx(sum(c.volume for c in btc))


def test_drawdown_takes_the_running_peak():
    assert analysis.max_drawdown_pct([100.0, 120.0, 90.0, 130.0, 117.0]) == pytest.approx(25.0)
    assert analysis.max_drawdown_pct([1.0, 2.0, 3.0]) == 0.0


def test_parse_window():
    assert analysis.parse_window("500", "1m") == (500, None)
    assert analysis.parse_window("24h", "1m") == (1440, 86_400_000)
    assert analysis.parse_window("7d", "1h") == (168, 604_800_000)
    assert analysis.parse_window(None, "5m") == (288, 86_400_000)
    for bad in ("0", "abc", "24x", "-5", "100000"):
        with pytest.raises(ValueError):
            analysis.parse_window(bad, "1m")


@pytest.fixture
def store(tmp_path, btc):
    s = SqliteStore(str(tmp_path / "c.sqlite3"))
    s.write([Point(c) for c in btc + recorded("ETHUSDT-1m-2022-08-14.csv")])
    yield s
    s.close()


def test_a_duration_window_ends_at_the_newest_candle(store, btc):
    result = analysis.analyze(store, "BTCUSDT", "1m", "1h")
    assert result["count"] == 60
    assert result["first_open_time"] == btc[-60].open_time
    assert result["last_close"] == btc[-1].close
    assert result["return_pct"] == pytest.approx((btc[-1].close / btc[-60].close - 1) * 100)


def test_top_movers_rank_by_return(store):
    movers = analysis.top_movers(store, "1m", "1440")["movers"]
    assert [m["symbol"] for m in movers] == sorted(
        ["BTCUSDT", "ETHUSDT"], key=lambda s: -analysis.analyze(store, s, "1m", "1440")["return_pct"])
    assert movers[0]["return_pct"] >= movers[1]["return_pct"]
    assert analysis.top_movers(store, "5m", "10")["movers"] == []


def test_the_candle_budget_counts_every_symbol():
    analysis.check_budget("1000", "1m", 2, 2000)          # 2000 candles: allowed
    analysis.check_budget("50000", "1m", 10, None)        # no budget (the CLI)
    with pytest.raises(ValueError, match="1440 1m candles for each of 2 symbols, 2880 in all"):
        analysis.check_budget("24h", "1m", 2, 2000)
    with pytest.raises(ValueError, match="at most 2000 are read"):
        analysis.check_budget("2001", "1m", 1, 2000)
