"""Settings, read once from the environment (and a `.env` file beside this one).

Every setting is documented in `.env.example`. Secrets (INFLUXDB_TOKEN,
API_KEY) are read here and never logged or served: `Config.public()` is the
only view of the settings that leaves the process.

Every value is checked as it is read (type, range, URL scheme, known names).
A bad one stops the process here, at import, with one line per bad setting
on stderr naming it, its value (unless secret) and the expected form: gunicorn
(gunicorn.conf.py imports this), the worker and every `flask` command all
import it first, so none of them starts with a setting it would trip over
later, and none prints a traceback for a typo.
"""
import math
import os
import re
import sys
from urllib.parse import urlsplit

from dotenv import load_dotenv

basedir = os.path.abspath(os.path.dirname(__file__))
load_dotenv(os.path.join(basedir, ".env"))

SECRETS = ("INFLUXDB_TOKEN", "API_KEY")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_errors: list[str] = []


def _bad(name: str, text: str, expected: str) -> None:
    shown = "(value hidden)" if name in SECRETS else repr(text)
    _errors.append(f"config error: {name}={shown} is not valid: expected {expected}")


def _get(name: str) -> str | None:
    """The raw text, or None when unset or empty (an empty line in .env
    means the default, as .env.example shows)."""
    text = os.environ.get(name, "").strip()
    return text or None


def _int(name: str, default: int, least: int = 1, most: int | None = None) -> int:
    text = _get(name)
    if text is None:
        return default
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        value = None
    if value is None or value < least or (most is not None and value > most):
        _bad(name, text, f"a whole number from {least}" + (f" to {most}" if most is not None else " up"))
        return default
    return value


