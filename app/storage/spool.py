"""The durable spool: candles the database has not acknowledged yet, in a
SQLite file on local disk. One row per candle (upserted, like the database
itself), so an outage costs one row per candle, not one per update, and a
restart picks up where the last process stopped.

Only the writer thread touches it."""
import fcntl
import json
import logging
import os
import sqlite3

from ..candles import Candle
from .schema import Point

log = logging.getLogger(__name__)


class Spool:
    def __init__(self, directory: str, max_bytes: int):
        self.path = os.path.join(directory, "spool.sqlite3")
        self.max_bytes = max_bytes
        self.count = 0
        self._db: sqlite3.Connection | None = None
        self._lock_file = None
        self._seq = 0

    def open(self) -> int:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        # Two writers on one spool would hand the same candles out twice and
        # lose track of what is left: one process per SPOOL_DIR.
        self._lock_file = open(self.path + ".lock", "w")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise RuntimeError(f"another process is using the spool in {os.path.dirname(self.path)}; "
                               f"give each server its own SPOOL_DIR") from None
        # Opened by start(), used by the writer thread from then on.
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("""CREATE TABLE IF NOT EXISTS pending (
            symbol TEXT NOT NULL, interval TEXT NOT NULL, open_time INTEGER NOT NULL,
            seq INTEGER NOT NULL, closed INTEGER NOT NULL, point TEXT NOT NULL,
            PRIMARY KEY (symbol, interval, open_time)) WITHOUT ROWID""")
        self._db.execute("CREATE INDEX IF NOT EXISTS pending_seq ON pending (seq)")
        self.count, max_seq = self._db.execute("SELECT count(*), max(seq) FROM pending").fetchone()
        self._seq = max_seq or 0
        return self.count

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._lock_file is not None:
            self._lock_file.close()  # releases the lock
            self._lock_file = None

    def size_bytes(self) -> int:
        return sum(os.path.getsize(p) for p in (self.path, self.path + "-wal") if os.path.exists(p))

    def _used_bytes(self) -> int:
        # The file never shrinks; pages freed by deletes are reused first.
        (pages,), (free,), (size,) = (self._db.execute(f"PRAGMA {p}").fetchall()[0]
                                      for p in ("page_count", "freelist_count", "page_size"))
        return (pages - free) * size

    def put(self, points: list[Point]) -> tuple[int, int]:
        """Store points (newer state of a candle replaces older). Returns how
        many (open, closed) candles had to be dropped to stay in bounds."""
        rows = []
        for p in points:
            self._seq += 1
            rows.append((*p.key, self._seq, int(p.candle.closed),
                         json.dumps([list(_fields(p.candle)), p.source, p.received])))
        try:
            self._insert(rows)
        except sqlite3.OperationalError as exc:  # disk full, most likely
            log.error("spool write failed (%s): dropping open candles to keep the closed ones", exc)
            dropped_open = self._evict(len(rows), closed=0) + sum(1 for r in rows if not r[4])
            closed_rows = [r for r in rows if r[4]]
            try:
                self._insert(closed_rows)
                dropped_closed = 0
            except sqlite3.OperationalError:
                dropped_closed = len(closed_rows)
            self._recount()
            return dropped_open, dropped_closed
        self._recount()
        return self._enforce_bound()

    def _insert(self, rows: list[tuple]) -> None:
        with self._db:
            self._db.executemany(
                "INSERT INTO pending VALUES (?,?,?,?,?,?) ON CONFLICT (symbol, interval, open_time) "
                "DO UPDATE SET seq=excluded.seq, closed=excluded.closed, point=excluded.point", rows)

    def _enforce_bound(self) -> tuple[int, int]:
        used = self._used_bytes()
        if used <= self.max_bytes or not self.count:
            return 0, 0
        # Delete a little more than the excess so this does not run per batch.
        excess = int((used - self.max_bytes) / (used / self.count) * 1.1) + 1
        dropped_open = self._evict(excess, closed=0)
        dropped_closed = self._evict(excess - dropped_open, closed=1) if dropped_open < excess else 0
        log.warning("spool over %d bytes: dropped %d open and %d closed candles (oldest first)",
                    self.max_bytes, dropped_open, dropped_closed)
        self._recount()
        return dropped_open, dropped_closed

    def _evict(self, n: int, closed: int) -> int:
        with self._db:
            cur = self._db.execute(
                "DELETE FROM pending WHERE (symbol, interval, open_time) IN "
                "(SELECT symbol, interval, open_time FROM pending WHERE closed = ? ORDER BY seq LIMIT ?)",
                (closed, n))
        return cur.rowcount

    def _recount(self) -> None:
        self.count = self._db.execute("SELECT count(*) FROM pending").fetchone()[0]

    def oldest(self, n: int) -> list[tuple[int, Point]]:
        """The n oldest entries as (seq, point)."""
        rows = self._db.execute("SELECT seq, point FROM pending ORDER BY seq LIMIT ?", (n,)).fetchall()
        out = []
        for seq, blob in rows:
            fields, source, received = json.loads(blob)
            out.append((seq, Point(Candle(*fields), source, received)))
        return out

    def remove(self, entries: list[tuple[int, Point]]) -> None:
        """Remove written entries, unless a newer state replaced them meanwhile."""
        with self._db:
            self._db.executemany(
                "DELETE FROM pending WHERE symbol = ? AND interval = ? AND open_time = ? AND seq = ?",
                [(*p.key, seq) for seq, p in entries])
        self._recount()


def _fields(c: Candle):
    return (c.symbol, c.interval, c.open_time, c.close_time, c.open, c.high, c.low, c.close,
            c.volume, c.quote_volume, c.trades, c.closed, c.event_time)
