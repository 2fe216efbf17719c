"""One connection's bytes on their way out.

Two queues: the `outbox`, where this connection's own threads put replies,
pongs, pings and close frames, and `pending`, the bytes the fan-out thread
has taken on to send (outbox first, then the updates the client is owed).
Updates are read from the shared log only once `pending` has gone out, so a
client that does not read holds at most one turn's worth of them; what its
own messages cause (replies, pongs, snapshots) is bounded by `limit` bytes:
past it the connection is marked `overflowed`, the session closes it (1008),
and nothing more is queued for it but the close frame.
"""
import itertools
import select
import socket
import threading
import time
from collections import deque

SEND_CHUNKS = 64            # buffers per sendmsg (the kernel takes up to 1024)
FLUSH_TIMEOUT = 2.0         # how long a closing connection may take to send its last frames
CLOSE_OPCODE = 0x8


class Output:
    def __init__(self, sock, limit: int):
        self.sock = sock
        self.limit = limit
        # `lock` guards the outbox and its size; `wlock` is held by whoever
        # writes to the socket (the fan-out thread, or a closing flush).
        self.lock = threading.Lock()
        self.wlock = threading.Lock()
        self._outbox: list[bytes] = []
        self._outbox_bytes = 0
        self.overflowed = False
        # Unsent bytes, as the chunks they came in: shared frames are sent
        # from the one copy every client holds, never joined per client.
        self.pending: deque[memoryview] = deque()
        self.pending_bytes = 0
        self.stalled_since: float | None = None
        self.dead = False

    # -- this connection's threads ----------------------------------------------
    def put(self, frame: bytes) -> bool:
        """Queue a frame; False if it would take this connection past its
        bound (it is then marked overflowed and gets nothing more but a
        close frame, which always fits: the client must be told why)."""
        with self.lock:
            closing = bool(frame) and frame[0] & 0x0F == CLOSE_OPCODE
            if not closing and (self.overflowed or
                                self._outbox_bytes + self.pending_bytes + len(frame) > self.limit):
                self.overflowed = True
                return False
            self._outbox.append(frame)
            self._outbox_bytes += len(frame)
        return True

    # -- the fan-out thread (or a closing flush), with `wlock` held ------------------
    def take_outbox(self) -> None:
        with self.lock:
            if not self._outbox:
                return
            chunks, self._outbox, self._outbox_bytes = self._outbox, [], 0
        self.add(*chunks)

    def add(self, *chunks: bytes) -> None:
        for c in chunks:
            if c:
                self.pending.append(memoryview(c))
                self.pending_bytes += len(c)

    def send(self) -> bool | None:
        """Send what is pending without blocking. True: all sent; False:
        the socket is full; None: the connection is gone."""
        pending = self.pending
        try:
            while pending:
                sent = self.sock.sendmsg(list(itertools.islice(pending, SEND_CHUNKS)), (), socket.MSG_DONTWAIT)
                self.pending_bytes -= sent
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
            self.pending_bytes = 0
            return None
        self.stalled_since = None
        return True

    def flush(self) -> None:
        """Send what is still queued (best effort, bounded in time), then
        stop writing to this socket for good. Safe to call more than once."""
        with self.wlock:
            if self.dead:
                return
            deadline = time.monotonic() + FLUSH_TIMEOUT
            self.take_outbox()
            while self.pending and not self.dead and self.send() is False:
                left = deadline - time.monotonic()
                if left <= 0 or not _writable(self.sock, left):
                    break
            self.dead = True

    def abort(self) -> None:
        """Drop the connection without ceremony (it stopped reading)."""
        self.dead = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _writable(sock, timeout: float) -> bool:
    # poll, not select: select refuses descriptors past 1023, and with
    # thousands of clients most are
    poller = select.poll()
    try:
        poller.register(sock, select.POLLOUT)
        return bool(poller.poll(timeout * 1000))
    except (OSError, ValueError):
        return False
