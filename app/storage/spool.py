"""The durable spool: candles the database has not acknowledged yet, in a
SQLite file on local disk. One row per candle (upserted, like the database
itself), so an outage costs one row per candle, not one per update, and a
restart picks up where the last process stopped.

A spool file SQLite cannot read (a torn write, garbage) is moved aside,
never deleted, and a fresh one started: the server must come up, and what
the old file holds stays there for an operator. A single row that cannot be
decoded is set aside in the table `undecodable` of the same file, so it
cannot hold up the rows behind it.

The writer uses it from its thread, and `Writer.stop` from the stopping
one, never both at once (the writer's spool lock)."""
import fcntl
import json
import logging
import os
import sqlite3
from datetime import datetime, timezone

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
        self.corrupt_files = 0              # moved aside by this process
        self.corrupt_path: str | None = None
        self.undecodable = 0                # rows in the table `undecodable`

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
        try:
            return self._connect()
        except _Corrupt as exc:
            self._move_aside(str(exc))
            return self._connect()

    def _connect(self) -> int:
        db = sqlite3.connect(self.path, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            # A torn file can open and count fine, and fail only when the
            # drain reaches the broken pages: look at every page now.
            problems = [row[0] for row in db.execute("PRAGMA quick_check(5)")]
            if problems != ["ok"]:
                raise _Corrupt("; ".join(problems))
            db.execute("""CREATE TABLE IF NOT EXISTS pending (
                symbol TEXT NOT NULL, interval TEXT NOT NULL, open_time INTEGER NOT NULL,
                seq INTEGER NOT NULL, closed INTEGER NOT NULL, point TEXT NOT NULL,
                PRIMARY KEY (symbol, interval, open_time)) WITHOUT ROWID""")
            db.execute("CREATE INDEX IF NOT EXISTS pending_seq ON pending (seq)")
            db.execute("CREATE TABLE IF NOT EXISTS undecodable (symbol, interval, open_time, seq, closed, point)")
            self.count, max_seq = db.execute("SELECT count(*), max(seq) FROM pending").fetchone()
            (self.undecodable,) = db.execute("SELECT count(*) FROM undecodable").fetchone()
        except sqlite3.DatabaseError as exc:
            db.close()
            if getattr(exc, "sqlite_errorcode", 0) & 0xff in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
                raise _Corrupt(str(exc)) from exc
            raise
        except BaseException:
            db.close()
            raise
        self._db = db
        self._seq = max_seq or 0
        return self.count

    def _move_aside(self, problem: str) -> None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        aside = f"{self.path}.corrupt-{stamp}"
        # Its WAL and index belong to it: a fresh file must not pick them up.
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(self.path + suffix):
                os.replace(self.path + suffix, aside + suffix)
        self.corrupt_files += 1
        self.corrupt_path = aside
        log.error("spool %s is corrupt (%s): moved it aside to %s and started an empty one; "
                  "the candles in it are not written unless recovered by hand", self.path, problem, aside)

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
            return self._put_when_full(rows, exc)
        self._recount()
        return self._enforce_bound()

    def _put_when_full(self, rows: list[tuple], exc: sqlite3.OperationalError) -> tuple[int, int]:
        """Make room by dropping open candles, to keep the closed ones; if the
        disk takes nothing at all, not even the deletes, drop the batch."""
        closed_rows = [r for r in rows if r[4]]
        dropped_open = len(rows) - len(closed_rows)
        try:
            dropped_open += self._evict(len(rows), closed=0)
            self._insert(closed_rows)
            dropped_closed = 0
        except sqlite3.OperationalError as again:
            exc, dropped_closed = again, len(closed_rows)
        self._recount()
        log.error("spool write failed (%s): dropped %d open and %d closed candles",
                  exc, dropped_open, dropped_closed)
        return dropped_open, dropped_closed

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
        while True:
            rows = self._db.execute("SELECT symbol, interval, open_time, seq, point FROM pending "
                                    "ORDER BY seq LIMIT ?", (n,)).fetchall()
            out, bad = [], []
            for symbol, interval, open_time, seq, blob in rows:
                try:
                    fields, source, received = json.loads(blob)
                    out.append((seq, Point(Candle(*fields), source, received)))
                except (ValueError, TypeError) as exc:
                    bad.append(((symbol, interval, open_time, seq), exc))
            if bad:
                self._set_aside(bad)
            if out or not bad:
                return out

    def _set_aside(self, bad: list[tuple[tuple, Exception]]) -> None:
        keys = [key for key, _ in bad]
        with self._db:
            self._db.executemany("INSERT INTO undecodable SELECT symbol, interval, open_time, seq, closed, point "
                                 "FROM pending WHERE symbol = ? AND interval = ? AND open_time = ? AND seq = ?", keys)
            self._db.executemany("DELETE FROM pending WHERE symbol = ? AND interval = ? AND open_time = ? AND seq = ?",
                                 keys)
        if not self.undecodable:  # once per file: one bad disk sector can spoil many rows
            log.error("spool row %r cannot be decoded (%s): set aside in table `undecodable` of %s; "
                      "further ones are only counted (spool_undecodable)", keys[0], bad[0][1], self.path)
        self.undecodable += len(bad)
        self._recount()

    def remove(self, entries: list[tuple[int, Point]]) -> None:
        """Remove written entries, unless a newer state replaced them meanwhile."""
        with self._db:
            self._db.executemany(
                "DELETE FROM pending WHERE symbol = ? AND interval = ? AND open_time = ? AND seq = ?",
                [(*p.key, seq) for seq, p in entries])
        self._recount()


class _Corrupt(Exception):
    """SQLite cannot read the spool file."""


def _fields(c: Candle):
    return (c.symbol, c.interval, c.open_time, c.close_time, c.open, c.high, c.low, c.close,
            c.volume, c.quote_volume, c.trades, c.closed, c.event_time)
