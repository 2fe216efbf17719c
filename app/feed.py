"""The Binance kline feed: connections to the combined-stream endpoint, each
in its own thread, that put parsed candles on the ingest queue.

We run our own reconnect loop on websocket-client's low-level WebSocket
rather than WebSocketApp(reconnect=...): its built-in reconnect waits a fixed
delay and hides closes, and we want every disconnect observed, counted and
backed off with jitter. The low-level socket answers Binance's pings for us
(`recv_data` pongs automatically); Binance pings every 20 s, so "no frame of
any kind for FEED_SILENCE_TIMEOUT" is our dead-connection test.

Binance limits that shape this module: 5 incoming messages per second per
connection (pongs included, so we send at most 4 control messages a second),
1024 streams per connection (we open another connection beyond that, and
send UNSUBSCRIBEs before SUBSCRIBEs so a full connection has room), and a
24 h connection lifetime (we rotate before it).

Binance refuses a whole SUBSCRIBE when one of its streams is bad: the
refused streams are asked for again in halves, so that only the bad stream
ends up refused.
"""
import json
import logging
import queue
import random
import threading
import time

import websocket

from .candles import InvalidCandle, candle_from_kline_event
from .retry import retry_after_seconds

log = logging.getLogger(__name__)

CONTROL_SPACING = 0.25      # seconds between control messages: 4/s < Binance's 5/s
PARAMS_PER_MESSAGE = 200    # streams per SUBSCRIBE/UNSUBSCRIBE, keeps frames small
HEALTHY_AFTER = 60.0        # a connection this old resets the backoff
READ_TICK = 0.25            # how often the read loop looks up from recv


