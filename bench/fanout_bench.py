"""Ingest and fan-out throughput of the streaming core.

    .venv/bin/python bench/fanout_bench.py [--seconds 8] [--repeats 3] [--clients 1,100,500]

1. Ingest, in process: recorded klines as Binance combined-stream frames,
   parsed by the feed's frame handler, then dispatched (price book, shared
   update log; no clients, no storage). Median of --repeats runs.
2. Fan-out, end to end: the replay exchange (--event-time wall, so "E" is
   when the exchange sent the update) -> the app under gunicorn -> N real
   WebSocket clients in this process (bench/wsload.py). Delivered
   price_update messages per second and latency from the exchange's send to
   the client's read, p50/p99, median of --repeats runs, for one update per
   frame and for ?batch=50ms.
3. Hostile clients (--hostile-clients N): N clients' latency on one server,
   in runs interleaved with and without two hostile clients (one sending
   unsubscribe messages of distinct symbols under the rate limit for ever,
   one never reading), each reconnecting whenever it is closed.

Everything runs on this machine: the load generator and the replay exchange
take CPU from the server, so the numbers are a floor for the server alone.
"""
import argparse
import contextlib
import itertools
import json
import os
import platform
import queue
import socket
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import websocket

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.candles import INTERVALS  # noqa: E402
from app.clients import ClientHub  # noqa: E402
from app.dispatch import Dispatcher  # noqa: E402
from app.feed import BinanceFeed, FeedConnection  # noqa: E402
from app.prices import PriceBook  # noqa: E402
from app.replay.timeline import encode_event, kline_event, load_recordings  # noqa: E402
from app.updates import UpdateLog  # noqa: E402
from bench import wsload  # noqa: E402
from config import Config  # noqa: E402
from tests.harness import LiveApp  # noqa: E402
from tests.replay_helpers import start_replay, stop_replay  # noqa: E402

FAN_OUT_INTERVALS = [i for i in INTERVALS if i not in ("1s",)]


def config() -> dict:
    return {k: getattr(Config, k) for k in dir(Config) if k.isupper()}


def recorded_frames(n: int) -> list[bytes]:
    """n combined-stream kline frames of the recorded candles. Past the end
    of the recordings they start again, shifted by a day per round, so that
    every frame is a new candle (the dispatcher drops stale updates)."""
    recordings = load_recordings(ROOT / "data" / "klines")
    frames = []
    day = INTERVALS["1d"]
    for shift in range(0, n * day, day):
        for symbol, bars in recordings.items():
            stream = f"{symbol.lower()}@kline_1m"
            for bar in bars:
                bar = replace(bar, open_time=bar.open_time + shift, close_time=bar.close_time + shift)
                event = kline_event(symbol, "1m", bar, True, bar.close_time + 1)
                frames.append(encode_event(stream, event)[1].encode())
                if len(frames) == n:
                    return frames
    return frames


def ingest_once(frames: list[bytes]) -> tuple[float, float]:
    """(parse msgs/s, parse+dispatch msgs/s)."""
    cfg = config()
    ingest: queue.Queue = queue.Queue()
    conn = FeedConnection(BinanceFeed(cfg, ingest), 1)
    t0 = time.perf_counter()
    for f in frames:
        conn._handle_text(f)
    t1 = time.perf_counter()
    prices, updates = PriceBook(), UpdateLog(cfg["WS_BACKLOG"])
    dispatcher = Dispatcher(ingest, prices, updates, ClientHub(updates, prices, cfg), [], 0.005)
    items = [ingest.get_nowait() for _ in range(ingest.qsize())]
    t2 = time.perf_counter()
    for i in range(0, len(items), 1000):
        dispatcher._dispatch(items[i:i + 1000])
    t3 = time.perf_counter()
    n = len(frames)
    return n / (t1 - t0), n / ((t1 - t0) + (t3 - t2))


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return round(int(status.split("VmHWM:")[1].split()[0]) / 1024, 1)


def median_or_none(values):
    """A run in which no client got an update has no latency."""
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fan_out(clients: list[int], seconds: float, repeats: int, speed: float) -> list[dict]:
    rows = []
    for mode, query in (("frame per update", ""), ("batch=50ms", "?batch=50ms")):
        for n in clients:
            # A fresh exchange and server per row: the recordings are one day
            # long (72 s at 1200x), and no row inherits another's backlog.
            with serving(speed, n) as app:
                runs = [wsload.run(app.ws_url + query, n, seconds) for _ in range(repeats)]
                stats = app.get("/stats")[1]
                rss_mb = peak_rss_mb(app.worker_pid())
            row = {"mode": mode, "clients": n,
                   # the server's ingest rate over the last 10 s, i.e. during the runs
                   "offered_per_s": stats["messages_in_per_second"],
                   "delivered_per_s": statistics.median(r["delivered_per_s"] for r in runs),
                   "p50_ms": median_or_none(r["p50_ms"] for r in runs),
                   "p99_ms": median_or_none(r["p99_ms"] for r in runs),
                   # clients the server gave up on: what saturation looks like
                   "dropped": stats["clients"]["dropped_slow"],
                   "resynced": stats["clients"]["resynced_lagging"],
                   "worker_peak_rss_mb": rss_mb}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


