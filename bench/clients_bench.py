"""How many WebSocket clients one server process holds, what each costs, and
how REST answers while they are connected.

    .venv/bin/python bench/clients_bench.py [--clients 5000] [--requests 1000]

The replay exchange at real speed (two streams: the clients are idle, not
silent) -> the app under gunicorn, pinned to CPU 0 -> N clients opened
one after another by a second process pinned to CPU 1, which then reads
their sockets with epoll and answers the server's pings (bench/wsload.py).
Reported: clients connected, the worker's threads and RSS before and with
them (per client: the difference over N), /health latency p50/p99 over
--requests sequential requests (a new connection each, as a health checker
makes them) with no clients and with N, and how long SIGTERM took to close
them all with 1001.
"""
import argparse
import json
import multiprocessing
import os
import platform
import resource
import selectors
import subprocess
import sys
import tempfile
import time
from http.client import HTTPConnection
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import wsload  # noqa: E402
from bench.latency_bench import percentile, rss_mb  # noqa: E402
from tests.harness import LiveApp  # noqa: E402
from tests.replay_helpers import start_replay, stop_replay  # noqa: E402


def raise_fd_limit() -> int:
    """Every client is a file descriptor on each side; the soft limit is
    often 1024 while the hard one allows far more."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def hold_clients(url: str, n: int, cpu: int, pipe) -> None:
    """The load process: open `n` clients, say how many, read them until told to stop."""
    raise_fd_limit()
    os.sched_setaffinity(0, {cpu})
    sel = selectors.EpollSelector()
    clients, closed, error = [], 0, None

    def read(timeout: float) -> None:
        nonlocal closed
        for key, _ in sel.select(timeout):
            try:
                key.data.on_readable(time.time() * 1000)
            except ConnectionError:
                sel.unregister(key.fileobj)
                closed += 1

    start = time.monotonic()
    try:
        for i in range(n):
            client = wsload.Client(url)
            sel.register(client.sock, selectors.EVENT_READ, client)
            clients.append(client)
            if i % 50 == 0:
                read(0)
    except Exception as exc:  # the ceiling: say where it was, keep the others open
        error = f"{type(exc).__name__}: {exc}"
    pipe.send({"connected": len(clients), "connect_s": round(time.monotonic() - start, 1), "error": error})
    while not pipe.poll(0):
        read(0.1)
    stop = time.monotonic()
    while closed < len(clients) and time.monotonic() - stop < 60:
        read(0.1)
    pipe.send({"closed_by_server": closed})


def health_latency(port: int, requests: int, timeout: float = 10.0) -> dict:
    """Percentiles of the answered requests; the others (no 200 within
    `timeout`) are counted as failed."""
    times, failed = [], 0
    for _ in range(requests):
        start = time.perf_counter()
        try:
            conn = HTTPConnection("127.0.0.1", port, timeout=timeout)
            conn.request("GET", "/health")
            resp = conn.getresponse()
            resp.read()
            conn.close()
            ok = resp.status == 200
        except OSError:
            ok = False
        if ok:
            times.append((time.perf_counter() - start) * 1000)
        else:
            failed += 1
            if failed == 3:  # the server is not answering: do not wait out every request
                break
    times.sort()
    return {"p50_ms": percentile(times, 0.50), "p99_ms": percentile(times, 0.99),
            "max_ms": round(times[-1], 1) if times else None, "failed": failed}


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=5000)
    parser.add_argument("--requests", type=int, default=1000, help="/health requests per measurement")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the server (repeatable)")
    args = parser.parse_args()
    fd_limit = raise_fd_limit()  # the server inherits it
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}; {args.clients} idle clients, file limit {fd_limit}", flush=True)

    replay = start_replay(speed=1)
    extra = dict(kv.split("=", 1) for kv in args.env)
    # every client comes from 127.0.0.1
    app = LiveApp(Path(tempfile.mkdtemp(prefix="bench-")), replay.url, BINANCE_SYMBOLS="BTCUSDT,ETHUSDT",
                  WS_MAX_CLIENTS=args.clients, WS_MAX_CLIENTS_PER_IP=args.clients,
                  BACKFILL_INITIAL_CANDLES=0, LOG_LEVEL="WARNING", **extra)
    load = None
    try:
        app.start()
        worker = app.worker_pid()
        subprocess.run(["taskset", "-a", "-p", "-c", "0", str(worker)], check=True, stdout=subprocess.DEVNULL)
        os.sched_setaffinity(0, {1 % os.cpu_count()})
        time.sleep(2)
        idle = {"threads": threads(worker), "rss_mb": rss_mb(worker), **health_latency(app.port, args.requests)}
        print(json.dumps({"no_clients": idle}), flush=True)

        ours, theirs = multiprocessing.Pipe()
        load = multiprocessing.get_context("spawn").Process(
            target=hold_clients, args=(app.ws_url, args.clients, 1 % os.cpu_count(), theirs), name="clients")
        load.start()
        connected = ours.recv()
        print(json.dumps({"load": connected}), flush=True)
        time.sleep(3)   # the last handshakes' garbage collected, every snapshot sent
        # new threads start on the worker's CPU, as the process's other threads
        subprocess.run(["taskset", "-a", "-p", "-c", "0", str(worker)], check=True, stdout=subprocess.DEVNULL)
        held = {"threads": threads(worker), "rss_mb": rss_mb(worker), "server_clients": _clients(app),
                **health_latency(app.port, args.requests)}
        n = connected["connected"]
        per_client = {"threads_per_client": round((held["threads"] - idle["threads"]) / n, 2) if n else None,
                      "kb_per_client": round((held["rss_mb"] - idle["rss_mb"]) * 1024 / n, 1) if n else None}
        print(json.dumps({"with_clients": held, **per_client}), flush=True)

        start = time.monotonic()
        app.stop()
        stopped_s = round(time.monotonic() - start, 1)
        ours.send("stop")
        closing = ours.recv() if ours.poll(90) else {}
        print(json.dumps({"sigterm_exit_s": stopped_s, **closing}), flush=True)

        print("\n| clients | threads per client | RSS per idle client | /health p50 | /health p99 | "
              "/health unanswered | /health p99, no clients | SIGTERM to exit |")
        print("|---|---|---|---|---|---|---|---|")
        print(f"| {n:,} | {per_client['threads_per_client']} | {per_client['kb_per_client']} kB "
              f"| {held['p50_ms']} ms | {held['p99_ms']} ms | {held['failed']} | {idle['p99_ms']} ms | {stopped_s} s |")
    finally:
        if app.proc and app.proc.poll() is None:
            app.stop()
        if load is not None:
            load.join(5)
            if load.is_alive():
                load.kill()
        stop_replay(replay)


def _clients(app) -> int | None:
    try:
        status, body = app.get("/stats")
    except OSError:
        return None
    return body.get("clients", {}).get("clients") if status == 200 and isinstance(body, dict) else None


if __name__ == "__main__":
    main()
