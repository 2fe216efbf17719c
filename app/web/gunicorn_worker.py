"""The gunicorn worker (gunicorn.conf.py's worker_class): gthread, except
that a connection gets one of the pool's threads only once its request
headers are in.

gunicorn's gthread (27.0) hands every accepted connection to a pool thread,
which waits up to 5 s for a first byte and then reads the headers with
blocking recv calls that have no timeout: a client that sends a byte and then
trickles the rest, or stops (slowloris), holds that thread for as long as it
likes, and `threads` such clients leave none for anyone else, /health
included. Here the worker's own event loop reads the headers without
blocking, and hands them to gunicorn's parser in a thread when the blank line
that ends them has arrived. A connection that has not got that far within
REQUEST_HEADER_TIMEOUT is closed, and so is one whose headers pass
MAX_HEADER_BYTES (after a 431). Kept-alive connections wait the same way for
their next request, pipelined bytes included.

HTTP/1.1 in clear text only: gunicorn.conf.py refuses TLS, and gunicorn's
HTTP/2 is off unless configured.
"""
import selectors
import threading
import time
from functools import partial

from gunicorn.workers.gthread import ThreadWorker

from config import Config

END_OF_HEADERS = b"\r\n\r\n"
# gunicorn's own limits (request line 4094, field 8190 bytes) still apply to
# what reaches the parser; this only bounds what one connection may make us hold.
MAX_HEADER_BYTES = 64 * 1024
TOO_LARGE = (b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
             b"Connection: close\r\nContent-Length: 0\r\n\r\n")
# Address space each thread reserves for its stack. Linux's default (8 MB)
# makes 40 GB at 5,000 clients, which strict overcommit or a container's
# limit can refuse; a thread touches a few tens of kB of it. 1 MB still
# holds Python's recursion limit through C code (deeply nested JSON).
THREAD_STACK_BYTES = 1024 * 1024


class Worker(ThreadWorker):

    def init_process(self):
        # before gunicorn's pool and the app's threads start
        threading.stack_size(THREAD_STACK_BYTES)
        super().init_process()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.header_timeout = Config.REQUEST_HEADER_TIMEOUT
        # Connections still sending headers -> their deadline. Every entry
        # gets the same timeout when added, so the dict is in deadline order.
        self.reading_headers = {}

    def enqueue_req(self, conn):
        """Every way to a pool thread goes through here (new, kept-alive and
        pipelined connections); only connections with their headers in pass."""
        if getattr(conn, "head_complete", False):
            conn.head_complete = False  # the next request on it waits again
            super().enqueue_req(conn)
            return
        # Bytes the parser read ahead past the last request start this one.
        conn.head = bytearray(conn.parser.unreader.take_buffered() if conn.parser else b"")
        conn.searched = 0
        conn.sock.setblocking(False)
        self.reading_headers[conn] = time.monotonic() + self.header_timeout
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.read_headers, conn))
        # The request may be here already (kept-alive, pipelined): no need to wait for a wake-up.
        self.read_headers(conn, conn.sock)

    def read_headers(self, conn, sock):
        """In the event loop: take what has arrived, without blocking."""
        try:
            data = sock.recv(max(MAX_HEADER_BYTES + 1 - len(conn.head), 1))
        except (BlockingIOError, InterruptedError):
            data = None
        except OSError:
            data = b""
        conn.head += data or b""
        complete = conn.head.find(END_OF_HEADERS, conn.searched) >= 0
        conn.searched = max(len(conn.head) - len(END_OF_HEADERS) + 1, 0)
        if complete:
            self.stop_reading(conn)
            conn.prefetched, conn.head = bytes(conn.head), None
            conn.head_complete = conn.data_ready = True
            self.enqueue_req(conn)
        elif data == b"":  # closed or reset before a whole request: nothing to answer
            self.drop(conn)
        elif len(conn.head) > MAX_HEADER_BYTES:
            try:
                sock.send(TOO_LARGE)
            except OSError:
                pass
            self.drop(conn)

    def handle(self, conn):
        """In a pool thread: give the parser the headers the loop read."""
        prefetched, conn.prefetched = getattr(conn, "prefetched", b""), b""
        if prefetched:
            conn.init()
            conn.parser.unreader.unread(prefetched)
        return super().handle(conn)

    def murder_pending(self):
        """Called by gthread's loop at least once a second, and while
        stopping, when connections still short of their headers are closed
        at once: a request that has not arrived is not one in progress."""
        super().murder_pending()
        now = time.monotonic()
        while self.reading_headers:
            conn, deadline = next(iter(self.reading_headers.items()))
            if deadline > now and self.alive:
                break
            self.drop(conn)

    def stop_reading(self, conn):
        del self.reading_headers[conn]
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass

    def drop(self, conn):
        self.stop_reading(conn)
        self.nr_conns -= 1
        conn.close()
