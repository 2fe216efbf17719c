"""Storage with the embedded SQLite backend: the store, the writer thread,
the spool and its bounds, /history, /analysis and the CLI commands."""
import threading

import pytest

from app.storage import Point, StorageError
from app.retry import MAX_RETRY_AFTER, retry_after_seconds
from app.storage.errors import error_from_http
from app.storage.spool import Spool
from app.storage.sqlite import SqliteStore
from tests.dbservers import first_update, make_writer, recorded
from tests.harness import wait_until

BTC = recorded()


@pytest.fixture
def store(tmp_path):
    s = SqliteStore(str(tmp_path / "candles.sqlite3"))
    yield s
    s.close()


def test_round_trip_and_overwrite(store):
    store.write([Point(first_update(c)) for c in BTC[:10]])
    store.write([Point(c, "backfill") for c in BTC[:10]])
    store.write([Point(c, "backfill") for c in BTC[:10]])  # a retried batch is harmless
    got = store.history("BTCUSDT", "1m", None, None, 100)
    assert got == BTC[:10]  # one row per candle, the latest values, event time rebuilt
    assert store.last_closed("BTCUSDT", "1m") == BTC[9].open_time
    assert store.symbols("1m") == ["BTCUSDT"]
    assert store.history("NOPEUSDT", "1m") == [] and store.last_closed("NOPEUSDT", "1m") is None


def test_history_windows(store):
    store.write([Point(c) for c in BTC])
    t = [c.open_time for c in BTC]
    assert store.history("BTCUSDT", "1m", limit=3) == BTC[-3:]            # most recent, in time order
    assert store.history("BTCUSDT", "1m", t[10], None, 3) == BTC[10:13]   # from start
    assert store.history("BTCUSDT", "1m", None, t[10], 3) == BTC[8:11]    # most recent up to end
    assert store.history("BTCUSDT", "1m", t[10], t[12], 100) == BTC[10:13]
    assert store.history("BTCUSDT", "5m", limit=3) == []


def test_check(store):
    report = store.check()
    assert report["ok"], report
    assert [s["step"] for s in report["steps"]] == ["connect", "write", "read", "remove"]
    assert "crypto_price_check" not in str(store.symbols("1m"))


def test_writer_keeps_the_latest_state_and_stops(store, tmp_path):
    writer = make_writer(store, tmp_path / "spool", flush_interval=10)  # only stop() flushes
    writer.start()
    assert any(t.name == "storage-writer" for t in threading.enumerate())
    for c in BTC[:300]:
        writer.submit(first_update(c))
        writer.submit(c)
        writer.submit(first_update(c))  # a late in-progress update must not undo the close
    writer.stop(timeout=10)
    assert not writer.alive
    assert not any(t.name == "storage-writer" for t in threading.enumerate())
    assert store.history("BTCUSDT", "1m", limit=1000) == BTC[:300]
    stats = writer.stats()
    assert stats["points_written"] == 300 and stats["batches_written"] == 1
    assert stats["queue_depth"] == 0 and stats["spool_points"] == 0 and stats["dropped"] == 0
    assert stats["lag_ms_p50"] is not None and stats["last_write"].endswith("Z")


def test_writer_batches_by_size(store, tmp_path):
    writer = make_writer(store, tmp_path / "spool", batch_size=100, flush_interval=10)
    writer.start()
    for c in BTC[:250]:
        writer.submit(c)
    wait_until(lambda: writer.stats()["points_written"] >= 200, 5, message="two full batches")
    writer.stop()
    assert writer.stats()["points_written"] == 250
    assert store.history("BTCUSDT", "1m", limit=1000) == BTC[:250]


def test_memory_bound_drops_in_progress_candles_first(store, tmp_path):
    writer = make_writer(store, tmp_path / "spool", memory_max=200)  # not started: nothing drains
    for c in BTC[:100]:
        writer.submit(c)
    for c in BTC[100:400]:
        writer.submit(first_update(c))
    stats = writer.stats()
    assert stats["queue_depth"] <= 200
    assert stats["dropped_open"] == 400 - stats["queue_depth"] and stats["dropped_closed"] == 0
    # Every closed candle survived the shedding.
    assert sum(p.candle.closed for p in writer._pending.values()) == 100


def test_spool_survives_reopening_and_keeps_the_newest_state(tmp_path):
    spool = Spool(str(tmp_path), 64 * 1024 * 1024)
    assert spool.open() == 0
    spool.put([Point(first_update(c)) for c in BTC[:50]])
    spool.put([Point(c) for c in BTC[:50]])
    spool.close()
    spool = Spool(str(tmp_path), 64 * 1024 * 1024)
    assert spool.open() == 50
    entries = spool.oldest(1000)
    assert [p.candle for _, p in entries] == BTC[:50]
    with pytest.raises(RuntimeError, match="SPOOL_DIR"):
        Spool(str(tmp_path), 1024).open()  # one process per spool
    spool.put([Point(BTC[0], "backfill")])  # replaced while being written...
    spool.remove(entries)
    assert [p.source for _, p in spool.oldest(10)] == ["backfill"]  # ...so it stays
    spool.close()


