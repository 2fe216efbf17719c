"""WebSocket clients of /ws/price: the hub that knows them all, its one
fan-out thread, and the session of each connection.

Who writes: only the fan-out thread ("ws-fanout") writes to client sockets.
Each update is already a finished frame in the shared log (app/updates.py);
on every tick the fan-out thread hands each client, in one non-blocking
send, every frame it is owed. No thread is woken per client or per message:
on 2 cores that hand-off, not the send, is what limits a thread-per-client
fan-out (measured: about 44k messages/s at 100 clients, with latency
growing without bound; see README, Benchmarks).

Each connection's own threads only read: the gunicorn worker thread that
runs `ClientSession.run` handles the client's messages, and
simple-websocket's reader thread parses frames. What they want to send
(replies, pongs, pings, close frames) goes into the session's outbox, which
the fan-out thread sends in order with the data; `_SessionSocket` is how
simple-websocket's own writes get there.

A client that stops reading keeps its unsent bytes in `pending` (the log
entries after them are not read for it) and is disconnected after
WS_SEND_TIMEOUT; one whose cursor falls off the shared log gets a fresh
snapshot instead of the updates it can no longer have.
"""
import itertools
import logging
import select
import socket
import threading
import time
from collections import deque

from simple_websocket import ConnectionClosed

from .candles import dumps
from .client_protocol import (ClientError, label, parse_batch, parse_message, parse_resume,
                              parse_target)
from .prices import PriceBook
from .rates import RateCounter
from .updates import UpdateLog, text_frame
from .worker import Worker

log = logging.getLogger(__name__)

GOING_AWAY = 1001
POLICY_VIOLATION = 1008
TRY_AGAIN_LATER = 1013
# Kernel send buffer per client: bounds kernel memory per connection and
# lets a client that stopped reading be noticed in seconds, not megabytes.
SEND_BUFFER_BYTES = 256 * 1024
# Log entries handed to one client per turn (~400 kB): what one client may
# hold in memory beyond its kernel buffer, and still 200k updates/s at a 5 ms tick.
READ_LIMIT = 1000
SEND_CHUNKS = 64            # buffers per sendmsg (the kernel takes up to 1024)
FLUSH_TIMEOUT = 2.0         # how long a closing session may take to send its last frames
CLOSE_REPLY_TIMEOUT = 1.0   # how long we wait for the client to answer our close frame


class ClientHub(Worker):
    """The clients, and the fan-out thread that writes to them."""

    def __init__(self, updates: UpdateLog, prices: PriceBook, config):
        super().__init__("ws-fanout")
        self.updates = updates
        self.prices = prices
        self.max_clients = config["WS_MAX_CLIENTS"]
        self.send_timeout = config["WS_SEND_TIMEOUT"]
        self.max_streams = config["WS_MAX_STREAMS_PER_CLIENT"]
        self.max_rate = config["WS_MAX_MESSAGES_PER_SECOND"]
        self.tick = config["WS_TICK_MS"] / 1000
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

    def close_all(self, timeout: float = 5.0) -> None:
        """Tell every client we are going away (1001) and wait for them:
        each session's thread looks at `shutting_down` at least every second."""
        self.shutting_down = True
        deadline = time.monotonic() + timeout
        while self.clients and time.monotonic() < deadline:
            time.sleep(0.05)

    # -- sessions -------------------------------------------------------------
    def register(self, session: "ClientSession") -> bool:
        with self._lock:
            if self.shutting_down or len(self._sessions) >= self.max_clients:
                self.rejected_full += not self.shutting_down
                return False
            self._sessions.add(session)
            self.connected_total += 1
        self.wake()
        return True

    def unregister(self, session: "ClientSession") -> None:
        with self._lock:
            self._sessions.discard(session)

    @property
    def clients(self) -> int:
        with self._lock:
            return len(self._sessions)

    def count(self, counter: str) -> None:
        with self._lock:
            setattr(self, counter, getattr(self, counter) + 1)

    # -- the fan-out thread ---------------------------------------------------
    def _run(self) -> None:
        timeout = None
        while not self._stopping.is_set():
            self._wake.wait(timeout)
            self._wake.clear()
            with self._lock:
                sessions = list(self._sessions)
            now = time.monotonic()
            # One end of the log for the whole turn, so that clients at the
            # same cursor read the same entries and can share their bytes.
            turn = Turn(now, self.updates.next_seq)
            next_turn = float("inf")
            for s in sessions:
                try:
                    next_turn = min(next_turn, s.pump(turn))
                except Exception:  # one broken session must not stop the others' updates
                    log.exception("fan-out to a client failed; disconnecting it")
                    s.abort()
            timeout = None if next_turn == float("inf") else max(self.tick, next_turn - time.monotonic())

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
            "fanout_running": self.alive,
        }