class Hostile:
    """Two clients that try to hurt the others, each in its own thread,
    reconnecting whenever the server closes them: one sends unsubscribe
    messages of 200 distinct symbols under the rate limit for ever, one
    follows everything and never reads."""

    def __init__(self, url: str):
        self.url = url
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._loop, args=(f,), name=f.__name__, daemon=True)
                        for f in (self._flood, self._never_read)]

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(15)

    def _loop(self, session) -> None:
        while not self.stop.is_set():
            try:
                session()
            except (OSError, websocket.WebSocketException):
                self.stop.wait(0.1)

    def _flood(self) -> None:
        ws = websocket.create_connection(self.url, timeout=5)
        try:
            for n in itertools.count():
                symbols = [f"Z{n:06d}{i:03d}"[:20] for i in range(200)]
                ws.send(json.dumps({"action": "unsubscribe", "symbols": symbols}))
                if self.stop.wait(0.11):  # just under 10 messages a second
                    return
        finally:
            ws.close()

    def _never_read(self) -> None:
        ws = websocket.create_connection(self.url, timeout=5,
                                         sockopt=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)])
        try:
            while not self.stop.wait(0.5):
                ws.ping()  # fails once the server has given up on it
        finally:
            ws.close()


def hostile(n: int, seconds: float, repeats: int, speed: float) -> list[dict]:
    """n clients' latency with and without the two hostile ones, runs
    interleaved on one server so both see the same machine."""
    runs = {"quiet": [], "hostile": []}
    with serving(speed, n + 2) as app:
        for _ in range(repeats):
            runs["quiet"].append(wsload.run(app.ws_url, n, seconds))
            with Hostile(app.ws_url):
                runs["hostile"].append(wsload.run(app.ws_url, n, seconds))
        stats = app.get("/stats")[1]["clients"]
    rows = []
    for kind, rs in runs.items():
        row = {"run": kind, "clients": n,
               "delivered_per_s": statistics.median(r["delivered_per_s"] for r in rs),
               "p50_ms": median_or_none(r["p50_ms"] for r in rs),
               "p99_ms": median_or_none(r["p99_ms"] for r in rs)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(json.dumps({"hostile_clients_closed": {k: stats[k] for k in (
        "dropped_slow", "closed_output_limit", "closed_flooding", "refused_messages")}}), flush=True)
    return rows


@contextlib.contextmanager
def serving(speed: float, clients: int):
    """The replay exchange and the app under gunicorn following 30 streams."""
    replay = start_replay(speed=speed, event_time="wall")
    app = LiveApp(Path(tempfile.mkdtemp(prefix="bench-")), replay.url, BINANCE_SYMBOLS="BTCUSDT,ETHUSDT",
                  WS_MAX_CLIENTS=clients + 10, WS_MAX_CLIENTS_PER_IP=clients + 10,
                  BACKFILL_INITIAL_CANDLES=0, LOG_LEVEL="WARNING")
    try:
        app.start()
        for symbol in ("BTCUSDT", "ETHUSDT"):
            for interval in FAN_OUT_INTERVALS:
                status, body = app.post(f"/symbol/{symbol}/subscribe?interval={interval}")
                assert status == 200, body
        time.sleep(2)
        yield app
    finally:
        app.stop()
        stop_replay(replay)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clients", default="1,100,500")
    parser.add_argument("--speed", type=float, default=300,
                        help="replay speed: 300 gives 5 replayed minutes a second, ~750 updates/s on 30 streams")
    parser.add_argument("--ingest-messages", type=int, default=100_000)
    parser.add_argument("--hostile-clients", type=int, default=200,
                        help="clients measured with and without a flooding and a non-reading client (0: skip)")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}")

    frames = recorded_frames(args.ingest_messages)
    runs = [ingest_once(frames) for _ in range(args.repeats)]
    print(f"ingest: parse {statistics.median(r[0] for r in runs):,.0f} msg/s; "
          f"parse + dispatch {statistics.median(r[1] for r in runs):,.0f} msg/s "
          f"(median of {args.repeats} x {args.ingest_messages:,} messages)")

    if args.hostile_clients:
        rows = hostile(args.hostile_clients, args.seconds, args.repeats, args.speed)
        print(f"\n| run | clients | delivered msg/s | p50 ms | p99 ms |\n|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['run']} | {r['clients']} | {r['delivered_per_s']:,.0f} | {r['p50_ms']} | {r['p99_ms']} |")
    if not args.clients:
        return
    rows = fan_out([int(c) for c in args.clients.split(",")], args.seconds, args.repeats, args.speed)
    print("\n| mode | clients | offered msg/s | delivered msg/s | p50 ms | p99 ms | dropped | resynced | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['clients']} | {r['offered_per_s']:,.0f} | {r['delivered_per_s']:,.0f} "
              f"| {r['p50_ms']} | {r['p99_ms']} | {r['dropped']} | {r['resynced']} | {r['worker_peak_rss_mb']} |")


if __name__ == "__main__":
    main()
