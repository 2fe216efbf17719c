"""WebSocket connections of the replay exchange and the hub that fans frames
out to them.

The clock thread never touches a socket: it appends each frame to the
bounded outbox of every subscribed connection and wakes that connection's
handler thread (the flask-sock request thread), which does all sending for
its connection: frames, control replies and pings. A client that lets its
outbox fill up is disconnected rather than allowed to stall the replay.

Pings are sent here rather than by simple-websocket's `ping_interval`
option so that a silenced server (POST /_replay/silence) stops pinging too.
Abrupt drops shut the TCP socket down under simple-websocket's reader
thread, which then ends the connection without a close frame.

Binance's limit of 5 incoming messages per second counts pings and pongs
too; simple-websocket answers those itself, so only text messages are
counted here. Going over it ends the connection with close code 1008.
"""
from __future__ import annotations

import itertools
import logging
import queue
import socket
import threading
import time
from collections import deque

from simple_websocket import ConnectionClosed
from wsproto.events import Ping

from app.candles import dumps

from . import protocol

log = logging.getLogger(__name__)

MESSAGES_PER_SECOND = 5          # Binance's limit on incoming messages
OUTBOX_FRAMES = 10_000
POLICY_VIOLATION = 1008
GOING_AWAY = 1001


class Connection:
    _ids = itertools.count(1)

    def __init__(self, hub: "Hub", ws, combined: bool, streams: list[str]):
        self.id = next(self._ids)
        self.hub = hub
        self.ws = ws
        self.combined = combined
        self.streams: list[str] = []         # in subscription order, as LIST_SUBSCRIPTIONS reports
        self.outbox: queue.Queue[str] = queue.Queue(OUTBOX_FRAMES)
        self.opened = time.monotonic()
        self.handler = threading.current_thread()
        self.received: deque[float] = deque()
        self.requests: deque[tuple[float, str]] = deque()   # (when to handle, text), in arrival order
        self._close_with: tuple[int, str] | None = None
        hub.subscribe(self, streams)

    def push(self, text: str) -> None:
        """Queue a frame (any thread); never blocks."""
        try:
            self.outbox.put_nowait(text)
        except queue.Full:
            self.close_soon(POLICY_VIOLATION, "client too slow")
        self.ws.event.set()

    def close_soon(self, code: int, reason: str) -> None:
        """Ask the handler thread to send a close frame and end (any thread)."""
        self._close_with = self._close_with or (code, reason)
        self.ws.event.set()

    def drop(self) -> None:
        """Cut the TCP connection without a close frame (any thread)."""
        try:
            self.ws.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def serve(self) -> None:
        """The handler thread's loop, until the connection ends."""
        hub = self.hub
        next_ping = time.monotonic() + hub.ping_interval
        try:
            while self.ws.connected:
                now = time.monotonic()
                if hub.max_age and now - self.opened > hub.max_age:
                    self.close_soon(GOING_AWAY, "connection age limit")
                if self._close_with:
                    self.ws.close(*self._close_with)
                    return
                self._send_outbox()
                self._handle_incoming()
                if now >= next_ping:
                    if not hub.silenced:
                        self.ws.sock.send(self.ws.ws.send(Ping()))
                    next_ping = now + hub.ping_interval
                wait = next_ping - now
                if self.requests:
                    wait = min(wait, self.requests[0][0] - now)
                if hub.max_age:
                    wait = min(wait, self.opened + hub.max_age - now)
                if self.ws.event.wait(max(0.0, min(wait, 1.0))):
                    self.ws.event.clear()
        except (ConnectionClosed, OSError):
            pass

    def _send_outbox(self) -> None:
        while True:
            try:
                text = self.outbox.get_nowait()
            except queue.Empty:
                return
            self.ws.send(text)
            self.hub.count_sent()

    def _handle_incoming(self) -> None:
        while (text := self.ws.receive(timeout=0)) is not None:
            now = time.monotonic()
            self.received.append(now)
            while self.received and now - self.received[0] > 1.0:
                self.received.popleft()
            if len(self.received) > MESSAGES_PER_SECOND:
                log.info("connection %d: over %d messages/s; disconnecting", self.id, MESSAGES_PER_SECOND)
                self.close_soon(POLICY_VIOLATION, "Too many requests")
                return
            # A delayed request holds back the ones after it, as a slow link would.
            due = max(now + self.hub.control_delay(), self.requests[-1][0] if self.requests else 0.0)
            self.requests.append((due, text if isinstance(text, str) else text.decode("utf-8", "replace")))
        while self.requests and self.requests[0][0] <= time.monotonic():
            reply = self.hub.handle(self, self.requests.popleft()[1])
            if not self.hub.silenced:
                self.ws.send(dumps(reply))