class Turn:
    """One pass of the fan-out thread over every client."""
    __slots__ = ("now", "upto", "shared")

    def __init__(self, now: float, upto: int):
        self.now = now
        self.upto = upto      # log entries before this one are sent this turn
        # (batch interval, cursor) -> ((bytes, messages, frames), new cursor),
        # for the clients that follow every stream
        self.shared: dict = {}


class _SessionSocket:
    """What simple-websocket holds as its socket: reads go to the real
    socket, writes join the session's outbox (so they are sent by the
    fan-out thread, in order with the data frames)."""

    def __init__(self, session: "ClientSession", sock):
        self._session = session
        self._sock = sock

    def send(self, data, *flags):
        self._session.enqueue(bytes(data))
        return len(data)

    sendall = send

    def close(self):
        # simple-websocket's reader closes the socket when the connection
        # ends, e.g. right after queuing its reply to the client's close
        self._session.finish()
        self._sock.close()

    def __getattr__(self, name):
        return getattr(self._sock, name)


class ClientSession:
    def __init__(self, hub: ClientHub, ws, args):
        self.hub = hub
        self.ws = ws
        self.raw = ws.sock
        # Filters, cursor and outbox are shared by this connection's threads
        # and the fan-out thread: `lock` guards them. `wlock` is held by
        # whoever writes to the socket (the fan-out thread, or a closing flush).
        self.lock = threading.Lock()
        self.wlock = threading.Lock()
        self.include: set | None = None     # None: every stream
        self.exclude: set = set()
        self._wants: dict[tuple[str, str], bool] = {}
        self.args = args
        self.batch_interval = 0.0
        self.resume = None
        self.outbox: list[bytes] = []
        self.cursor = 0
        self._skip: dict[tuple[str, str], int] = {}   # resume: stream -> last seq the client has
        self._skip_until = 0                           # ...for log entries before this one
        # fan-out thread only:
        # Unsent bytes, as the chunks they came in: shared frames are sent
        # from the one copy every client holds, never joined per client.
        self.pending: deque[memoryview] = deque()
        self.stalled_since: float | None = None
        self.batch_due = 0.0
        self.dead = False
        self._tokens = self.hub.max_rate
        self._tokens_at = time.monotonic()

    # -- this connection's thread ---------------------------------------------
    def run(self) -> None:
        self.ws.sock = _SessionSocket(self, self.raw)
        try:
            self.raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        except OSError:
            pass
        try:
            self._parse_query(self.args)
        except ClientError as exc:
            self.close(POLICY_VIOLATION, str(exc)[:120])
            return
        with self.lock:
            if self.resume is not None:
                self._start_resume(*self.resume)
            else:
                self.cursor = self.hub.updates.next_seq  # before the snapshot: never miss an update
                self.outbox.append(self._json_frame(self._snapshot_message("connect")))
        try:
            if not self.hub.register(self):
                self.close(TRY_AGAIN_LATER, "too many clients, try again later")
                return
            self._read_loop()
        except ConnectionClosed:
            pass
        finally:
            self.finish()

    def _parse_query(self, args) -> None:
        self.batch_interval = parse_batch(args.get("batch"))
        if args.get("symbols"):
            self._set_include({parse_target(t) for t in args["symbols"].split(",") if t})
        self.resume = parse_resume(args.get("epoch"), args.get("last_seq"))

    def _read_loop(self) -> None:
        while True:
            msg = self.ws.receive(timeout=1.0)
            if self.hub.shutting_down:
                self.close(GOING_AWAY, "server shutting down")
                return
            if self.dead:
                return
            if msg is not None:
                self._handle(msg)

    def _handle(self, msg) -> None:
        if not self._allow_message():
            self.hub.count("refused_messages")
            self.send_json({"type": "error", "message":
                            f"rate limit: at most {self.hub.max_rate:g} messages per second; message ignored"})
            return
        try:
            action, targets = parse_message(msg)
            if action == "ping":
                self.send_json({"type": "pong", "time": int(time.time() * 1000)})
            else:
                self._change(action, targets)
        except ClientError as exc:
            self.send_json({"type": "error", "message": str(exc)})

    def _change(self, action: str, targets: list) -> None:
        with self.lock:
            before = {c.key for c, _ in self.hub.prices.snapshot() if self._wanted(c.key)}
            if action == "subscribe":
                self._set_include(set(targets) if self.include is None else self.include | set(targets))
                self.exclude -= set(targets)
            elif self.include is None:
                self.exclude |= set(targets)
            else:
                self.include -= set(targets)
            self._wants.clear()
            reply = {"type": "subscriptions", "action": action,
                     "symbols": None if self.include is None else sorted(map(label, self.include)),
                     "excluded": sorted(map(label, self.exclude))}
            self.outbox.append(self._json_frame(reply))
            if action == "subscribe":
                fresh = self._snapshot_message("subscribe", lambda key: key not in before)
                self.outbox.append(self._json_frame(fresh))
        self.hub.wake()

    def _start_resume(self, epoch: str, last: dict) -> None:
        """Queue what the client missed from the shared log, or tell it where
        the gaps are (called with `lock` held, before registering)."""
        self.cursor = self.hub.updates.next_seq
        if epoch != self.hub.epoch:
            self.hub.count("gaps")
            self.outbox.append(self._json_frame({
                "type": "gap", "reason": "server restarted", "streams": sorted(map(label, last)),
                "message": "sequence numbers restarted; reload from /history"}))
            self.outbox.append(self._json_frame(self._snapshot_message("resume")))
            return
        start = max(0, self.cursor - self.hub.updates.capacity + 1)
        read = self.hub.updates.read(start, limit=self.hub.updates.capacity)
        first_seen: dict = {}
        for e in read[0] if read else []:
            if e.key in last and e.stream_seq > last[e.key]:
                first_seen.setdefault(e.key, e)
        current = {c.key: seq for c, seq in self.hub.prices.snapshot()}
        for key, seq in last.items():
            # The first update held after the client's last one; if none is
            # held, the stream's latest tells whether any were missed.
            held = first_seen[key].stream_seq if key in first_seen else current.get(key, 0) + 1
            if held > seq + 1:
                self.hub.count("gaps")
                self.outbox.append(self._json_frame({
                    "type": "gap", "reason": "history exceeded", "stream": label(key),
                    "from_seq": seq + 1, "to_seq": held - 1,
                    "message": "these updates are no longer held; reload from /history"}))
        self.hub.count("resumed")
        self._skip = dict(last)
        self._skip_until = self.cursor
        self.cursor = min((e.seq for e in first_seen.values()), default=self.cursor)

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

    def send_json(self, obj) -> None:
        self.enqueue(self._json_frame(obj))

    def enqueue(self, frame: bytes) -> None:
        with self.lock:
            self.outbox.append(frame)
        self.hub.wake()

    def close(self, code: int, reason: str) -> None:
        """Send a close frame and make sure it left before we return (the
        server closes the socket right after). The reader thread then waits
        for the client's answering close, but only ever wakes for data or
        its next ping (WS_PING_INTERVAL away): give the client a moment,
        then end the reader by shutting our side for reading."""
        try:
            self.ws.close(code, reason)
        except ConnectionClosed:
            pass
        self.finish()
        self.ws.thread.join(CLOSE_REPLY_TIMEOUT)
        try:
            self.raw.shutdown(socket.SHUT_RD)
        except OSError:
            pass

    def finish(self) -> None:
        """Send what is still queued (best effort, bounded), then stop
        writing to this socket for good. Safe to call more than once."""
        with self.wlock:
            if not self.dead:
                deadline = time.monotonic() + FLUSH_TIMEOUT
                self._take_outbox()
                while self.pending and not self.dead and self._send_pending() is False:
                    left = deadline - time.monotonic()
                    if left <= 0 or not _writable(self.raw, left):
                        break
                self.dead = True
        self.hub.unregister(self)

    def abort(self) -> None:
        """Drop the connection without ceremony (it stopped reading)."""
        self.dead = True
        try:
            self.raw.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # -- the fan-out thread -----------------------------------------------------
    def pump(self, turn: Turn) -> float:
        """Send this client what it is owed, without blocking. Returns when
        it next needs a turn (inf: when there are new updates)."""
        now = turn.now
        if not self.wlock.acquire(blocking=False):
            return now + self.hub.tick        # a closing flush is writing
        try:
            if self.dead:
                return float("inf")
            sent = self._send_pending() if self.pending else True
            if sent is None:
                return float("inf")
            if sent is False:
                if now - self.stalled_since > self.hub.send_timeout:
                    self.hub.count("dropped_stuck")
                    log.info("dropping a WebSocket client that stopped reading for %.0fs", self.hub.send_timeout)
                    self.abort()
                    return float("inf")
                return now + self.hub.tick
            self._take_outbox()
            data, messages, frames = self._owed(turn)
            if data:
                self.pending.append(memoryview(data))
                self.hub.messages_sent.add(messages)
                self.hub.frames_sent.add(frames)
            if self.pending and not self._send_pending():
                return now + self.hub.tick
            if self.cursor < turn.upto:  # more is owed: cut short by READ_LIMIT, or a batch not yet due
                return self.batch_due if self.batch_interval else now
            return float("inf")
        finally:
            self.wlock.release()

    def _take_outbox(self) -> None:
        with self.lock:
            if not self.outbox:
                return
            chunks, self.outbox = self.outbox, []
        self.pending.extend(memoryview(c) for c in chunks if c)

    def _send_pending(self) -> bool | None:
        """True: all sent; False: the socket is full; None: the connection is gone."""
        pending = self.pending
        try:
            while pending:
                sent = self.raw.sendmsg(list(itertools.islice(pending, SEND_CHUNKS)), (), socket.MSG_DONTWAIT)
                while sent and sent >= len(pending[0]):
                    sent -= len(pending.popleft())
                if sent:
                    pending[0] = pending[0][sent:]
        except BlockingIOError:
            if self.stalled_since is None:
                self.stalled_since = time.monotonic()
            return False
        except OSError:
            self.dead = True
            pending.clear()
            return None
        self.stalled_since = None
        return True

    def _owed(self, turn: Turn) -> tuple[bytes, int, int]:
        """(bytes, messages, frames) of the updates since this client's cursor."""
        with self.lock:
            if self.batch_interval and (self.cursor >= turn.upto or turn.now < self.batch_due):
                return b"", 0, 0
            # Clients that follow everything from the same cursor get the same bytes.
            everything = self.include is None and not self.exclude and not self._skip
            key = (self.batch_interval, self.cursor) if everything else None
            if key in turn.shared:
                out, end = turn.shared[key]
            else:
                read = self.hub.updates.read(self.cursor, READ_LIMIT, turn.upto)
                if read is None:  # fell off the end of the shared log
                    self.hub.count("resynced")
                    self.cursor = turn.upto
                    return self._json_frame(self._snapshot_message("lagged")), 0, 1
                entries, end = read
                out = self._encode(entries if everything else self._select(entries, end))
                if key is not None:
                    turn.shared[key] = out, end
            self.cursor = end
            if self.batch_interval and end >= turn.upto:
                # Batches end on multiples of the interval of one clock, so
                # clients with the same interval flush in the same turn from
                # the same cursor, and can share the frame. Until a client has
                # caught up, its batch stays due.
                self.batch_due = (turn.now // self.batch_interval + 1) * self.batch_interval
            return out

    def _encode(self, entries) -> tuple[bytes, int, int]:
        if not entries:
            return b"", 0, 0
        if self.batch_interval:
            return text_frame(b"[" + b",".join(e.payload for e in entries) + b"]"), len(entries), 1
        return b"".join(e.frame for e in entries), len(entries), len(entries)

    def _select(self, entries, end: int) -> list:
        wanted = [e for e in entries if self._wanted(e.key)]
        if self._skip:
            wanted = [e for e in wanted if e.stream_seq > self._skip.get(e.key, 0)]
            if end >= self._skip_until:  # past the resume point: nothing more to skip
                self._skip = {}
        return wanted

    # -- what the client wants (call with `lock` held) ---------------------------
    def _wanted(self, key: tuple[str, str]) -> bool:
        w = self._wants.get(key)
        if w is None:
            w = (key not in self.exclude and key[0] not in self.exclude
                 and (self.include is None or key in self.include or key[0] in self.include))
            self._wants[key] = w
        return w

    def _snapshot_message(self, reason: str, include=lambda key: True) -> dict:
        data = [{**c.to_dict(), "seq": seq} for c, seq in self.hub.prices.snapshot()
                if self._wanted(c.key) and include(c.key)]
        return {"type": "snapshot", "reason": reason, "epoch": self.hub.epoch, "data": data}

    @staticmethod
    def _json_frame(obj) -> bytes:
        return text_frame(dumps(obj).encode())


def _writable(sock, timeout: float) -> bool:
    try:
        return bool(select.select([], [sock], [], timeout)[1])
    except (OSError, ValueError):
        return False
