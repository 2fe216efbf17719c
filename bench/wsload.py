"""Many WebSocket clients in one process, cheap enough per message that the
server, not the load generator, is what gets measured.

Each client does a real handshake with websocket-client, then its socket is
read with epoll and frames are split by their headers only; the payload of
the last frame of every read is parsed for its event time, which gives the
latency sample (the replay exchange runs with --event-time wall, so
event_time is the wall-clock time the exchange sent the update).
"""
import os
import re
import selectors
import socket
import time

import websocket

EVENT_TIME = re.compile(rb'"event_time":(\d+)')


class Client:
    __slots__ = ("sock", "buf", "messages", "latencies")

    def __init__(self, url: str):
        ws = websocket.create_connection(url, timeout=30)
        self.sock = ws.sock
        self.sock.setblocking(False)
        self.buf = b""
        self.messages = 0
        self.latencies: list[float] = []

    def on_readable(self, now_ms: float) -> None:
        try:
            data = self.sock.recv(1 << 20)
        except BlockingIOError:
            return
        if not data:
            raise ConnectionError("server closed")
        buf = self.buf + data
        pos, n, last = 0, len(buf), None
        while n - pos >= 2:
            length = buf[pos + 1] & 0x7F
            head = 2
            if length == 126:
                if n - pos < 4:
                    break
                length, head = int.from_bytes(buf[pos + 2:pos + 4], "big"), 4
            elif length == 127:
                if n - pos < 10:
                    break
                length, head = int.from_bytes(buf[pos + 2:pos + 10], "big"), 10
            end = pos + head + length
            if end > n:
                break
            if buf[pos] & 0x0F == 9:  # ping: a client that never answers is closed (WS_PING_INTERVAL)
                self.pong(buf[pos + head:end])
            if buf[pos] & 0x0F == 1:  # text frame
                last = (pos + head, end)
                # a batched frame is a JSON array: count its updates
                self.messages += buf.count(b'"type":"price_update"', pos + head, end)
            pos = end
        self.buf = buf[pos:]
        if last:
            m = EVENT_TIME.search(buf, last[0], last[1])
            if m:
                self.latencies.append(now_ms - int(m.group(1)))


    def pong(self, payload: bytes) -> None:
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.send(bytes((0x8A, 0x80 | len(payload))) + mask + masked)


def run(url: str, clients: int, seconds: float, warmup: float = 2.0, keep_latencies: bool = False) -> dict:
    """Connect `clients` clients, read for `seconds` after a warm-up; returns
    delivered messages per second and latency percentiles in ms (and every
    latency sample, with keep_latencies)."""
    conns = [Client(url) for _ in range(clients)]
    sel = selectors.EpollSelector()
    for c in conns:
        sel.register(c.sock, selectors.EVENT_READ, c)
    start = time.monotonic()
    measuring_from = start + warmup
    counted_from = None
    closed = 0
    end = measuring_from + seconds
    try:
        while (now := time.monotonic()) < end:
            if counted_from is None and now >= measuring_from:
                counted_from = now
                for c in conns:
                    c.messages = 0
                    c.latencies.clear()
            for key, _ in sel.select(0.1):
                try:
                    key.data.on_readable(time.time() * 1000)
                except ConnectionError:  # the server gave up on it: counted, not fatal
                    sel.unregister(key.fileobj)
                    closed += 1
    finally:
        for c in conns:
            try:
                c.sock.shutdown(socket.SHUT_RDWR)
                c.sock.close()
            except OSError:
                pass
    elapsed = time.monotonic() - counted_from
    lat = sorted(x for c in conns for x in c.latencies)

    def pct(p):
        return round(lat[min(len(lat) - 1, int(p * len(lat)))], 1) if lat else None

    return {"clients": clients, "delivered_per_s": round(sum(c.messages for c in conns) / elapsed),
            "p50_ms": pct(0.50), "p99_ms": pct(0.99), "closed_by_server": closed, **({"latencies": lat} if keep_latencies else {})}
