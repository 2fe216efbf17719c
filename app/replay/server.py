"""The replay exchange's Flask app and the server that runs it in a thread.

WebSocket endpoints (Binance's): /ws, /ws/<stream>[/<stream>...] (raw
events), /stream and /stream?streams=a/b/c (combined: {"stream", "data"}).

Fault controls for tests (not Binance's), all answering JSON:
  POST /_replay/drop                       cut every WebSocket (TCP close, no close frame)
  POST /_replay/refuse?status=503&seconds=5
                                           fail WebSocket handshakes with that HTTP status
                                           (429 and 418 carry Retry-After) for N seconds
  POST /_replay/silence?seconds=N          keep connections open, send nothing (no data,
                                           no replies, no pings) for N seconds; the replay
                                           clock runs on and the frames are lost
  POST /_replay/delay-control?delay=D&seconds=N
                                           handle control messages (SUBSCRIBE, ...) that arrive
                                           in the next N seconds D seconds late, then reply
  POST /_replay/shutdown-event             send Binance's serverShutdown event to every
                                           connection (connections stay open)
  POST /_replay/speed?x=N                  change the replay speed from now on
  GET  /_replay/stats                      connections, subscriptions, frames sent, clock
"""
from __future__ import annotations

import logging
import math
import threading
import time

from flask import Flask, Response, current_app, request
from flask_sock import Sock
from werkzeug.exceptions import BadRequest
from werkzeug.serving import make_server

from app.candles import dumps

from . import protocol
from .hub import GOING_AWAY, Hub
from .market import Market, Player
from .rest import WeightMeter, bp as rest_bp

log = logging.getLogger(__name__)


class Replay:
    """Everything one replay exchange owns; `app.extensions["replay"]`."""

    def __init__(self, market: Market, ping_interval: float, max_age: float | None, weight_limit: int):
        self.market = market
        self.hub = Hub(ping_interval, max_age)
        self.player = Player(market, self.hub)
        self.weights = WeightMeter(weight_limit)
        self.refuse_status = 0
        self.refuse_until = 0.0

    def refusing(self) -> int:
        return self.refuse_status if time.monotonic() < self.refuse_until else 0


def _reader_thread(target):
    """simple-websocket's per-connection reader, named so it can be found."""
    return threading.Thread(target=target, name="replay-ws-reader", daemon=True)


def create_replay_app(data_dir="data/klines", speed: float = 1.0, steps: int = 4,
                      start: int | None = None, symbols: list[str] | None = None,
                      ping_interval: float = 20.0, max_age: float | None = None,
                      weight_limit: int = 6000, wall_clock_events: bool = False) -> Flask:
    """A Binance-compatible exchange replaying the 1m klines in `data_dir`.
    The clock thread is not started here (ReplayServer does that)."""
    app = Flask(__name__)
    app.config["SOCK_SERVER_OPTIONS"] = {"thread_class": _reader_thread}
    market = Market(data_dir, speed, steps, start, symbols, wall_clock_events)
    app.extensions["replay"] = Replay(market, ping_interval, max_age, weight_limit)
    app.register_blueprint(rest_bp)
    sock = Sock(app)

    @app.before_request
    def refuse_handshakes():
        # Runs before flask-sock's view, so the upgrade never happens.
        status = current_app.extensions["replay"].refusing()
        if not status or request.headers.get("Upgrade", "").lower() != "websocket":
            return None
        resp = Response(f"replay exchange: handshake refused with HTTP {status}\n", status=status)
        if status in (418, 429):
            left = current_app.extensions["replay"].refuse_until - time.monotonic()
            resp.headers["Retry-After"] = str(max(1, math.ceil(left)))
        return resp

    @sock.route("/ws")
    def ws_bare(ws):
        _serve(ws, combined=False, streams=[])

    @sock.route("/ws/<path:streams>")
    def ws_raw(ws, streams):
        _serve(ws, combined=False, streams=streams.split("/"))

    @sock.route("/stream")
    def ws_combined(ws):
        streams = request.args.get("streams", "")
        _serve(ws, combined=True, streams=[s for s in streams.split("/") if s])

    @app.before_request
    def check_stream_names():
        # Binance refuses a handshake naming a bad stream with HTTP 400.
        if request.path.startswith("/ws/"):
            streams = request.path[len("/ws/"):].split("/")
        elif request.path == "/stream":
            streams = [s for s in request.args.get("streams", "").split("/") if s]
        else:
            return None
        if len(streams) > protocol.MAX_STREAMS or not all(map(protocol.valid_stream, streams)):
            return Response(dumps({"code": 2, "msg": "Invalid request: invalid stream"}),
                            status=400, mimetype="application/json")
        return None

    _add_controls(app)
    return app


