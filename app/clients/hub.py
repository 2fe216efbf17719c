"""The hub: every connected client, the limits on how many, and the one
fan-out thread that writes to all of them."""
import logging
import threading
import time

from ..prices import PriceBook
from ..rates import RateCounter
from ..updates import UpdateLog
from ..worker import Worker
from .snapshots import Snapshots

log = logging.getLogger(__name__)

# As /stats and /metrics name them.
COUNTERS = ("connected_total", "rejected_full", "rejected_per_ip", "dropped_slow", "closed_output_limit",
            "closed_flooding", "closed_bad_input", "resynced_lagging", "refused_messages", "resumed", "resume_gaps")


class ClientHub(Worker):
    def __init__(self, updates: UpdateLog, prices: PriceBook, config):
        super().__init__("ws-fanout")
        self.updates = updates
        self.prices = prices
        self.max_clients = config["WS_MAX_CLIENTS"]
        self.max_per_ip = config["WS_MAX_CLIENTS_PER_IP"]
        self.max_output = config["WS_MAX_OUTPUT_BYTES"]
        self.send_timeout = config["WS_SEND_TIMEOUT"]
        self.max_streams = config["WS_MAX_STREAMS_PER_CLIENT"]
        self.max_rate = config["WS_MAX_MESSAGES_PER_SECOND"]
        self.tick = config["WS_TICK_MS"] / 1000
        # Sequence numbers restart with the process; the epoch tells a
        # resuming client whether its numbers still mean anything.
        self.epoch = str(int(time.time() * 1000))
        self.snapshots = Snapshots(prices, self.epoch)
        self.shutting_down = False
        self._lock = threading.Lock()
        self._sessions: set = set()
        self._per_ip: dict[str, int] = {}
        self.counts = dict.fromkeys(COUNTERS, 0)
        self.messages_sent = RateCounter()
        self.frames_sent = RateCounter()

    def close_all(self, timeout: float = 5.0) -> None:
        """Tell every client we are going away (1001) and wait for them:
        each session's thread, woken, sees `shutting_down` and closes."""
        self.shutting_down = True
        with self._lock:
            sessions = list(self._sessions)
        for s in sessions:
            s.wake()
        deadline = time.monotonic() + timeout
        while self.clients and time.monotonic() < deadline:
            time.sleep(0.05)

    # -- sessions ---------------------------------------------------------------
    def register(self, session) -> str | None:
        """Admit a session; None, or why it was refused."""
        with self._lock:
            if self.shutting_down:
                return "server shutting down"
            if len(self._sessions) >= self.max_clients:
                self.counts["rejected_full"] += 1
                return "too many clients, try again later"
            if self._per_ip.get(session.address, 0) >= self.max_per_ip:
                self.counts["rejected_per_ip"] += 1
                return f"too many connections from your address (at most {self.max_per_ip})"
            self._sessions.add(session)
            self._per_ip[session.address] = self._per_ip.get(session.address, 0) + 1
            self.counts["connected_total"] += 1
        self.wake()
        return None

    def unregister(self, session) -> None:
        with self._lock:
            if session in self._sessions:
                self._sessions.remove(session)
                left = self._per_ip.pop(session.address) - 1
                if left:
                    self._per_ip[session.address] = left

    @property
    def clients(self) -> int:
        with self._lock:
            return len(self._sessions)

    def count(self, counter: str, n: int = 1) -> None:
        with self._lock:
            self.counts[counter] += n

    # -- the fan-out thread -----------------------------------------------------
    def _run(self) -> None:
        timeout = None
        while not self._stopping.is_set():
            self._wake.wait(timeout)
            self._wake.clear()
            with self._lock:
                sessions = list(self._sessions)
            # One end of the log for the whole turn, so that clients at the
            # same cursor read the same entries and can share their bytes.
            turn = Turn(time.monotonic(), self.updates.next_seq, self.snapshots)
            next_turn = float("inf")
            for s in sessions:
                try:
                    next_turn = min(next_turn, s.pump(turn))
                except Exception:  # one broken session must not stop the others' updates
                    log.exception("fan-out to a client failed; disconnecting it")
                    s.output.abort()
            # counted once a turn, not twice per client (0.3 µs a count, locked)
            self.messages_sent.add(turn.messages)
            self.frames_sent.add(turn.frames)
            timeout = None if next_turn == float("inf") else max(self.tick, next_turn - time.monotonic())

    def stats(self) -> dict:
        with self._lock:
            counts = dict(self.counts)
            clients, hosts = len(self._sessions), len(self._per_ip)
        return {
            "clients": clients,
            "client_hosts": hosts,
            "max_clients": self.max_clients,
            "max_clients_per_ip": self.max_per_ip,
            "epoch": self.epoch,
            **counts,
            "messages_sent": self.messages_sent.total,
            "messages_sent_per_second": round(self.messages_sent.rate(), 1),
            "frames_sent": self.frames_sent.total,
            "fanout_running": self.alive,
        }


class Turn:
    """One pass of the fan-out thread over every client."""
    __slots__ = ("now", "upto", "shared", "messages", "frames", "_snapshots", "_pieces", "_everything")

    def __init__(self, now: float, upto: int, snapshots: Snapshots):
        self.now = now
        self.upto = upto      # log entries before this one are sent this turn
        # (batch interval, cursor) -> ((bytes, messages, frames), new cursor),
        # for the clients that follow every stream
        self.shared: dict = {}
        self.messages = self.frames = 0   # sent this turn
        self._snapshots = snapshots
        self._pieces = None
        self._everything: bytes | None = None

    def snapshot(self, filters) -> bytes:
        """A resync snapshot, taken after `upto` was. Its pieces are encoded
        at most once a turn, however many clients fell behind, and clients
        that follow every stream share one frame: megabytes each with
        thousands of streams, held by every lagged client until sent."""
        if self._pieces is None:
            self._pieces = self._snapshots.pieces()
        if not filters.everything:
            return self._snapshots.frame("lagged", filters.wanted, self._pieces)
        if self._everything is None:
            self._everything = self._snapshots.frame("lagged", filters.wanted, self._pieces)
        return self._everything