def _float(name: str, default: float, above: float = 0.0) -> float:
    text = _get(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= above:
        _bad(name, text, f"a number greater than {above:g}")
        return default
    return value


def _bool(name: str, default: bool = False) -> bool:
    text = _get(name)
    if text is None:
        return default
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    _bad(name, text, "1 or 0 (true/false, yes/no, on/off)")
    return default


def _choice(name: str, default: str, choices: tuple[str, ...], upper: bool = False) -> str:
    text = _get(name)
    if text is None:
        return default
    value = text.upper() if upper else text
    if value not in choices:
        _bad(name, text, "one of " + ", ".join(c for c in choices if c) + (" or empty" if "" in choices else ""))
        return default
    return value


def _text(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _secret(name: str) -> str:
    text = os.environ.get(name, "")
    if text and not (text.isascii() and text.isprintable()):
        _bad(name, text, "printable ASCII (it travels in an HTTP header)")
    return text


def _url(name: str, default: str, schemes: tuple[str, ...]) -> str:
    """A base URL: one of the schemes, a host, nothing after the path."""
    text = _get(name)
    if text is None:
        return default
    try:
        parts = urlsplit(text)
        parts.port  # raises on a port that is not a number or out of range
    except ValueError:
        parts = None
    if parts is None or parts.scheme.lower() not in schemes or not parts.hostname or parts.query or parts.fragment:
        _bad(name, text, "a URL " + " or ".join(f"{s}://host[:port]" for s in schemes))
        return default
    return text.rstrip("/")


def _file(name: str) -> str:
    """A path to a file we write: not a directory (empty means the default)."""
    text = _get(name) or ""
    if text and (os.path.isdir(text) or text.endswith(os.sep)):
        _bad(name, text, "the path of a file, not of a directory")
        return ""
    return text


def _list(name: str, default: str = "") -> list[str]:
    return [s.strip() for s in os.environ.get(name, default).split(",") if s.strip()]


def _origins(name: str) -> list[str]:
    """Web origins as browsers send them: scheme://host[:port], nothing else."""
    origins, bad = [], []
    for text in _list(name):
        parts = urlsplit(text)
        try:
            parts.port
        except ValueError:
            parts = None
        if (parts is None or parts.scheme not in ("http", "https") or not parts.hostname
                or parts.path or parts.query or parts.fragment or parts.username):
            bad.append(text)
        else:
            origins.append(text.lower())
    if bad:
        _bad(name, os.environ[name], "a comma list of origins such as https://dash.example.com or "
                                     f"http://localhost:3000 ({bad[0]!r} is not one)")
    return origins


def _bind(name: str, default: str) -> str:
    """gunicorn's address forms: host:port, [v6]:port, unix:/path, fd://n."""
    text = _get(name)
    if text is None:
        return default
    m = re.fullmatch(r"(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]*)(?::(\d{1,5}))?", text)
    if not (text.startswith("unix:") and len(text) > 5) and not re.fullmatch(r"fd://\d+", text) \
            and not (m and (m.group(2) is None or int(m.group(2)) <= 65535)):
        _bad(name, text, "host:port (e.g. 0.0.0.0:8000, [::]:8000), unix:/path or fd://N")
        return default
    return text


def _one_process(name: str) -> int:
    """gunicorn's worker processes: one, while the feed can run in only one."""
    value = _int(name, 1)
    if value > 1:
        _bad(name, _get(name), "1 (one worker process runs the feed, and more cannot share it yet; "
                               "where the platform sets it, e.g. Heroku, set WEB_CONCURRENCY=1)")
        return 1
    return value


class Config:
    LOG_LEVEL = _choice("LOG_LEVEL", "INFO", LOG_LEVELS, upper=True)
    # Where gunicorn listens, and whether it logs every request (health
    # checks and dashboards poll often, so off unless asked for). PORT is
    # what Procfile platforms set; BIND, when set, wins.
    PORT = _int("PORT", 8000, 1, 65535)
    BIND = _bind("BIND", f"0.0.0.0:{PORT}")
    WEB_CONCURRENCY = _one_process("WEB_CONCURRENCY")
    ACCESS_LOG = _bool("ACCESS_LOG")

    # Upstream: the base URLs make Binance.US, data-stream.binance.vision and
    # the replay exchange (`flask replay`) work by configuration alone.
    # BINANCE=http://host:port points both at one server (the replay exchange).
    _one = _url("BINANCE", "", ("http", "https"))
    BINANCE_WS_URL = _url("BINANCE_WS_URL", "ws" + _one[4:] if _one else "wss://stream.binance.com:9443",
                          ("ws", "wss"))
    BINANCE_REST_URL = _url("BINANCE_REST_URL", _one or "https://api.binance.com", ("http", "https"))
    # BINANCE_SYMBOL is the seed's single-symbol setting, still accepted.
    BINANCE_SYMBOLS = _list("BINANCE_SYMBOLS", os.environ.get("BINANCE_SYMBOL", "BTCUSDT,ETHUSDT"))
    BINANCE_INTERVAL = _text("BINANCE_INTERVAL", "1m")

    # Feed robustness. Binance pings every 20 s, so a minute without any
    # frame means the connection is dead even if TCP has not noticed.
    FEED_SILENCE_TIMEOUT = _float("FEED_SILENCE_TIMEOUT", 60.0)
    # Binance closes connections at 24 h; we rotate earlier, on our terms.
    FEED_ROTATE_AFTER = _float("FEED_ROTATE_AFTER", 23.5 * 3600)
    FEED_BACKOFF_INITIAL = _float("FEED_BACKOFF_INITIAL", 1.0)
    FEED_BACKOFF_MAX = _float("FEED_BACKOFF_MAX", 60.0)
    # Binance allows 1024 streams on one connection.
    FEED_STREAMS_PER_CONNECTION = _int("FEED_STREAMS_PER_CONNECTION", 1024, 1, 1024)
    MAX_STREAMS = _int("MAX_STREAMS", 4096)
    # Candles of history fetched for a stream with nothing stored yet (0: none).
    BACKFILL_INITIAL_CANDLES = _int("BACKFILL_INITIAL_CANDLES", 500, 0)

    # WebSocket clients.
    WS_MAX_CLIENTS = _int("WS_MAX_CLIENTS", 500)
    WS_MAX_MESSAGE_BYTES = _int("WS_MAX_MESSAGE_BYTES", 4096, 16)
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
    # Bytes queued for a client that has not read them (replies, pongs,
    # snapshots, a turn of updates); past it the client is closed (1008).
    # A snapshot is ~420 bytes a stream: 1.7 MB at MAX_STREAMS=4096.
    WS_MAX_OUTPUT_BYTES = _int("WS_MAX_OUTPUT_BYTES", 4 * 1024 * 1024, least=64 * 1024)
    # Browsers send Origin on WebSocket upgrades; empty means any origin.
    WS_ALLOWED_ORIGINS = _origins("WS_ALLOWED_ORIGINS")

    # When set, subscribe/unsubscribe require it in the X-API-Key header.
    API_KEY = _secret("API_KEY")
    # Other web origins whose pages may change state (subscribe/unsubscribe);
    # browsers' cross-site requests are refused otherwise, key or no key.
    ALLOWED_ORIGINS = _origins("ALLOWED_ORIGINS")
    # Seconds a connection may take to send its request headers; slower ones
    # are closed, so trickling clients cannot hold gunicorn's threads.
    REQUEST_HEADER_TIMEOUT = _float("REQUEST_HEADER_TIMEOUT", 10.0)
    # /analysis requests computed at once (more get 503 with Retry-After),
    # and candles one request may read (window x symbols; 400 beyond).
    ANALYSIS_MAX_CONCURRENT = _int("ANALYSIS_MAX_CONCURRENT", 2)
    ANALYSIS_MAX_CANDLES = _int("ANALYSIS_MAX_CANDLES", 500_000)

    # Storage: InfluxDB when INFLUXDB_HOST is set, else embedded SQLite.
    INFLUXDB_HOST = _url("INFLUXDB_HOST", "", ("http", "https"))
    INFLUXDB_TOKEN = _secret("INFLUXDB_TOKEN")
    INFLUXDB_DATABASE = _get("INFLUXDB_DATABASE") or "crypto"
    INFLUXDB_ORG = _text("INFLUXDB_ORG", "")
    SQLITE_PATH = _get("SQLITE_PATH") or os.path.join(basedir, "instance", "candles.sqlite3")
    # The followed streams, kept across restarts; empty means subscriptions.json
    # beside SQLITE_PATH (app/subscriptions.py resolves it).
    SUBSCRIPTIONS_PATH = _file("SUBSCRIPTIONS_PATH")
    # v2: /api/v2/write via influxdb-client (InfluxDB 2.x, 3.x, 1.8+);
    # v1: /write?db= for InfluxDB 1.x before 1.8. Empty means v2.
    INFLUXDB_API = _choice("INFLUXDB_API", "", ("", "v1", "v2"))
    STORAGE_TIMEOUT = _float("STORAGE_TIMEOUT", 10.0)
    # The writer flushes when this many candles are pending or every interval.
    STORAGE_BATCH_SIZE = _int("STORAGE_BATCH_SIZE", 5000)
    STORAGE_FLUSH_INTERVAL = _float("STORAGE_FLUSH_INTERVAL", 1.0)
    # Candles held in memory if the writer thread itself is stuck.
    STORAGE_MEMORY_MAX_POINTS = _int("STORAGE_MEMORY_MAX_POINTS", 100_000)
    STORAGE_RETRY_INITIAL = _float("STORAGE_RETRY_INITIAL", 1.0)
    STORAGE_RETRY_MAX = _float("STORAGE_RETRY_MAX", 60.0)
    # Candles the database has not taken yet wait here, across restarts.
    SPOOL_DIR = _get("SPOOL_DIR") or os.path.join(basedir, "instance", "spool")
    SPOOL_MAX_MB = _float("SPOOL_MAX_MB", 1024.0)

    SECRETS = SECRETS

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


def _check_together() -> None:
    """What no single reader can see: names checked against the candle
    model's own rules, and pairs that must be in order."""
    from app.candles import INTERVALS, normalize_symbol  # after Config exists: app imports it
    for symbol in Config.BINANCE_SYMBOLS:
        try:
            normalize_symbol(symbol)
        except ValueError:
            name = "BINANCE_SYMBOLS" if "BINANCE_SYMBOLS" in os.environ else "BINANCE_SYMBOL"
            _bad(name, os.environ[name], "a comma list of symbols of 2-20 letters or digits, "
                                         f"e.g. BTCUSDT,ETHUSDT ({symbol!r} is not one)")
            break
    if Config.BINANCE_INTERVAL not in INTERVALS:
        _bad("BINANCE_INTERVAL", Config.BINANCE_INTERVAL, "one of " + " ".join(INTERVALS))
    for low, high in (("FEED_BACKOFF_INITIAL", "FEED_BACKOFF_MAX"), ("STORAGE_RETRY_INITIAL", "STORAGE_RETRY_MAX")):
        if getattr(Config, high) < getattr(Config, low):
            _bad(high, os.environ.get(high, str(getattr(Config, high))), f"a number not below {low}")


_check_together()
if _errors:
    sys.stderr.write("\n".join(_errors) + "\n")
    sys.stderr.flush()
    # SystemExit, not an exception: gunicorn and flask print a traceback for
    # any Exception raised while loading, and a wrong setting is not a bug.
    raise SystemExit(2)
