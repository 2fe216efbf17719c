"""One /ws/price connection: its query, its messages, and its turn in the
fan-out.

One thread per connection: gunicorn's, running `run`, reads the socket and
acts on what the client sends (simple-websocket starts no reader thread of
its own: see `InlineReader`); the fan-out thread calls `pump`. `lock` guards
what both sides use (the filters, the cursor, the resume skip); the fan-out
thread only ever tries it, and skips this client for a turn when it is held,
so nothing a client makes its own thread do can hold up the others.
"""
import logging
import math
import select
import socket
import threading
import time

from simple_websocket import ConnectionClosed
from wsproto.connection import ConnectionState
from wsproto.events import Ping
from wsproto.utilities import LocalProtocolError

from ..candles import dumps
from ..client_protocol import ClientError, parse_batch, parse_message, parse_resume, parse_symbols
from ..updates import FRAME, KEY, PAYLOAD, STREAM_SEQ, text_frame
from . import resume
from .filters import Filters
from .output import Output
from .ratelimit import TokenBucket

log = logging.getLogger(__name__)

GOING_AWAY = 1001
POLICY_VIOLATION = 1008
INTERNAL_ERROR = 1011
TRY_AGAIN_LATER = 1013
# Kernel send buffer per client: bounds kernel memory per connection and
# lets a client that stopped reading be noticed in seconds, not megabytes.
SEND_BUFFER_BYTES = 256 * 1024
# Log entries handed to one client per turn (~400 kB): what one client may
# hold in memory beyond its kernel buffer, and still 200k updates/s at a 5 ms tick.
READ_LIMIT = 1000
CLOSE_REPLY_TIMEOUT = 1.0   # how long we wait for the client to answer our close frame
# Refused messages in a row, in multiples of the rate limit, before a client
# that keeps sending over the limit is closed: it is not listening.
FLOOD_SECONDS = 10


class InlineReader:
    """simple-websocket's `thread_class` (SOCK_SERVER_OPTIONS). It would
    start a thread per connection to read the socket, and so double the
    threads per client; the session reads in its own thread instead
    (`ClientSession._receive`), so nothing is started."""
    name = "inline-reader"

    def __init__(self, target):
        pass

    def start(self) -> None:
        pass


class _SessionSocket:
    """What simple-websocket holds as its socket once the session runs: it
    only writes to it (pongs, close frames), and the writes join the
    connection's output, so the fan-out thread sends them in order with the
    data frames."""

    def __init__(self, session: "ClientSession"):
        self._session = session

    def send(self, data, *flags):
        self._session.output.put(bytes(data))
        self._session.hub.wake()
        return len(data)

    sendall = send


