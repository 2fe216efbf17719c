"""WebSocket clients of /ws/price: the hub that knows them all and the
session loop each one runs in its own (gunicorn worker) thread.

A session sleeps on its connection's event, which wakes it for two reasons:
simple-websocket's reader thread got a message from the client, or the
dispatcher appended updates to the shared log (at most once per tick). On
each wake-up the session sends everything it is owed in one sendall.

Only one thread may write to a socket, but simple-websocket's reader thread
writes too (pongs, close replies, pings). `_LockedSocket` puts one lock in
front of every write, and our own sends never block forever: a client that
stops reading is dropped after WS_SEND_TIMEOUT.
"""
import json
import logging
import select
import socket
import threading
import time

from simple_websocket import ConnectionClosed

from .candles import dumps, normalize_symbol, parse_stream_name
from .prices import PriceBook
from .rates import RateCounter
from .updates import UpdateLog, text_frame

log = logging.getLogger(__name__)

GOING_AWAY = 1001
POLICY_VIOLATION = 1008
TRY_AGAIN_LATER = 1013
# Kernel send buffer per client: bounds kernel memory per connection and
# lets a client that stopped reading be noticed in seconds, not megabytes.
SEND_BUFFER_BYTES = 256 * 1024
MAX_BATCH_INTERVAL = 10.0


class _LockedSocket:
    """Proxy for the connection's socket that serialises writes."""

    def __init__(self, sock):
        self._sock = sock
        self.lock = threading.Lock()

    def send(self, data, *flags):
        with self.lock:
            self._sock.sendall(data, *flags)
            return len(data)

    def sendall(self, data, *flags):
        with self.lock:
            self._sock.sendall(data, *flags)

    def __getattr__(self, name):
        return getattr(self._sock, name)


class ClientHub:
    def __init__(self, updates: UpdateLog, prices: PriceBook, config):
        self.updates = updates
        self.prices = prices
        self.max_clients = config["WS_MAX_CLIENTS"]
        self.send_timeout = config["WS_SEND_TIMEOUT"]
        self.max_streams = config["WS_MAX_STREAMS_PER_CLIENT"]
        self.max_rate = config["WS_MAX_MESSAGES_PER_SECOND"]
        # Sequence numbers restart with the process; the epoch tells a
        # resuming client whether its numbers still mean anything.
        self.epoch = str(int(time.time() * 1000))
        self.shutting_down = False
        self._lock = threading.Lock()
        self._sessions: set["ClientSession"] = set()
        self.messages_sent = RateCounter()
        self.frames_sent = RateCounter()
        self.connected_total = 0
        self.rejected_full = 0
        self.dropped_stuck = 0
        self.resynced = 0
        self.refused_messages = 0
        self.resumed = 0
        self.gaps = 0

    def register(self, session: "ClientSession") -> bool:
        with self._lock:
            if self.shutting_down or len(self._sessions) >= self.max_clients:
                self.rejected_full += not self.shutting_down
                return False
            self._sessions.add(session)
            self.connected_total += 1
            return True

    def unregister(self, session: "ClientSession") -> None:
        with self._lock:
            self._sessions.discard(session)

    def wake_all(self) -> None:
        with self._lock:
            sessions = list(self._sessions)
        for s in sessions:
            s.wake()

    def close_all(self, timeout: float = 5.0) -> None:
        """Tell every client we are going away (1001) and wait for them."""
        self.shutting_down = True
        self.wake_all()
        deadline = time.monotonic() + timeout
        while self.clients and time.monotonic() < deadline:
            time.sleep(0.05)

    @property
    def clients(self) -> int:
        with self._lock:
            return len(self._sessions)

    def count(self, counter: str) -> None:
        with self._lock:
            setattr(self, counter, getattr(self, counter) + 1)

    def stats(self) -> dict:
        return {
            "clients": self.clients,
            "max_clients": self.max_clients,
            "epoch": self.epoch,
            "connected_total": self.connected_total,
            "rejected_full": self.rejected_full,
            "dropped_slow": self.dropped_stuck,
            "resynced_lagging": self.resynced,
            "refused_messages": self.refused_messages,
            "resumed": self.resumed,
            "resume_gaps": self.gaps,
            "messages_sent": self.messages_sent.total,
            "messages_sent_per_second": round(self.messages_sent.rate(), 1),
            "frames_sent": self.frames_sent.total,
        }


class ClientError(ValueError):
    """A client message we refuse; the text goes back to the client."""


