"""The shared update log: every update serialised once, as a ready-to-send
WebSocket frame, read by every client's own thread through a cursor.

Server-to-client frames are not masked, so the same bytes go to every client
that wants the update; a client thread that wakes up late simply sends all it
is owed in one sendall. This replaces a per-client queue (one thread hand-off
per message per client, which tops out near 20k frames/s on 2 cores).

One writer (the dispatcher) appends; readers never block it for longer than
a list slice. The log is a ring: a reader whose cursor has been overwritten
has fallen too far behind and must be resynchronised or dropped.
"""
import struct
import threading


def text_frame(payload: bytes) -> bytes:
    """An unmasked, final, uncompressed text frame (RFC 6455 §5.2).
    permessage-deflate is negotiated by simple-websocket for what clients
    send us; we deliberately send uncompressed frames (RSV1 clear, which the
    extension allows) so one encoding serves every client."""
    n = len(payload)
    if n < 126:
        header = bytes((0x81, n))
    elif n < 65536:
        header = struct.pack("!BBH", 0x81, 126, n)
    else:
        header = struct.pack("!BBQ", 0x81, 127, n)
    return header + payload


# An entry is a plain tuple (seq, key, stream_seq, payload, frame):
#   seq         position in the log, global and increasing
#   key         (symbol, interval)
#   stream_seq  per-stream sequence number, for client resume
#   payload     the JSON message
#   frame       text_frame(payload)
# A tuple of ints, strings and bytes is not tracked by the garbage collector
# once it has survived one collection, so a full log (WS_BACKLOG entries)
# adds nothing to the pause of every later collection; an object per entry
# added ~4 ms to each (bench/latency_bench.py, README).
SEQ, KEY, STREAM_SEQ, PAYLOAD, FRAME = range(5)
Entry = tuple


class UpdateLog:
    def __init__(self, capacity: int):
        self.capacity = capacity
        self._ring: list[Entry | None] = [None] * capacity
        self._next = 0            # seq of the next entry appended
        self._lock = threading.Lock()

    @property
    def next_seq(self) -> int:
        return self._next

    def append(self, entries: list[tuple[tuple[str, str], int, bytes]]) -> None:
        """Append (key, stream_seq, payload) items, in order."""
        framed = [(key, sseq, payload, text_frame(payload)) for key, sseq, payload in entries]
        with self._lock:
            for key, sseq, payload, frame in framed:
                seq = self._next
                self._ring[seq % self.capacity] = (seq, key, sseq, payload, frame)
                self._next = seq + 1

    def read(self, cursor: int, limit: int = 10_000, upto: int | None = None) -> tuple[list[Entry], int] | None:
        """Entries from `cursor` on (at most `limit`, and before `upto`) and
        the new cursor, or None if entries at the cursor were already
        overwritten."""
        with self._lock:
            end = self._next
            if cursor < end - self.capacity:
                return None
            end = min(end, cursor + limit, end if upto is None else upto)
            ring, cap = self._ring, self.capacity
            return [ring[s % cap] for s in range(cursor, end)], end