class FeedConnection:
    """One upstream connection and the streams assigned to it."""

    def __init__(self, feed: "BinanceFeed", number: int):
        self.feed = feed
        self.name = f"feed-{number}"
        self.desired: set[str] = set()      # guarded by feed.lock
        self.active: set[str] = set()       # confirmed by Binance on this connection
        self.inflight: dict[int, tuple[str, list[str], float]] = {}   # id -> (method, params, sent at)
        self.errors: dict[str, str] = {}    # stream -> Binance's error for it
        # Streams of refused SUBSCRIBEs, to be asked for in these smaller groups.
        self.retry_groups: list[list[str]] = []
        self.ws: websocket.WebSocket | None = None
        self.connected = False
        self.connected_at = 0.0
        self.last_frame_at = 0.0
        self.reconnects = 0
        self.messages = 0
        self.parse_errors = 0
        self.unexpected = 0
        self.last_error = ""
        self._next_id = 1
        self._last_control = 0.0
        self._rotate = False
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)

    # -- lifecycle ----------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        backoff = self.feed.backoff_initial
        while not self.feed.stopping.is_set():
            retry_after = None
            try:
                self._connect()
                self._read_loop()
            except websocket.WebSocketBadStatusException as exc:
                retry_after = self._handshake_refused(exc)
            except Exception as exc:  # any failure is a disconnect, never a dead thread
                if self.feed.stopping.is_set():
                    break
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("%s: connection error: %s", self.name, self.last_error)
            lived = time.monotonic() - self.connected_at if self.connected_at else 0.0
            self._disconnect()
            if self.feed.stopping.is_set():
                break
            self.reconnects += 1
            if self._rotate:
                self._rotate = False
                backoff, delay = self.feed.backoff_initial, 0.0
            else:
                if lived >= HEALTHY_AFTER:
                    backoff = self.feed.backoff_initial
                # full jitter keeps many servers from reconnecting in lock step
                delay = retry_after if retry_after is not None else random.uniform(backoff / 2, backoff)
                backoff = min(backoff * 2, self.feed.backoff_max)
            log.info("%s: reconnecting in %.1fs (reconnect #%d)", self.name, delay, self.reconnects)
            self.feed.stopping.wait(delay)
        self._disconnect()

    def _handshake_refused(self, exc) -> float | None:
        status = exc.status_code
        headers = {k.lower(): v for k, v in (exc.resp_headers or {}).items()}
        self.last_error = f"handshake refused with HTTP {status}"
        if status == 451:
            self.last_error += (" (Binance refuses this region; set BINANCE_WS_URL and"
                                " BINANCE_REST_URL for Binance.US, e.g. wss://stream.binance.us:9443)")
        log.warning("%s: %s", self.name, self.last_error)
        if status in (418, 429):
            retry_after = retry_after_seconds(headers.get("retry-after"))
            # 418 means banned: never hammer
            return self.feed.backoff_max if retry_after is None else max(1.0, retry_after)
        return None

    def _connect(self) -> None:
        url = self.feed.ws_base + "/stream"
        log.info("%s: connecting to %s", self.name, url)
        ws = websocket.WebSocket(enable_multithread=True)
        ws.connect(url, timeout=10)
        ws.settimeout(READ_TICK)
        with self.feed.lock:
            self.ws = ws
            self.active.clear()
            self.inflight.clear()
            self.connected = True
            self.connected_at = self.last_frame_at = time.monotonic()
        log.info("%s: connected; subscribing %d streams", self.name, len(self.desired))

    def _disconnect(self) -> None:
        with self.feed.lock:
            ws, self.ws = self.ws, None
            self.connected = False
            self.active.clear()
            self.inflight.clear()
            self.feed.changed.notify_all()
        if ws is not None:
            try:
                ws.close(timeout=1)
            except Exception:
                pass

    # -- reading --------------------------------------------------------------
    def _read_loop(self) -> None:
        ws = self.ws
        while not self.feed.stopping.is_set():
            self._send_control()
            now = time.monotonic()
            if now - self.connected_at > self.feed.rotate_after:
                log.info("%s: rotating a connection %.0fs old", self.name, now - self.connected_at)
                self._rotate = True
                return
            if now - self.last_frame_at > self.feed.silence_timeout:
                self.last_error = f"no data for {now - self.last_frame_at:.0f}s"
                log.warning("%s: %s; reconnecting", self.name, self.last_error)
                return
            try:
                opcode, data = ws.recv_data(control_frame=True)
            except websocket.WebSocketTimeoutException:
                continue
            self.last_frame_at = time.monotonic()
            if opcode == websocket.ABNF.OPCODE_TEXT:
                if self._handle_text(data) == "shutdown":
                    self._rotate = True
                    return
            elif opcode == websocket.ABNF.OPCODE_CLOSE:
                code = int.from_bytes(data[:2], "big") if len(data) >= 2 else None
                self.last_error = f"closed by server with code {code}"
                log.warning("%s: %s %r", self.name, self.last_error, data[2:])
                return

    def _handle_text(self, data: bytes) -> str | None:
        self.messages += 1
        try:
            msg = json.loads(data)
            if not isinstance(msg, dict):
                raise ValueError("not a JSON object")
            if "id" in msg and ("result" in msg or "error" in msg or "code" in msg):
                self._handle_reply(msg)
                return None
            event = msg.get("data", msg)
            kind = event.get("e") if isinstance(event, dict) else None
            if kind == "kline":
                self.feed.ingest.put((candle_from_kline_event(event), "live"))
            elif kind == "serverShutdown":
                log.info("%s: Binance announced a server shutdown; rotating", self.name)
                return "shutdown"
            else:
                self.unexpected += 1
                log.debug("%s: ignoring unexpected frame %.200r", self.name, data)
        except (ValueError, InvalidCandle, AttributeError) as exc:
            self.parse_errors += 1
            log.warning("%s: malformed frame (%s): %.200r", self.name, exc, data)
        return None

    # -- control messages -----------------------------------------------------
    def _send_control(self) -> None:
        """Send at most one SUBSCRIBE or UNSUBSCRIBE, respecting the rate limit."""
        now = time.monotonic()
        if now - self._last_control < CONTROL_SPACING:
            return
        with self.feed.lock:
            # Binance answers at once. A reply that never came was lost, and a
            # lost SUBSCRIBE reply would leave the stream unconfirmed, so never
            # backfilled, while its data flows: ask again. Binance may have
            # subscribed those no longer wanted: count them active, so they
            # are unsubscribed.
            for req_id, (method, params, sent) in list(self.inflight.items()):
                if now - sent > self.feed.silence_timeout:
                    del self.inflight[req_id]
                    if method == "SUBSCRIBE":
                        self.active.update(s for s in params if s not in self.desired)
                    log.warning("%s: no reply to %s (id %d) in %.0fs; asking again",
                                self.name, method, req_id, now - sent)
            request = self._next_request()
            if request is None:
                return
            method, params = request
            req_id = self._next_id
            self._next_id += 1
            self.inflight[req_id] = (method, params, now)
        self._last_control = time.monotonic()
        self.ws.send(json.dumps({"method": method, "params": params, "id": req_id}))
        log.debug("%s: %s %s (id %d)", self.name, method, params, req_id)

    def _next_request(self) -> tuple[str, list[str]] | None:
        """The next control message (under feed.lock). UNSUBSCRIBEs first:
        Binance handles a connection's messages in order, so a stream being
        removed frees its place for a SUBSCRIBE sent after it, and only then
        (a full connection would otherwise get "too many streams")."""
        subscribing = {s for m, params, _ in self.inflight.values() if m == "SUBSCRIBE" for s in params}
        unsubscribing = {s for m, params, _ in self.inflight.values() if m == "UNSUBSCRIBE" for s in params}
        remove = sorted(self.active - self.desired - subscribing - unsubscribing)
        if remove:
            return "UNSUBSCRIBE", remove[:PARAMS_PER_MESSAGE]
        room = self.feed.per_connection - len((self.active | subscribing) - unsubscribing)
        wanted = self.desired - self.active - subscribing - unsubscribing
        if room <= 0 or not wanted:
            return None
        while self.retry_groups:
            group = [s for s in self.retry_groups[0] if s in wanted]
            if group:
                self.retry_groups[0] = group[room:]
                if not self.retry_groups[0]:
                    self.retry_groups.pop(0)
                return "SUBSCRIBE", group[:room]
            self.retry_groups.pop(0)
        add = sorted(wanted)
        return "SUBSCRIBE", add[:min(room, PARAMS_PER_MESSAGE)]

    def _handle_reply(self, msg: dict) -> None:
        with self.feed.lock:
            method, params, _ = self.inflight.pop(msg["id"], (None, [], 0.0))
            if method is None:
                self.unexpected += 1
                return
            error = msg.get("error") or (msg if "code" in msg else None)
            if error:
                text = f"Binance refused {method}: {error.get('msg', error) if isinstance(error, dict) else error}"
                if method == "SUBSCRIBE" and len(params) > 1:
                    # One bad stream refuses them all: find it by halves.
                    log.warning("%s: %s for %d streams; asking again in halves", self.name, text, len(params))
                    half = len(params) // 2
                    self.retry_groups[:0] = [params[:half], params[half:]]
                else:
                    log.warning("%s: %s for %s", self.name, text, params)
                    for s in params:
                        self.errors[s] = text
                    if method == "SUBSCRIBE":  # do not retry a refused stream forever
                        self.desired.difference_update(params)
            elif method == "SUBSCRIBE":
                self.active.update(params)
                for s in params:
                    self.errors.pop(s, None)
                # Live data flows from here on; what came before is the backfill's
                # job, unless the stream was removed while this was on its way.
                confirmed = [s for s in params if s in self.desired]
                if confirmed and self.feed.on_subscribed:
                    self.feed.on_subscribed(confirmed)
            else:
                self.active.difference_update(params)
            self.feed.changed.notify_all()

    def stats(self) -> dict:
        now = time.monotonic()
        return {
            "name": self.name,
            "connected": self.connected,
            "connected_for_seconds": round(now - self.connected_at, 1) if self.connected else None,
            "seconds_since_last_message": round(now - self.last_frame_at, 1) if self.last_frame_at else None,
            "streams": len(self.desired),
            "active_streams": len(self.active),
            "reconnects": self.reconnects,
            "messages": self.messages,
            "parse_errors": self.parse_errors,
            "unexpected_frames": self.unexpected,
            "last_error": self.last_error,
        }