class Hub:
    """Every open connection, who follows which stream, and the faults the
    tests inject."""

    def __init__(self, ping_interval: float, max_age: float | None):
        self.ping_interval = ping_interval
        self.max_age = max_age
        self.lock = threading.Lock()
        self.connections: set[Connection] = set()
        self.followers: dict[str, set[Connection]] = {}
        self.accepted = 0
        self.frames_sent = 0
        self.silent_until = 0.0
        self.delay_until = 0.0       # control messages arriving before then are handled late
        self.delay = 0.0

    @property
    def silenced(self) -> bool:
        return time.monotonic() < self.silent_until

    def control_delay(self) -> float:
        return self.delay if time.monotonic() < self.delay_until else 0.0

    def count_sent(self) -> None:
        with self.lock:
            self.frames_sent += 1

    def open(self, ws, combined: bool, streams: list[str]) -> Connection:
        conn = Connection(self, ws, combined, streams)
        with self.lock:
            self.connections.add(conn)
            self.accepted += 1
        return conn

    def close(self, conn: Connection) -> None:
        with self.lock:
            self.connections.discard(conn)
            for stream in conn.streams:
                self._unfollow(conn, stream)

    def subscribe(self, conn: Connection, streams: list[str]) -> None:
        with self.lock:
            for stream in streams:
                if stream not in conn.streams:
                    conn.streams.append(stream)
                    self.followers.setdefault(stream, set()).add(conn)

    def unsubscribe(self, conn: Connection, streams: list[str]) -> None:
        with self.lock:
            for stream in streams:
                if stream in conn.streams:
                    conn.streams.remove(stream)
                    self._unfollow(conn, stream)

    def _unfollow(self, conn: Connection, stream: str) -> None:
        followers = self.followers.get(stream)
        if followers is not None:
            followers.discard(conn)
            if not followers:
                del self.followers[stream]

    def followed(self) -> list[str]:
        with self.lock:
            return list(self.followers)

    def publish(self, stream: str, raw: str, combined: str) -> None:
        if self.silenced:
            return
        with self.lock:
            followers = list(self.followers.get(stream, ()))
        for conn in followers:
            conn.push(combined if conn.combined else raw)

    def broadcast(self, stream: str, event: dict) -> int:
        """Send one event to every connection, wrapped for combined ones."""
        raw = dumps(event)
        combined = dumps({"stream": stream, "data": event})
        with self.lock:
            conns = list(self.connections)
        for conn in conns:
            conn.push(combined if conn.combined else raw)
        return len(conns)

    def handle(self, conn: Connection, text: str) -> dict:
        """One control message -> Binance's reply."""
        try:
            req = protocol.parse(text)
        except protocol.RequestError as exc:
            return exc.reply()
        if req.method == "SUBSCRIBE":
            with self.lock:
                total = len(set(conn.streams) | set(req.params))
            if total > protocol.MAX_STREAMS:
                return protocol.RequestError(2, "Invalid request: too many streams", req.id).reply()
            self.subscribe(conn, req.params)
            return {"result": None, "id": req.id}
        if req.method == "UNSUBSCRIBE":
            self.unsubscribe(conn, req.params)
            return {"result": None, "id": req.id}
        if req.method == "LIST_SUBSCRIPTIONS":
            with self.lock:
                return {"result": list(conn.streams), "id": req.id}
        if req.method == "SET_PROPERTY":
            conn.combined = req.params[1]
            return {"result": None, "id": req.id}
        return {"result": conn.combined, "id": req.id}       # GET_PROPERTY

    def all_connections(self) -> list[Connection]:
        with self.lock:
            return list(self.connections)

    def stats(self) -> dict:
        with self.lock:
            return {
                "connections": len(self.connections),
                "connections_accepted": self.accepted,
                "frames_sent": self.frames_sent,
                "subscriptions": {s: len(c) for s, c in sorted(self.followers.items())},
                "silenced": self.silenced,
            }
