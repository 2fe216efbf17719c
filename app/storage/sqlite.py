"""The embedded default: candles in one SQLite file (WAL mode), one row per
(symbol, interval, open_time), upserted."""
import os
import sqlite3
import threading

from .base import Store
from .errors import StorageError
from .schema import CHECK_MEASUREMENT, FIELDS, MEASUREMENT, Point, candle_from_fields


class SqliteStore(Store):
    backend = "sqlite"

    def __init__(self, path: str, table: str = MEASUREMENT, timeout: float = 10.0):
        self.path = path
        self.table = table
        self.timeout = timeout
        # sqlite3 connections belong to the thread that made them: the writer
        # thread and each request thread get their own.
        self._local = threading.local()
        self._created = False

    def describe(self) -> str:
        return f"sqlite file {self.path}, table {self.table}"

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            try:
                os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
                db = sqlite3.connect(self.path, timeout=self.timeout)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=FULL")
                if not self._created:
                    db.execute(f"""CREATE TABLE IF NOT EXISTS {self.table} (
                        symbol TEXT NOT NULL, interval TEXT NOT NULL, open_time INTEGER NOT NULL,
                        open REAL, high REAL, low REAL, close REAL, volume REAL,
                        quote_volume REAL, trades INTEGER, closed INTEGER, source TEXT,
                        PRIMARY KEY (symbol, interval, open_time)) WITHOUT ROWID""")
                    self._created = True
            except (OSError, sqlite3.Error) as exc:
                raise StorageError("unavailable", f"{self.path}: {exc}") from exc
            self._local.db = db
        return db

    def _run(self, fn):
        try:
            return fn(self._db())
        except sqlite3.IntegrityError as exc:
            raise StorageError("bad_data", str(exc)) from exc
        except sqlite3.Error as exc:
            raise StorageError("unavailable", f"{self.path}: {exc}") from exc

    def write(self, points: list[Point]) -> None:
        cols = ("symbol", "interval", "open_time") + FIELDS + ("source",)
        sql = (f"INSERT INTO {self.table} ({','.join(cols)}) VALUES ({','.join('?' * len(cols))})"
               f" ON CONFLICT (symbol, interval, open_time) DO UPDATE SET "
               + ",".join(f"{c}=excluded.{c}" for c in FIELDS + ("source",)))
        rows = [(p.candle.symbol.upper(), p.candle.interval, p.candle.open_time,
                 *(getattr(p.candle, f) for f in FIELDS), p.source) for p in points]

        def run(db):
            with db:  # one transaction per batch
                db.executemany(sql, rows)
        self._run(run)

    def history(self, symbol, interval, start_ms=None, end_ms=None, limit=500):
        where, args = ["symbol = ?", "interval = ?"], [symbol, interval]
        if start_ms is not None:
            where.append("open_time >= ?"); args.append(start_ms)
        if end_ms is not None:
            where.append("open_time <= ?"); args.append(end_ms)
        order = "ASC" if start_ms is not None else "DESC"
        sql = (f"SELECT open_time, {','.join(FIELDS)} FROM {self.table} WHERE {' AND '.join(where)}"
               f" ORDER BY open_time {order} LIMIT ?")
        rows = self._run(lambda db: db.execute(sql, (*args, limit)).fetchall())
        candles = [candle_from_fields(symbol, interval, r[0], dict(zip(FIELDS, r[1:]))) for r in rows]
        return candles if start_ms is not None else candles[::-1]

    def last_closed(self, symbol, interval):
        row = self._run(lambda db: db.execute(
            f"SELECT max(open_time) FROM {self.table} WHERE symbol = ? AND interval = ? AND closed = 1",
            (symbol, interval)).fetchone())
        return row[0]

    def symbols(self, interval):
        rows = self._run(lambda db: db.execute(
            f"SELECT DISTINCT symbol FROM {self.table} WHERE interval = ? ORDER BY symbol",
            (interval,)).fetchall())
        return [r[0] for r in rows]

    def ping(self):
        version = self._run(lambda db: db.execute("SELECT sqlite_version()").fetchone()[0])
        return f"opened {self.path} (SQLite {version})"

    def probe(self):
        return SqliteStore(self.path, CHECK_MEASUREMENT, self.timeout)

    def drop(self):
        self._run(lambda db: db.execute(f"DROP TABLE IF EXISTS {self.table}"))
        return f"dropped table {self.table}"

    def close(self):
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None