class StreamLimitError(Exception):
    pass


class BinanceFeed:
    """The set of streams we follow, spread over as many connections as
    Binance's per-connection stream limit requires."""

    def __init__(self, config, ingest: queue.Queue):
        self.ingest = ingest
        self.ws_base = config["BINANCE_WS_URL"]
        self.per_connection = config["FEED_STREAMS_PER_CONNECTION"]
        self.max_streams = config["MAX_STREAMS"]
        self.silence_timeout = config["FEED_SILENCE_TIMEOUT"]
        self.rotate_after = config["FEED_ROTATE_AFTER"]
        self.backoff_initial = config["FEED_BACKOFF_INITIAL"]
        self.backoff_max = config["FEED_BACKOFF_MAX"]
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)   # a reply arrived or a connection dropped
        self.stopping = threading.Event()
        self.started = False
        self.connections: list[FeedConnection] = []
        # Called (from a feed thread) with the streams Binance just confirmed.
        self.on_subscribed = None

    def start(self) -> None:
        self.started = True
        for c in self.connections:
            c.start()

    def stop(self, timeout: float = 5.0) -> None:
        self.stopping.set()
        for c in self.connections:
            if c.ws is not None:
                try:  # wake a recv that is waiting
                    c.ws.sock.shutdown(2)
                except Exception:
                    pass
        deadline = time.monotonic() + timeout
        for c in self.connections:
            c.join(max(0.1, deadline - time.monotonic()))

    def streams(self) -> list[str]:
        with self.lock:
            return sorted(s for c in self.connections for s in c.desired)

    def wants(self, stream: str) -> bool:
        """Is the stream followed (asked for, whether confirmed yet or not)."""
        with self.lock:
            return any(stream in c.desired for c in self.connections)

    def add(self, streams: list[str]) -> None:
        """Follow these streams (idempotent); raises StreamLimitError."""
        with self.lock:
            have = {s for c in self.connections for s in c.desired}
            new = [s for s in dict.fromkeys(streams) if s not in have]
            if len(have) + len(new) > self.max_streams:
                raise StreamLimitError(
                    f"stream limit reached: {len(have)} of {self.max_streams} streams in use")
            for s in new:
                conn = next((c for c in self.connections if len(c.desired) < self.per_connection), None)
                if conn is None:
                    conn = FeedConnection(self, len(self.connections) + 1)
                    self.connections.append(conn)
                    if self.started:
                        conn.start()
                conn.desired.add(s)
                conn.errors.pop(s, None)

    def remove(self, streams: list[str]) -> None:
        with self.lock:
            for c in self.connections:
                c.desired.difference_update(streams)

    def wait_settled(self, streams: list[str], subscribe: bool, timeout: float) -> dict[str, str]:
        """Wait until Binance confirmed (or refused) each stream, or timeout.
        Returns stream -> "active" | "removed" | "pending" | "queued" (sent
        once the connection is up) | Binance's error text."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                result = {s: self._state(s, subscribe) for s in streams}
                left = deadline - time.monotonic()
                if left <= 0 or "pending" not in result.values():
                    return result
                self.changed.wait(left)

    def _state(self, stream: str, subscribe: bool) -> str:
        for c in self.connections:
            if stream in c.errors and stream not in c.desired:
                return c.errors[stream]
            if subscribe and stream in c.desired:
                if stream in c.active:
                    return "active"
                return "pending" if c.connected else "queued"
            # Removed while its SUBSCRIBE was on its way: Binance will
            # subscribe it, and it is gone only after the UNSUBSCRIBE.
            if not subscribe and (stream in c.active or any(
                    m == "SUBSCRIBE" and stream in params for m, params, _ in c.inflight.values())):
                return "pending" if c.connected else "removed"
        return "removed" if not subscribe else "pending"

    @property
    def connected(self) -> bool:
        with self.lock:
            conns = [c for c in self.connections if c.desired]
        return bool(conns) and all(c.connected for c in conns)

    def seconds_since_last_message(self) -> float | None:
        ages = [c.stats()["seconds_since_last_message"] for c in self.connections if c.desired]
        ages = [a for a in ages if a is not None]
        return max(ages) if ages else None

    def stats(self) -> dict:
        conns = [c.stats() for c in self.connections]
        return {
            "connected": self.connected,
            "url": self.ws_base,
            "streams": len(self.streams()),
            "reconnects": sum(c["reconnects"] for c in conns),
            "messages": sum(c["messages"] for c in conns),
            "parse_errors": sum(c["parse_errors"] for c in conns),
            "unexpected_frames": sum(c["unexpected_frames"] for c in conns),
            "seconds_since_last_message": self.seconds_since_last_message(),
            "connections": conns,
        }