def test_spool_bound_drops_oldest_in_progress_candles_first(tmp_path):
    spool = Spool(str(tmp_path), 256 * 1024)
    spool.open()
    dropped_open = dropped_closed = 0
    for i in range(0, 1440, 80):
        o, c = spool.put([Point(BTC[j]) for j in range(i, i + 80, 2)]
                         + [Point(first_update(BTC[j])) for j in range(i + 1, i + 80, 2)])
        dropped_open, dropped_closed = dropped_open + o, dropped_closed + c
    assert dropped_open > 0 and dropped_closed == 0
    kept = [p.candle for _, p in spool.oldest(2000)]
    assert all(c in kept for c in BTC[::2])  # every closed candle is still there
    assert spool.count + dropped_open == 1440
    spool.close()


def test_error_classification():
    assert error_from_http(401, b'{"error":"authorization failed"}').kind == "auth"
    assert error_from_http(404, b'{"error":"database not found: \\"x\\""}').kind == "not_found"
    assert error_from_http(404, b"404 page not found").kind == "unsupported"
    assert error_from_http(400, b'{"error":"partial write: field type conflict"}').permanent
    throttled = error_from_http(429, b"slow down", {"Retry-After": "7"})
    assert throttled.kind == "throttled" and throttled.retry_after == 7 and not throttled.permanent
    assert not error_from_http(503, b"").permanent
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert retry_after_seconds("soon") is None
    # a broken or hostile peer cannot stop us for ever
    assert retry_after_seconds("inf") is None and retry_after_seconds("nan") is None
    assert retry_after_seconds("1e400") is None
    assert retry_after_seconds("1e9") == MAX_RETRY_AFTER


def test_unwritable_sqlite_is_a_transient_storage_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(StorageError) as info:
        SqliteStore(str(tmp_path / "file" / "db.sqlite3")).write([Point(BTC[0])])
    assert info.value.kind == "unavailable" and not info.value.permanent


# -- through the app (SQLite is the default backend) ------------------------------
@pytest.fixture
def filled(app):
    writer = app.extensions["services"].storage.writer
    writer.start()
    for c in BTC + recorded("ETHUSDT-1m-2022-08-14.csv"):
        writer.submit(first_update(c))
        writer.submit(c)
    writer.stop()
    assert writer.stats()["points_written"] == 2880
    return app


def test_history_endpoint(filled):
    client = filled.test_client()
    r = client.get("/history/btcusdt?interval=1m&limit=3")
    assert r.status_code == 200
    assert r.json["candles"] == [c.to_dict() for c in BTC[-3:]]
    r = client.get("/history/BTCUSDT?start=2020-01-01T00:10:00Z&end=1577837520000")
    assert [c["open_time"] for c in r.json["candles"]] == [c.open_time for c in BTC[10:13]]
    assert len(client.get("/history/BTCUSDT").json["candles"]) == 500
    assert len(client.get("/history/BTCUSDT?limit=100000").json["candles"]) == 1440  # all there are (the cap: test_limits.py)
    assert client.get("/history/DOGEUSDT").json["candles"] == []
    for bad in ("?interval=7m", "?start=yesterday", "?limit=x", "?limit=0",
                "?start=1577837520000&end=1577836800000", "?end=" + "9" * 25, "?start=-5"):
        r = client.get("/history/BTCUSDT" + bad)
        assert r.status_code == 400 and r.json["error"] == "Bad Request" and r.json["message"], bad
    assert client.get("/history/B$").status_code == 400


def test_analysis_endpoints(filled):
    client = filled.test_client()
    r = client.get("/analysis/BTCUSDT?interval=1m&window=60")
    assert r.status_code == 200 and r.json["count"] == 60 and r.json["last_close"] == BTC[-1].close
    r = client.get("/analysis?interval=1m&window=24h")
    assert {m["symbol"] for m in r.json["movers"]} == {"BTCUSDT", "ETHUSDT"}
    assert client.get("/analysis/BTCUSDT?window=forever").status_code == 400
    assert client.get("/analysis?window=0").status_code == 400
    assert client.get("/analysis/DOGEUSDT").json["count"] == 0


def test_cli_commands(filled):
    runner = filled.test_cli_runner()
    result = runner.invoke(args=["check-db"])
    assert result.exit_code == 0, result.output
    assert "[  ok] remove" in result.output and "OK:" in result.output
    result = runner.invoke(args=["analyze", "BTCUSDT", "--window", "60"])
    assert result.exit_code == 0, result.output
    assert "60 candles" in result.output and "rsi 14" in result.output
    result = runner.invoke(args=["analyze", "btcusdt", "--window", "60", "--json"])
    assert '"count": 60' in result.output
    assert runner.invoke(args=["analyze", "BTCUSDT", "--window", "x"]).exit_code != 0


def test_check_db_failure_exits_non_zero(app, tmp_path):
    (tmp_path / "file").write_text("")
    app.extensions["services"].storage.store.path = str(tmp_path / "file" / "db.sqlite3")
    result = app.test_cli_runner().invoke(args=["check-db"])
    assert result.exit_code == 1 and "[FAIL] connect" in result.output
