"""Settings, read once from the environment (and a `.env` file beside this one).

Every setting is documented in `.env.example`. Secrets (INFLUXDB_TOKEN,
API_KEY) are read here and never logged or served: `Config.public()` is the
only view of the settings that leaves the process.
"""
import os

from dotenv import load_dotenv

basedir = os.path.abspath(os.path.dirname(__file__))
load_dotenv(os.path.join(basedir, ".env"))


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def _list(name: str, default: str = "") -> list[str]:
    return [s.strip() for s in os.environ.get(name, default).split(",") if s.strip()]


class Config:
    LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO").upper()

    # Upstream: the base URLs make Binance.US, data-stream.binance.vision and
    # the replay exchange (`flask replay`) work by configuration alone.
    # BINANCE=http://host:port points both at one server (the replay exchange).
    _one = os.environ.get("BINANCE", "").rstrip("/")
    BINANCE_WS_URL = os.environ.get(
        "BINANCE_WS_URL", "ws" + _one[4:] if _one else "wss://stream.binance.com:9443").rstrip("/")
    BINANCE_REST_URL = os.environ.get("BINANCE_REST_URL", _one or "https://api.binance.com").rstrip("/")
    # BINANCE_SYMBOL is the seed's single-symbol setting, still accepted.
    BINANCE_SYMBOLS = _list("BINANCE_SYMBOLS", os.environ.get("BINANCE_SYMBOL", "BTCUSDT,ETHUSDT"))
    BINANCE_INTERVAL = os.environ.get("BINANCE_INTERVAL", "1m")

    # Feed robustness. Binance pings every 20 s, so a minute without any
    # frame means the connection is dead even if TCP has not noticed.
    FEED_SILENCE_TIMEOUT = _float("FEED_SILENCE_TIMEOUT", 60.0)
    # Binance closes connections at 24 h; we rotate earlier, on our terms.
    FEED_ROTATE_AFTER = _float("FEED_ROTATE_AFTER", 23.5 * 3600)
    FEED_BACKOFF_INITIAL = _float("FEED_BACKOFF_INITIAL", 1.0)
    FEED_BACKOFF_MAX = _float("FEED_BACKOFF_MAX", 60.0)
    FEED_STREAMS_PER_CONNECTION = _int("FEED_STREAMS_PER_CONNECTION", 1024)
    MAX_STREAMS = _int("MAX_STREAMS", 4096)
    # Candles of history fetched for a stream with nothing stored yet (0: none).
    BACKFILL_INITIAL_CANDLES = _int("BACKFILL_INITIAL_CANDLES", 500)

    # WebSocket clients.
    WS_MAX_CLIENTS = _int("WS_MAX_CLIENTS", 500)
    WS_MAX_MESSAGE_BYTES = _int("WS_MAX_MESSAGE_BYTES", 4096)
    WS_SEND_TIMEOUT = _float("WS_SEND_TIMEOUT", 10.0)
    # Clients are woken at most once per tick; under load each wake-up then
    # carries many updates in one sendall instead of one per thread hand-off.
    WS_TICK_MS = _float("WS_TICK_MS", 5.0)
    # Shared update log: a client further behind than this is dropped.
    WS_BACKLOG = _int("WS_BACKLOG", 50_000)
    WS_PING_INTERVAL = _float("WS_PING_INTERVAL", 25.0)
    WS_MAX_STREAMS_PER_CLIENT = _int("WS_MAX_STREAMS_PER_CLIENT", 256)
    WS_MAX_MESSAGES_PER_SECOND = _float("WS_MAX_MESSAGES_PER_SECOND", 10.0)
    # One host must not take every client slot.
    WS_MAX_CLIENTS_PER_IP = _int("WS_MAX_CLIENTS_PER_IP", 50)
    # Bytes queued for a client beyond the update log (replies, pongs,
    # snapshots) while it does not read; past it the client is closed (1008).
    WS_MAX_OUTPUT_BYTES = _int("WS_MAX_OUTPUT_BYTES", 1024 * 1024)
    # Browsers send Origin on WebSocket upgrades; empty means any origin.
    WS_ALLOWED_ORIGINS = _list("WS_ALLOWED_ORIGINS")

    # When set, subscribe/unsubscribe require it in the X-API-Key header.
    API_KEY = os.environ.get("API_KEY", "")

    # Storage: InfluxDB when INFLUXDB_HOST is set, else embedded SQLite.
    INFLUXDB_HOST = os.environ.get("INFLUXDB_HOST", "")
    INFLUXDB_TOKEN = os.environ.get("INFLUXDB_TOKEN", "")
    INFLUXDB_DATABASE = os.environ.get("INFLUXDB_DATABASE", "crypto")
    INFLUXDB_ORG = os.environ.get("INFLUXDB_ORG", "")
    SQLITE_PATH = os.environ.get("SQLITE_PATH", os.path.join(basedir, "instance", "candles.sqlite3"))
    # v2: /api/v2/write via influxdb-client (InfluxDB 2.x, 3.x, 1.8+);
    # v1: /write?db= for InfluxDB 1.x before 1.8. Empty means v2.
    INFLUXDB_API = os.environ.get("INFLUXDB_API", "")
    STORAGE_TIMEOUT = _float("STORAGE_TIMEOUT", 10.0)
    # The writer flushes when this many candles are pending or every interval.
    STORAGE_BATCH_SIZE = _int("STORAGE_BATCH_SIZE", 5000)
    STORAGE_FLUSH_INTERVAL = _float("STORAGE_FLUSH_INTERVAL", 1.0)
    # Candles held in memory if the writer thread itself is stuck.
    STORAGE_MEMORY_MAX_POINTS = _int("STORAGE_MEMORY_MAX_POINTS", 100_000)
    STORAGE_RETRY_INITIAL = _float("STORAGE_RETRY_INITIAL", 1.0)
    STORAGE_RETRY_MAX = _float("STORAGE_RETRY_MAX", 60.0)
    # Candles the database has not taken yet wait here, across restarts.
    SPOOL_DIR = os.environ.get("SPOOL_DIR", os.path.join(basedir, "instance", "spool"))
    SPOOL_MAX_MB = _float("SPOOL_MAX_MB", 1024.0)

    SECRETS = ("INFLUXDB_TOKEN", "API_KEY")

    @classmethod
    def public(cls, config) -> dict:
        """The settings safe to show: upper-case keys we own, minus secrets."""
        out = {}
        for key in dir(cls):
            if key.isupper() and key not in cls.SECRETS and key != "SECRETS":
                out[key] = config.get(key)
        for key in cls.SECRETS:
            out[key + "_SET"] = bool(config.get(key))
        return out
