"""Storage against real servers: Debian's influxd 1.6 (v1 write API and
InfluxQL reads) and VictoriaMetrics (the influxdb-client v2 write path).
Optional: a real InfluxDB 2.x/3.x when TEST_INFLUXDB2_*/TEST_INFLUXDB3_* are set."""
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from app.storage import InfluxStore, Point, StorageError
from app.storage.spool import Spool
from tests.dbservers import (first_update, influxd, influxd_auth, influxd_own,  # noqa: F401
                             make_writer, recorded, unique_db, victoria)
from tests.harness import ROOT, wait_until

BTC = recorded()
ETH = recorded("ETHUSDT-1m-2022-08-14.csv")


def v1_store(server, db, token=""):
    return InfluxStore(server.url, db, token=token, api="v1", timeout=2.0)


def stored(server, db, symbol="BTCUSDT") -> list:
    return v1_store(server, db).history(symbol, "1m", None, None, 5000)


def test_v1_round_trip_and_overwrite(influxd):
    db = influxd.create_database(unique_db())
    store = v1_store(influxd, db)
    store.write([Point(first_update(c)) for c in BTC[:20]])
    store.write([Point(c) for c in BTC[:20]])
    store.write([Point(c) for c in BTC[:20]])  # a retried batch
    assert stored(influxd, db) == BTC[:20]
    rows = influxd.rows('SELECT * FROM crypto_price', db)
    assert len(rows) == 20  # one point per candle
    assert rows[0] == {"time": BTC[0].open_time, "symbol": "BTCUSDT", "interval": "1m",
                       "price": 7186.68, "open": 7195.24, "high": 7196.25, "low": 7183.14,
                       "close": 7186.68, "volume": 51.642812, "quote_volume": 371233.51835535,
                       "trades": 493, "closed": True, "source": "live"}
    assert store.history("BTCUSDT", "1m", BTC[5].open_time, BTC[7].open_time, 10) == BTC[5:8]
    assert store.history("BTCUSDT", "1m", None, BTC[7].open_time, 2) == BTC[6:8]
    assert store.last_closed("BTCUSDT", "1m") == BTC[19].open_time
    assert store.symbols("1m") == ["BTCUSDT"]
    assert store.history("DOGEUSDT", "1m") == [] and store.last_closed("DOGEUSDT", "1m") is None


def test_v1_check_db(influxd):
    db = influxd.create_database(unique_db())
    report = v1_store(influxd, db).check()
    assert report["ok"], report
    assert "InfluxDB 1.6" in report["steps"][0]["detail"]
    assert report["steps"][-1]["detail"].startswith('DROP SERIES FROM "crypto_price_check"')
    assert influxd.rows("SELECT * FROM crypto_price_check", db) == []


def test_errors_are_diagnosed(influxd, influxd_auth):
    report = v1_store(influxd, "no_such_db").check()
    assert not report["ok"] and "unknown database" in report["diagnosis"]
    assert report["steps"][-1]["step"] == "write"
    # 1.6 has no /api/v2: the v2 write API is refused, with a hint.
    report = InfluxStore(influxd.url, "x", api="v2", timeout=2).check()
    assert not report["ok"] and "INFLUXDB_API=v1" in report["diagnosis"]
    dead = InfluxStore(f"http://127.0.0.1:{influxd_auth.rpc_port + 1}", "x", api="v1", timeout=2)
    report = dead.check()
    assert report["steps"][0]["step"] == "connect" and "cannot reach" in report["diagnosis"]

    db = influxd_auth.create_database(unique_db())
    for token in ("", "admin:wrong"):
        with pytest.raises(StorageError) as info:
            v1_store(influxd_auth, db, token).write([Point(BTC[0])])
        assert info.value.kind == "auth" and info.value.status == 401 and info.value.permanent
        assert "INFLUXDB_TOKEN" in v1_store(influxd_auth, db, token).check()["diagnosis"]
    good = v1_store(influxd_auth, db, "admin:secret")
    good.write([Point(c) for c in BTC[:3]])
    assert good.history("BTCUSDT", "1m") == BTC[:3]
    assert good.check()["ok"]


def test_writer_reports_permanent_errors(influxd, tmp_path):
    writer = make_writer(v1_store(influxd, "no_such_db"), tmp_path / "spool")
    writer.start()
    writer.submit(BTC[0])
    error = wait_until(lambda: writer.stats()["last_error"], 5, message="an error")
    writer.stop()
    assert error["kind"] == "not_found" and error["permanent"] and error["status"] == 404
    stats = writer.stats()
    assert stats["spool_points"] == 1 and stats["failures"] >= 1 and stats["state"] == "retrying"