def _serve(ws, combined: bool, streams: list[str]) -> None:
    hub = current_app.extensions["replay"].hub
    conn = hub.open(ws, combined, streams)
    threading.current_thread().name = f"replay-ws-{conn.id}"
    log.info("connection %d opened (%s, %d streams)", conn.id, "combined" if combined else "raw", len(streams))
    try:
        conn.serve()
    finally:
        # Once werkzeug closes the socket, simple-websocket's reader would
        # stay blocked in recv() forever; shutting it down first ends it.
        conn.drop()
        hub.close(conn)
        log.info("connection %d closed", conn.id)


def _add_controls(app: Flask) -> None:
    def replay() -> Replay:
        return current_app.extensions["replay"]

    def number(name: str, default: float) -> float:
        try:
            return float(request.args.get(name, default))
        except ValueError:
            raise BadRequest(f"{name} must be a number") from None

    def ok(**body) -> Response:
        return Response(dumps({"ok": True, **body}), mimetype="application/json")

    @app.post("/_replay/drop")
    def drop():
        conns = replay().hub.all_connections()
        for conn in conns:
            conn.drop()
        return ok(dropped=len(conns))

    @app.post("/_replay/refuse")
    def refuse():
        status, seconds = int(number("status", 503)), number("seconds", 5)
        if not 400 <= status <= 599:
            raise BadRequest("status must be an HTTP error status")
        replay().refuse_status, replay().refuse_until = status, time.monotonic() + seconds
        return ok(status=status, seconds=seconds)

    @app.post("/_replay/silence")
    def silence():
        seconds = number("seconds", 5)
        replay().hub.silent_until = time.monotonic() + seconds
        return ok(seconds=seconds)

    @app.post("/_replay/delay-control")
    def delay_control():
        delay, seconds = number("delay", 1), number("seconds", 5)
        if not 0 <= delay <= 60:
            raise BadRequest("delay must be 0 to 60 seconds")
        replay().hub.delay, replay().hub.delay_until = delay, time.monotonic() + seconds
        return ok(delay=delay, seconds=seconds)

    @app.post("/_replay/shutdown-event")
    def shutdown_event():
        event = {"e": "serverShutdown", "E": replay().market.server_time()}
        return ok(sent=replay().hub.broadcast("!serverShutdown", event))

    @app.post("/_replay/speed")
    def speed():
        x = number("x", 1)
        if x <= 0:
            raise BadRequest("x must be positive")
        replay().market.clock.set_speed(x)
        replay().player.wake()
        return ok(speed=replay().market.clock.speed)

    @app.get("/_replay/stats")
    def stats():
        market = replay().market
        return Response(dumps({
            **replay().hub.stats(),
            "speed": market.clock.speed,
            "clock": {s: market.now(s) for s in market.tapes},
            "refusing": replay().refusing(),
        }), mimetype="application/json")


class ReplayServer:
    """The replay exchange on 127.0.0.1 (or `host`), served by werkzeug's
    threaded server in a named thread. `port=0` picks a free port; `.url`
    is the base for both REST (http://) and, with ws://, WebSockets."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, **options):
        self.app = create_replay_app(**options)
        self.replay: Replay = self.app.extensions["replay"]
        self._server = make_server(host, port, self.app, threaded=True)
        self.host, self.port = host, self._server.server_port
        self.url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="replay-http", daemon=True)

    def start(self) -> "ReplayServer":
        self.replay.player.start()
        self._thread.start()
        log.info("replay exchange listening on %s (speed %gx, symbols %s)", self.url,
                 self.replay.market.clock.speed, ", ".join(self.replay.market.tapes))
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, close every connection (close frame, then the
        socket), and wait for every thread this server started."""
        self.replay.player.stop(timeout)
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout)
        conns = self.replay.hub.all_connections()
        for conn in conns:
            conn.close_soon(GOING_AWAY, "server stopping")
        deadline = time.monotonic() + timeout
        grace = time.monotonic() + min(1.0, timeout)      # for the close frames to go out
        while self.replay.hub.all_connections() and time.monotonic() < grace:
            time.sleep(0.01)
        # Clients that do not answer the close frame would hold their
        # threads in a blocking read: cut them.
        for conn in conns:
            conn.drop()
        for conn in conns:
            for thread in (conn.handler, conn.ws.thread):
                thread.join(max(0.0, deadline - time.monotonic()))
        self._server.server_close()

    def __enter__(self) -> "ReplayServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