class ClientSession:
    def __init__(self, hub: ClientHub, ws, args):
        self.hub = hub
        self.ws = ws
        # Which streams this client wants: include=None means all of them.
        self.include: set | None = None
        self.exclude: set = set()
        self._wants: dict[tuple[str, str], bool] = {}
        self.batch_interval = self._parse_batch(args.get("batch"))
        if args.get("symbols"):
            self._set_include({self._parse_target(t) for t in args["symbols"].split(",") if t})
        self.resume = self._parse_resume(args.get("epoch"), args.get("last_seq"))
        self._skip: dict[tuple[str, str], int] = {}   # resume: stream -> last seq the client has
        self._tokens = self.hub.max_rate
        self._tokens_at = time.monotonic()

    # -- the loop ---------------------------------------------------------
    def run(self) -> None:
        self.ws.sock = _LockedSocket(self.ws.sock)
        try:
            self.ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        except OSError:
            pass
        if not self.hub.register(self):
            self.ws.close(TRY_AGAIN_LATER, "too many clients, try again later")
            return
        try:
            self._serve()
        except ConnectionClosed:
            pass
        finally:
            self.hub.unregister(self)

    def wake(self) -> None:
        self.ws.event.set()

    def _serve(self) -> None:
        if self.resume is not None:
            cursor = self._start_resume(*self.resume)
        else:
            cursor = self.hub.updates.next_seq  # before the snapshot: never miss an update
            self._send_snapshot("connect")
        pending: list = []                   # batch mode only
        next_batch = time.monotonic() + (self.batch_interval or 0)
        while True:
            timeout = max(0.0, next_batch - time.monotonic()) if pending else 30.0
            self.ws.event.wait(timeout)
            self.ws.event.clear()
            if self.hub.shutting_down:
                self.ws.close(GOING_AWAY, "server shutting down")
                return
            self._handle_inbound()
            if not self.ws.connected:
                return
            read = self.hub.updates.read(cursor)
            if read is None:  # fell off the end of the shared log
                self.hub.count("resynced")
                cursor = self.hub.updates.next_seq
                pending.clear()
                self._send_snapshot("lagged")
                continue
            entries, cursor = read
            wanted = [e for e in entries if self._wanted(e.key)]
            if self._skip:
                wanted = [e for e in wanted if e.stream_seq > self._skip.get(e.key, 0)]
            if not self.batch_interval:
                if wanted:
                    self._send_raw(b"".join(e.frame for e in wanted), len(wanted), len(wanted))
                continue
            pending.extend(wanted)
            if pending and time.monotonic() >= next_batch:
                payload = b"[" + b",".join(e.payload for e in pending) + b"]"
                self._send_raw(text_frame(payload), len(pending), 1)
                pending.clear()
                next_batch = time.monotonic() + self.batch_interval

    def _send_raw(self, data: bytes, messages: int, frames: int) -> None:
        """Write pre-built frames, giving up on a client that stops reading."""
        sock: _LockedSocket = self.ws.sock
        view = memoryview(data)
        deadline = time.monotonic() + self.hub.send_timeout
        with sock.lock:
            raw = sock._sock
            while view:
                try:
                    view = view[raw.send(view, socket.MSG_DONTWAIT):]
                except BlockingIOError:
                    left = deadline - time.monotonic()
                    if left <= 0 or not select.select([], [raw], [], left)[1]:
                        self.hub.count("dropped_stuck")
                        log.info("dropping a WebSocket client that stopped reading")
                        self.ws.connected = False
                        raw.shutdown(socket.SHUT_RDWR)
                        raise ConnectionClosed(POLICY_VIOLATION, "client too slow")
                except OSError as exc:
                    self.ws.connected = False
                    raise ConnectionClosed(GOING_AWAY, str(exc)) from exc
        self.hub.messages_sent.add(messages)
        self.hub.frames_sent.add(frames)

    def _send_json(self, obj) -> None:
        self._send_raw(text_frame(dumps(obj).encode()), 1, 1)

    def _send_snapshot(self, reason: str) -> None:
        self._send_json({"type": "snapshot", "reason": reason, "epoch": self.hub.epoch,
                         "data": self._snapshot(lambda key: True)})

    def _snapshot(self, include) -> list[dict]:
        out = []
        for candle, seq in self.hub.prices.snapshot():
            if self._wanted(candle.key) and include(candle.key):
                out.append({**candle.to_dict(), "seq": seq})
        return out

    def _start_resume(self, epoch: str, last: dict) -> int:
        """Send what the client missed from the shared log, or tell it where
        the gaps are; returns the cursor to continue from."""
        cursor = self.hub.updates.next_seq
        if epoch != self.hub.epoch:
            self.hub.count("gaps")
            self._send_json({"type": "gap", "reason": "server restarted", "streams": sorted(map(_label, last)),
                             "message": "sequence numbers restarted; reload from /history"})
            self._send_snapshot("resume")
            return cursor
        start = max(0, cursor - self.hub.updates.capacity + 1)
        read = self.hub.updates.read(start, limit=self.hub.updates.capacity)
        entries = read[0] if read else []
        first_seen: dict = {}
        for e in entries:
            if e.key in last and e.stream_seq > last[e.key]:
                first_seen.setdefault(e.key, e)
        gaps = [k for k in last if k in first_seen and first_seen[k].stream_seq > last[k] + 1]
        for key in gaps:
            self.hub.count("gaps")
            self._send_json({"type": "gap", "reason": "history exceeded", "stream": _label(key),
                             "from_seq": last[key] + 1, "to_seq": first_seen[key].stream_seq - 1,
                             "message": "these updates are no longer held; reload from /history"})
        self.hub.count("resumed")
        self._skip = dict(last)
        return min((e.seq for e in first_seen.values()), default=cursor)

    @staticmethod
    def _parse_resume(epoch, last_seq) -> tuple[str, dict] | None:
        """?epoch=E&last_seq=BTCUSDT@1m:1234,ETHUSDT@1m:99"""
        if not last_seq:
            return None
        last = {}
        for item in last_seq.split(","):
            target, _, seq = item.rpartition(":")
            key = ClientSession._parse_target(target)
            if isinstance(key, str) or not seq.isdigit():
                raise ClientError(f"invalid last_seq item {item!r}: expected SYMBOL@INTERVAL:SEQ")
            last[key] = int(seq)
        return (epoch or "", last)

    def _allow_message(self) -> bool:
        """Token bucket: WS_MAX_MESSAGES_PER_SECOND, bursts of the same size."""
        now = time.monotonic()
        self._tokens = min(self.hub.max_rate, self._tokens + (now - self._tokens_at) * self.hub.max_rate)
        self._tokens_at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def _set_include(self, include: set) -> None:
        if len(include) > self.hub.max_streams:
            raise ClientError(f"too many subscriptions: at most {self.hub.max_streams} per client")
        self.include = include

    # -- what the client wants ---------------------------------------------
    def _wanted(self, key: tuple[str, str]) -> bool:
        w = self._wants.get(key)
        if w is None:
            w = (key not in self.exclude and key[0] not in self.exclude
                 and (self.include is None or key in self.include or key[0] in self.include))
            self._wants[key] = w
        return w

    @staticmethod
    def _parse_batch(value: str | None) -> float:
        if not value:
            return 0.0
        v = value.strip().lower()
        try:
            seconds = float(v[:-2]) / 1000 if v.endswith("ms") else float(v.rstrip("s"))
        except ValueError:
            seconds = -1
        if not 0 < seconds <= MAX_BATCH_INTERVAL:
            raise ClientError(f"invalid batch {value!r}: expected e.g. 50ms (at most {MAX_BATCH_INTERVAL:g}s)")
        return seconds

    @staticmethod
    def _parse_target(text) -> str | tuple[str, str]:
        """'BTCUSDT' (every interval), 'BTCUSDT@1m' or 'btcusdt@kline_1m'."""
        if not isinstance(text, str):
            raise ClientError("symbols must be strings")
        if "@kline_" in text:
            return parse_stream_name(text)
        sym, _, interval = text.partition("@")
        if interval:
            return parse_stream_name(f"{sym}@kline_{interval}")
        return normalize_symbol(sym)

    def _handle_inbound(self) -> None:
        while (msg := self.ws.receive(timeout=0)) is not None:
            if not self._allow_message():
                self.hub.count("refused_messages")
                self._send_json({"type": "error", "message":
                                 f"rate limit: at most {self.hub.max_rate:g} messages per second; message ignored"})
                continue
            try:
                reply = self._handle_message(msg)
            except (ClientError, ValueError) as exc:
                reply = {"type": "error", "message": str(exc)}
            if reply:
                self._send_json(reply)

    def _handle_message(self, msg) -> dict | None:
        if isinstance(msg, bytes):
            raise ClientError("binary messages are not supported; send JSON text")
        text = msg.strip()
        if text.startswith(("subscribe:", "unsubscribe:")):  # the seed's text protocol
            action, _, target = text.partition(":")
            return self._change(action, [target])
        try:
            body = json.loads(text)
        except ValueError:
            raise ClientError("expected JSON like {\"action\": \"subscribe\", \"symbols\": [\"BTCUSDT\"]}") from None
        if not isinstance(body, dict):
            raise ClientError("expected a JSON object")
        action = body.get("action")
        if action == "ping":
            return {"type": "pong", "time": int(time.time() * 1000)}
        if action in ("subscribe", "unsubscribe"):
            symbols = body.get("symbols")
            if not isinstance(symbols, list) or not symbols:
                raise ClientError("'symbols' must be a non-empty list")
            return self._change(action, symbols)
        raise ClientError(f"unknown action {action!r}: use subscribe, unsubscribe or ping")

    def _change(self, action: str, targets: list) -> dict:
        parsed = [self._parse_target(t) for t in targets]  # all valid, or change nothing
        if action == "subscribe":
            before = {c.key for c, _ in self.hub.prices.snapshot() if self._wanted(c.key)}
            self._set_include(set(parsed) if self.include is None else self.include | set(parsed))
            self.exclude -= set(parsed)
        else:
            if self.include is None:
                self.exclude |= set(parsed)
            else:
                self.include -= set(parsed)
        self._wants.clear()
        reply = {"type": "subscriptions", "action": action,
                 "symbols": None if self.include is None else sorted(map(_label, self.include)),
                 "excluded": sorted(map(_label, self.exclude))}
        if action == "subscribe":
            self._send_json(reply)
            return {"type": "snapshot", "reason": "subscribe", "epoch": self.hub.epoch,
                    "data": self._snapshot(lambda key: key not in before)}
        return reply


def _label(target) -> str:
    return target if isinstance(target, str) else f"{target[0]}@{target[1]}"