def test_outage_loses_nothing(influxd_own, tmp_path):
    """The database goes away while candles keep coming; everything closed
    arrives once it is back, with the recorded values."""
    db = influxd_own.create_database("crypto")
    writer = make_writer(v1_store(influxd_own, db), tmp_path / "spool")
    writer.start()

    def feed(candles):
        for c in candles:
            writer.submit(first_update(c))
            writer.submit(c)

    feed(ETH[:400])
    wait_until(lambda: writer.stats()["points_written"] >= 400, 10, message="the first candles")
    influxd_own.stop()
    feed(ETH[400:900])
    wait_until(lambda: writer.stats()["spool_points"] >= 500, 10, message="the spool to fill")
    assert writer.stats()["failures"] >= 1
    influxd_own.start()
    feed(ETH[900:])
    wait_until(lambda: writer.stats()["spool_points"] == 0, 20, message="the spool to drain")
    writer.stop()
    assert stored(influxd_own, db, "ETHUSDT") == ETH
    stats = writer.stats()
    assert stats["dropped"] == 0 and stats["state"] == "ok" and stats["lag_ms_p99"] > 0


KILLED_WRITER = textwrap.dedent("""
    import os, signal, sys
    from app.storage import InfluxStore
    from tests.dbservers import first_update, make_writer, recorded
    from tests.harness import wait_until
    url, spool = sys.argv[1:]
    writer = make_writer(InfluxStore(url, "crypto", api="v1", timeout=1), spool)
    writer.start()
    for c in recorded():
        writer.submit(first_update(c))
        writer.submit(c)
    wait_until(lambda: writer.stats()["spool_points"] == 1440, 20, message="everything spooled")
    os.kill(os.getpid(), signal.SIGKILL)  # no stop(), no flush: a crash
""")


def test_crash_during_outage_loses_nothing(influxd_own, tmp_path):
    influxd_own.create_database("crypto")
    influxd_own.stop()
    crashed = subprocess.run([sys.executable, "-c", KILLED_WRITER, influxd_own.url, str(tmp_path / "spool")],
                             cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    left = Spool(str(tmp_path / "spool"), 1 << 30)
    assert left.open() == 1440  # one row per candle, the closed state
    left.close()
    influxd_own.start()
    writer = make_writer(v1_store(influxd_own, "crypto"), tmp_path / "spool")
    writer.start()
    wait_until(lambda: writer.stats()["spool_points"] == 0, 20, message="the spool to drain")
    writer.stop()
    assert stored(influxd_own, "crypto") == BTC


def test_victoria_metrics_v2_write_path(victoria, tmp_path):
    """influxdb-client's /api/v2/write: batches by size, one sample per candle
    whatever the number of updates, everything flushed by stop()."""
    bucket = unique_db("vm")
    store = InfluxStore(victoria.url, bucket, token="unused", api="v2", timeout=5)
    writer = make_writer(store, tmp_path / "spool", batch_size=100, flush_interval=30)
    writer.start()
    for c in BTC[:250]:
        writer.submit(first_update(c))
        writer.submit(c)
    symbol_filter = '{__name__="crypto_price_close",symbol="BTCUSDT"}'
    wait_until(lambda: writer.stats()["points_written"] >= 200, 10, message="size-triggered batches")
    writer.stop()  # the last 50 only go out because stop flushes
    stats = writer.stats()
    assert stats["points_written"] == 250 and stats["batches_written"] >= 3
    assert stats["backend"] == "influxdb-v2"
    series = victoria.export(symbol_filter)
    assert len(series) == 1 and series[0]["metric"]["interval"] == "1m"
    samples = dict(zip(series[0]["timestamps"], series[0]["values"]))
    assert len(series[0]["timestamps"]) == 250  # one write per candle, not per update
    assert samples == {c.open_time: c.close for c in BTC[:250]}
    trades = victoria.export('{__name__="crypto_price_trades",symbol="BTCUSDT"}')[0]
    assert trades["values"] == [float(c.trades) for c in BTC[:250]]


def _optional_servers():
    out = []
    for name in ("INFLUXDB2", "INFLUXDB3"):
        url = os.environ.get(f"TEST_{name}_URL")
        out.append(pytest.param(
            name, url, marks=pytest.mark.skipif(not url, reason=f"TEST_{name}_URL not set")))
    return out


@pytest.mark.parametrize("name,url", _optional_servers())
def test_real_influxdb_2_or_3(name, url):
    """TEST_INFLUXDB2_URL/_TOKEN/_ORG/_BUCKET or TEST_INFLUXDB3_URL/_TOKEN/_DATABASE."""
    env = lambda key, default="": os.environ.get(f"TEST_{name}_{key}", default)  # noqa: E731
    store = InfluxStore(url, env("BUCKET") or env("DATABASE", "crypto"), env("TOKEN"), env("ORG"), "v2")
    report = store.check()
    assert report["ok"], report
    store.write([Point(c) for c in BTC[:5]])
    assert store.history("BTCUSDT", "1m", BTC[0].open_time, BTC[4].open_time, 10) == BTC[:5]
