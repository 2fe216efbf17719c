"""Fan-out tail latency over a long run, with the update log full.

    .venv/bin/python bench/latency_bench.py [--minutes 10] [--clients 100] [--rate 400]

The replay exchange (30 streams, 60 updates per replayed minute each, event
time = its wall-clock send time) -> the app under gunicorn, pinned to CPU 0
-> N WebSocket clients in this process, pinned to CPU 1 (bench/wsload.py).
--rate is the exchange's updates per second, so clients x rate messages a
second are delivered. Reported: latency percentiles (p50, p99, p99.9, max)
over the whole run and per window, the worker's garbage-collection pauses
(from /stats) and its RSS over time. The log holds WS_BACKLOG updates; at
400 updates/s the default 50,000 is full after ~2 minutes.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import wsload  # noqa: E402
from bench.fanout_bench import FAN_OUT_INTERVALS, peak_rss_mb  # noqa: E402
from tests.harness import LiveApp  # noqa: E402
from tests.replay_helpers import start_replay, stop_replay  # noqa: E402

UPDATES_PER_MINUTE = 60   # --updates 59 non-final updates, then the final one


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return round(int(status.split("VmRSS:")[1].split()[0]) / 1024, 1)


def percentile(ordered: list[float], p: float) -> float | None:
    return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))], 1) if ordered else None


def summary(latencies: list[float]) -> dict:
    lat = sorted(latencies)
    return {"samples": len(lat), "p50_ms": percentile(lat, 0.50), "p99_ms": percentile(lat, 0.99),
            "p999_ms": percentile(lat, 0.999), "max_ms": lat[-1] if lat else None}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--rate", type=float, default=400.0, help="updates per second from the exchange")
    parser.add_argument("--window", type=float, default=60.0, help="seconds per reported window")
    parser.add_argument("--backlog", type=int, default=50_000, help="WS_BACKLOG")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the server (repeatable)")
    args = parser.parse_args()
    streams = 2 * len(FAN_OUT_INTERVALS)
    speed = args.rate * 60 / (streams * UPDATES_PER_MINUTE)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}; {args.clients} clients, {args.rate:g} updates/s "
          f"({args.clients * args.rate:,.0f} msg/s), {args.minutes:g} min, WS_BACKLOG={args.backlog}", flush=True)

    replay = start_replay(speed=speed, updates=UPDATES_PER_MINUTE - 1, event_time="wall")
    extra = dict(kv.split("=", 1) for kv in args.env)
    app = LiveApp(Path(tempfile.mkdtemp(prefix="bench-")), replay.url, BINANCE_SYMBOLS="BTCUSDT,ETHUSDT",
                  WS_MAX_CLIENTS=args.clients + 10, WS_MAX_CLIENTS_PER_IP=args.clients + 10,
                  WS_BACKLOG=args.backlog, BACKFILL_INITIAL_CANDLES=0, LOG_LEVEL="WARNING", **extra)
    try:
        app.start()
        worker = app.worker_pid()
        # The server (and its threads) on CPU 0, the load generator on CPU 1.
        subprocess.run(["taskset", "-a", "-p", "-c", "0", str(worker)], check=True, stdout=subprocess.DEVNULL)
        os.sched_setaffinity(0, {1 % os.cpu_count()})
        for symbol in ("BTCUSDT", "ETHUSDT"):
            for interval in FAN_OUT_INTERVALS:
                status, body = app.post(f"/symbol/{symbol}/subscribe?interval={interval}")
                assert status == 200, body
        time.sleep(2)
        windows, everything = [], []
        run_end = time.monotonic() + args.minutes * 60
        while (left := run_end - time.monotonic()) > 1:
            r = wsload.run(app.ws_url, args.clients, min(args.window, left), warmup=1.0, keep_latencies=True)
            stats = app.get("/stats")[1]
            gc2 = stats.get("gc", {}).get("gen2", {})
            everything.extend(r["latencies"])
            row = {"t_s": round(args.minutes * 60 - (run_end - time.monotonic())),
                   "delivered_per_s": r["delivered_per_s"], "closed_by_server": r["closed_by_server"],
                   **summary(r["latencies"]),
                   "log_full": stats["messages_in"] >= args.backlog,
                   "rss_mb": rss_mb(worker),
                   # older servers have no "gc" section
                   "gc2": gc2.get("collections"),
                   "gc2_longest_ms": gc2.get("longest_pause_ms"),
                   "gc2_longest_cpu_ms": gc2.get("longest_pause_cpu_ms")}
            windows.append(row)
            print(json.dumps(row), flush=True)
        gc = app.get("/stats")[1].get("gc", {"gen2": {}})
        total = {**summary(everything), "peak_rss_mb": peak_rss_mb(worker), "gc": gc}
        print(json.dumps({"whole_run": total}), flush=True)
        print("\n| window end s | msg/s | p50 ms | p99 ms | p99.9 ms | max ms | RSS MB | gen2 GCs | longest gen2 ms |")
        print("|---|---|---|---|---|---|---|---|---|")
        for w in windows:
            print(f"| {w['t_s']} | {w['delivered_per_s']:,} | {w['p50_ms']} | {w['p99_ms']} | {w['p999_ms']} "
                  f"| {w['max_ms']} | {w['rss_mb']} | {w['gc2']} | {w['gc2_longest_ms']} |")
        print(f"| whole run | | {total['p50_ms']} | {total['p99_ms']} | {total['p999_ms']} | {total['max_ms']} "
              f"| peak {total['peak_rss_mb']} | {gc['gen2'].get('collections')} "
              f"| {gc['gen2'].get('longest_pause_ms')} |")
    finally:
        app.stop()
        stop_replay(replay)


if __name__ == "__main__":
    main()
