"""Storage benchmark, against the same real servers the tests start.

For each backend (embedded SQLite, influxd 1.6 through the v1 write API,
VictoriaMetrics through influxdb-client's v2 write API) it measures:

  * throughput: batches of 5000 new candles written with Store.write for
    --seconds; prints the median points/s over the batches;
  * lag: the Writer with its default batching (5000 points / 1 s) fed at
    Binance's maximum for one connection, 1024 streams with one update per
    2 s each (512 updates/s), for --seconds; prints p50/p99 of the time from
    submit() to the database's acknowledgement.

Prices are the recorded BTCUSDT candles of 2020-01-01, replayed under many
symbols. Run: .venv/bin/python bench/storage_bench.py [--seconds 20]
"""
import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.storage import InfluxStore, Point  # noqa: E402
from app.storage.sqlite import SqliteStore  # noqa: E402
from tests.dbservers import InfluxServer, VictoriaServer, make_writer, recorded  # noqa: E402

BATCH = 5000
STREAMS = 1024
UPDATES_PER_CANDLE = 30   # a 1m candle updated every 2 s
RATE = STREAMS / 2        # updates per second

CANDLES = recorded()


def candle(stream: int, n: int):
    """The n-th recorded candle under the symbol of stream `stream`."""
    return replace(CANDLES[n % len(CANDLES)], symbol=f"S{stream:05d}USDT",
                   open_time=CANDLES[0].open_time + n * 60_000)


def throughput(store, seconds: float) -> float:
    rates, g = [], 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        points = [Point(candle((g + i) // len(CANDLES), (g + i) % len(CANDLES))) for i in range(BATCH)]
        started = time.perf_counter()
        store.write(points)
        rates.append(BATCH / (time.perf_counter() - started))
        g += BATCH
    return statistics.median(rates)


def lag(store, spool_dir: Path, seconds: float) -> dict:
    writer = make_writer(store, spool_dir, batch_size=BATCH, flush_interval=1.0,
                         retry_initial=1.0, retry_max=60.0)
    writer.start()
    tick = 0.05
    per_tick = RATE * tick
    started = time.monotonic()
    sent = 0.0
    n = 0
    while time.monotonic() - started < seconds:
        sent += per_tick
        while n < int(sent):
            stream, update = n % STREAMS, n // STREAMS
            c = candle(stream, update // UPDATES_PER_CANDLE)
            writer.submit(replace(c, closed=update % UPDATES_PER_CANDLE == UPDATES_PER_CANDLE - 1))
            n += 1
        time.sleep(max(0.0, started + (n / RATE) - time.monotonic()))
    writer.stop()
    stats = writer.stats()
    return {"updates": n, "rate": n / (time.monotonic() - started), "p50": stats["lag_ms_p50"],
            "p99": stats["lag_ms_p99"], "written": stats["points_written"],
            "failures": stats["failures"], "dropped": stats["dropped"]}


def run(name: str, make_store, tmp: Path, seconds: float) -> None:
    rate = throughput(make_store(), seconds)
    result = lag(make_store(), tmp / f"spool-{name}", seconds)
    print(f"{name:<34} {rate:>10,.0f} points/s   lag p50 {result['p50']:>7.1f} ms  "
          f"p99 {result['p99']:>7.1f} ms   ({result['updates']} updates at {result['rate']:.0f}/s, "
          f"{result['written']} points written, {result['failures']} failures, {result['dropped']} dropped)",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="storage-bench-"))
    print(f"throughput: median over {BATCH}-point batches; lag: {STREAMS} streams at {RATE:.0f} updates/s, "
          f"{args.seconds:.0f} s per phase")
    run("sqlite (embedded)", lambda: SqliteStore(str(tmp / "candles.sqlite3")), tmp, args.seconds)
    influxd = InfluxServer(tmp / "influxd").start()
    try:
        influxd.create_database("crypto")
        run("influxdb 1.6, v1 /write", lambda: InfluxStore(influxd.url, "crypto", api="v1"), tmp, args.seconds)
    finally:
        influxd.stop()
    victoria = VictoriaServer(tmp / "victoria").start()
    try:
        run("victoria-metrics, v2 influxdb-client",
            lambda: InfluxStore(victoria.url, "crypto", api="v2"), tmp, args.seconds)
    finally:
        victoria.stop()


if __name__ == "__main__":
    main()