class ClientSession:
    def __init__(self, hub, ws, address: str):
        self.hub = hub
        self.ws = ws
        self.raw = ws.sock
        self.address = address
        self.output = Output(self.raw, hub.max_output)
        self.lock = threading.Lock()
        self.filters = Filters()
        self.batch_interval = 0.0
        self.cursor = 0
        self._skip: dict[tuple[str, str], int] = {}   # resume: stream -> last seq the client has
        self._skip_until = 0                           # ...for log entries before this one
        self._bucket = TokenBucket(hub.max_rate)
        self._refused_in_a_row = 0
        self.batch_due = 0.0                           # fan-out thread only
        self._readable = select.poll()                 # holds no file descriptor, unlike a selector
        self._readable.register(self.raw, select.POLLIN)
        self._next_ping = time.monotonic() + ws.ping_interval if ws.ping_interval else math.inf

    # -- this connection's thread ---------------------------------------------
    def run(self, args) -> None:
        """Serve the connection until it ends. Never raises: after the 101
        the socket speaks WebSocket, and an exception would make Flask write
        an HTTP 500 onto it."""
        self.ws.sock = _SessionSocket(self)
        try:
            self.raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        except OSError:
            pass
        try:
            self._serve(args)
        except Exception:  # a bug of ours: the client gets a close code, the log the traceback
            log.exception("WebSocket session failed; closing it with %d", INTERNAL_ERROR)
            self.close(INTERNAL_ERROR, "internal error")
        finally:
            self.finish()
            self._await_close_reply()

    def _serve(self, args) -> None:
        try:
            self._start(args)
        except ClientError as exc:
            self.hub.count("closed_bad_input")
            self.close(POLICY_VIOLATION, str(exc))
            return
        refusal = self.hub.register(self)
        if refusal:
            self.close(TRY_AGAIN_LATER, refusal)
            return
        while self._read_one():
            pass

    def _start(self, args) -> None:
        """What the query asks for, and the first messages: a snapshot, or
        what a resuming client missed."""
        batch = parse_batch(args.get("batch"))
        filters = Filters(parse_symbols(args.get("symbols"), self.hub.max_streams))
        last = parse_resume(args.get("epoch"), args.get("last_seq"), self.hub.max_streams)
        with self.lock:
            self.batch_interval, self.filters = batch, filters
            if last is None:
                self.cursor = self.hub.updates.next_seq  # before the snapshot: never miss an update
                self.output.put(self.hub.snapshots.frame("connect", filters.wanted))
                return
            plan = resume.plan(self.hub.updates, self.hub.prices, self.hub.epoch, last[1], last[0])
            self.hub.count("resume_gaps", len(plan.messages))
            for message in plan.messages:
                self.output.put(_json_frame(message))
            if plan.restarted:
                self.cursor = plan.cursor
                self.output.put(self.hub.snapshots.frame("resume", filters.wanted))
                return
            self.hub.count("resumed")
            self.cursor, self._skip, self._skip_until = plan.cursor, plan.skip, plan.skip_until

    def _read_one(self) -> bool:
        """Wait for a message and act on it; False when the session is over."""
        msg = self._receive()
        if self.hub.shutting_down:
            self.close(GOING_AWAY, "server shutting down")
            return False
        if self.output.overflowed:
            self.hub.count("closed_output_limit")
            self.close(POLICY_VIOLATION, f"over {self.hub.max_output} bytes of replies unread; read your messages")
            return False
        if msg is None or self.output.dead or not self.ws.connected:
            return False
        if not self._bucket.take():
            return self._refuse()
        self._refused_in_a_row = 0
        try:
            action, targets = parse_message(msg)
            if action == "ping":
                self.send_json({"type": "pong", "time": int(time.time() * 1000)})
            else:
                self._change(action, targets)
        except ClientError as exc:
            self.send_json({"type": "error", "message": str(exc)})
        return True

    def _receive(self):
        """The client's next message; None when the session must end (the
        connection ended, the output passed its bound, the server is
        shutting down). What simple-websocket's reader thread would do,
        here: its own frame handling (it answers pings and the client's
        close, and closes with 1009 past WS_MAX_MESSAGE_BYTES and 1007 on
        bad UTF-8), and a ping every WS_PING_INTERVAL; a client that has not
        answered the previous one by then is closed (1008). The thread
        sleeps in between: an idle client costs no wake-ups but its pings."""
        ws = self.ws
        while ws.connected and not ws.input_buffer and not self.output.overflowed and not self.hub.shutting_down:
            now = time.monotonic()
            if now >= self._next_ping:
                if not ws.pong_received:
                    self.close(POLICY_VIOLATION, "Ping/Pong timeout")
                    break
                ws.pong_received = False
                ws.sock.send(ws.ws.send(Ping()))
                self._next_ping = now + ws.ping_interval
            # `wake` makes the socket readable: look before reading it
            if self._wait_readable(self._next_ping - now) and not self.hub.shutting_down:
                ws.connected = self._read_socket()
        return ws.input_buffer.pop(0) if ws.input_buffer else None

    def wake(self) -> None:
        """Interrupt the wait for the client, from another thread (the
        server is shutting down): with our side shut for reading, the
        socket reads as ended at once. The session still sends its close
        frame, but no longer waits for the answer."""
        try:
            self.raw.shutdown(socket.SHUT_RD)
        except OSError:
            pass

    def _wait_readable(self, timeout: float) -> bool:
        return bool(self._readable.poll(None if timeout == math.inf else math.ceil(timeout * 1000)))

    def _read_socket(self) -> bool:
        """Hand what has arrived to simple-websocket; False when the
        connection is over (closed, reset, or a protocol error)."""
        try:
            data = self.raw.recv(self.ws.receive_bytes)
            if not data:
                return False
            self.ws.ws.receive_data(data)
            return self.ws._handle_events()
        except (OSError, LocalProtocolError):
            return False

    def _await_close_reply(self) -> None:
        """After our close frame has left: read until the client answers it
        (or CLOSE_REPLY_TIMEOUT). gunicorn closes the socket when we return,
        and closing one with unread bytes resets the connection, which can
        destroy our close frame before the client reads it."""
        deadline = time.monotonic() + CLOSE_REPLY_TIMEOUT
        while self.ws.ws.state is ConnectionState.LOCAL_CLOSING:
            left = deadline - time.monotonic()
            if left <= 0 or (self._wait_readable(left) and not self._read_socket()):
                return

    def _refuse(self) -> bool:
        """A message over the rate limit. Only the first of a run is
        answered, so the replies keep to the limit too."""
        self.hub.count("refused_messages")
        self._refused_in_a_row += 1
        if self._refused_in_a_row == 1:
            self.send_json({"type": "error", "message": f"rate limit: at most {self.hub.max_rate:g} messages "
                                                        f"per second; messages ignored until you slow down"})
        elif self._refused_in_a_row > FLOOD_SECONDS * self.hub.max_rate:
            self.hub.count("closed_flooding")
            self.close(POLICY_VIOLATION, "too many messages over the rate limit")
            return False
        return True

    def _change(self, action: str, targets: list) -> None:
        filters = self.filters.changed(action, targets, self.hub.max_streams)
        reply = {"type": "subscriptions", "action": action, **filters.describe()}
        # The fan-out skips this client while the lock is held, so the reply
        # and the snapshot of the new streams come before any of their
        # updates, and the snapshot is taken at or after the cursor.
        with self.lock:
            old, self.filters = self.filters, filters
            self.output.put(_json_frame(reply))
            if action == "subscribe":
                self.output.put(self.hub.snapshots.frame(
                    "subscribe", lambda key: filters.wanted(key) and not old.wanted(key)))
        self.hub.wake()

    def send_json(self, obj) -> None:
        self.output.put(_json_frame(obj))
        self.hub.wake()

    def close(self, code: int, reason: str) -> None:
        """Queue a close frame. The session then ends: `run` sends it and
        waits for the client's answer before the socket is closed."""
        try:
            self.ws.close(code, _close_reason(reason))
        except ConnectionClosed:
            pass
        self.hub.wake()

    def finish(self) -> None:
        self.output.flush()
        self.hub.unregister(self)

    # -- the fan-out thread -----------------------------------------------------
    def pump(self, turn) -> float:
        """Send this client what it is owed, without blocking. Returns when
        it next needs a turn (inf: when there are new updates)."""
        out, now = self.output, turn.now
        if not out.wlock.acquire(blocking=False):
            return now + self.hub.tick        # a closing flush is writing
        try:
            if out.dead:
                return float("inf")
            sent = out.send() if out.pending else True
            if sent is None:
                return float("inf")
            if sent is False:
                if now - out.stalled_since > self.hub.send_timeout:
                    self.hub.count("dropped_slow")
                    log.info("dropping a WebSocket client that stopped reading for %.0fs", self.hub.send_timeout)
                    out.abort()
                    return float("inf")
                return now + self.hub.tick
            if not self.lock.acquire(blocking=False):
                return now + self.hub.tick    # its own thread is changing what it follows
            try:
                # Replies first, then updates read under the same filters
                # that the replies describe.
                out.take_outbox()
                data, messages, frames = self._owed(turn)
                more = self.cursor < turn.upto
            finally:
                self.lock.release()
            if data:
                out.add(data)
                turn.messages += messages
                turn.frames += frames
            if out.pending and not out.send():
                return now + self.hub.tick
            if more:  # cut short by READ_LIMIT, or a batch not yet due
                return self.batch_due if self.batch_interval else now
            return float("inf")
        finally:
            out.wlock.release()

    def _owed(self, turn) -> tuple[bytes, int, int]:
        """(bytes, messages, frames) of the updates since this client's
        cursor (called with `lock` held)."""
        if self.batch_interval and (self.cursor >= turn.upto or turn.now < self.batch_due):
            return b"", 0, 0
        filters = self.filters
        # Clients that follow everything from the same cursor get the same bytes.
        everything = filters.everything and not self._skip
        key = (self.batch_interval, self.cursor) if everything else None
        if key in turn.shared:
            out, end = turn.shared[key]
        else:
            read = self.hub.updates.read(self.cursor, READ_LIMIT, turn.upto)
            if read is None:  # fell off the end of the shared log
                self.hub.count("resynced_lagging")
                self.cursor = turn.upto
                return turn.snapshot(filters), 0, 1
            entries, end = read
            out = self._encode(entries if everything else self._select(entries, end, filters))
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
            return text_frame(b"[" + b",".join(e[PAYLOAD] for e in entries) + b"]"), len(entries), 1
        return b"".join(e[FRAME] for e in entries), len(entries), len(entries)

    def _select(self, entries, end: int, filters: Filters) -> list:
        wanted = [e for e in entries if filters.wanted(e[KEY])]
        if self._skip:
            wanted = [e for e in wanted if e[STREAM_SEQ] > self._skip.get(e[KEY], 0)]
            if end >= self._skip_until:  # past the resume point: nothing more to skip
                self._skip = {}
        return wanted


def _json_frame(obj) -> bytes:
    return text_frame(dumps(obj).encode())


def _close_reason(text: str) -> str:
    """A close frame carries at most 123 bytes of reason (RFC 6455 §5.5)."""
    return text.encode()[:123].decode("utf-8", "ignore")
