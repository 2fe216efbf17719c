"""`flask replay` / `python -m app.replay`: run the replay exchange.

Example: a Binance stand-in at 60x on port 9443, and the app pointed at it:

    flask --app app replay --port 9443 --speed 60
    BINANCE=http://127.0.0.1:9443 make run
"""
from __future__ import annotations

import signal
import threading
from datetime import datetime, timezone

import click


def parse_start(value: str | None) -> int | None:
    """Epoch milliseconds, or an ISO date/time (UTC unless it says otherwise)."""
    if value is None or value.isdigit():
        return None if value is None else int(value)
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter("expected epoch milliseconds or an ISO time, e.g. 2020-01-01T06:00") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return int(when.timestamp() * 1000)


@click.command("replay")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=9443, show_default=True, type=int, help="0 picks a free port")
@click.option("--data", "data_dir", default="data/klines", show_default=True,
              type=click.Path(exists=True, file_okay=False), help="directory of Binance Vision 1m CSVs")
@click.option("--symbols", default="", help="comma-separated subset of the recorded symbols")
@click.option("--speed", default=1.0, show_default=True, type=float, help="replayed ms per wall ms")
@click.option("--updates", default=4, show_default=True, type=click.IntRange(1, 59),
              help="non-final updates per 1m candle (then the final x:true one)")
@click.option("--start", default=None, help="start here instead of at each recording's first candle"
                                            " (epoch ms or ISO time)")
@click.option("--ping-interval", default=20.0, show_default=True, type=float)
@click.option("--max-connection-age", default=None, type=float,
              help="close connections older than this many seconds (Binance: 24 h)")
@click.option("--weight-limit", default=6000, show_default=True, type=int,
              help="REST request weight per minute before HTTP 429")
@click.option("--event-time", type=click.Choice(["replay", "wall"]), default="replay", show_default=True,
              help="stamp events (E) with the replayed time, or the wall clock at sending (latency benchmarks)")
def replay_command(host, port, data_dir, symbols, speed, updates, start, ping_interval,
                   max_connection_age, weight_limit, event_time):
    """Serve recorded 1m klines as a Binance-compatible exchange (WebSocket
    streams and REST on one port) until interrupted."""
    from .server import ReplayServer

    try:
        server = ReplayServer(
            host, port, data_dir=data_dir, speed=speed, steps=updates, start=parse_start(start),
            symbols=[s.strip().upper() for s in symbols.split(",") if s.strip()] or None,
            ping_interval=ping_interval, max_age=max_connection_age, weight_limit=weight_limit,
            wall_clock_events=event_time == "wall")
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    # Test harnesses wait for this exact line (tests/replay_helpers.py).
    click.echo(f"replay exchange listening on {server.url}", nl=True)
    stop.wait()
    server.stop()
