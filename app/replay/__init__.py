"""The replay exchange: a Binance-compatible server (WebSocket streams and
REST on one port) that replays recorded 1m klines, for tests, demos and
benchmarks that cannot reach Binance.

Modules: `timeline` (recorded bars -> kline updates, pure), `tape` (each
symbol's timeline and the shared replay clock), `market` (the clock thread),
`hub` (connections and fan-out), `protocol` (Binance's SUBSCRIBE protocol),
`rest` (/api/v3), `server` (Flask app, fault controls, ReplayServer), `cli`.
"""
from .server import ReplayServer, create_replay_app

__all__ = ["ReplayServer", "create_replay_app"]
