"""What the REST API takes and gives, as pydantic models.

Each model is used twice: flask-openapi3 validates a request's path and
query with it before the view runs, and writes it into /openapi.json. The
validators raise the messages users already know ("invalid interval '7m':
expected one of ..."); app.web.validation_message passes them on. A rule a
schema cannot state (start before end, a window of at most 50,000 candles of
the chosen interval) stays in the view and is described in its text."""
import re
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, RootModel, ValidationInfo, WithJsonSchema

from ..analysis import DEFAULT_WINDOW, MAX_WINDOW
from ..candles import INTERVALS, SYMBOL_RE, check_interval, normalize_symbol

HISTORY_LIMIT = 500
HISTORY_MAX = 5000
MAX_TIME_MS = int(datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc).timestamp() * 1000)
# Declared as typed (ASCII letters and digits, either case); upper-cased by
# normalize_symbol. Checked as declared, so " btcusdt" or "ß" are refused
# here although upper() would make them pass.
SYMBOL_PATTERN = "^[A-Za-z0-9]{2,20}$"
WINDOW_PATTERN = "^([0-9]+ *[smhdw]|[0-9]*)$"


def _symbol(value):
    if not (isinstance(value, str) and re.fullmatch(SYMBOL_PATTERN, value)):
        raise ValueError(f"invalid symbol {value!r}: expected 2-20 letters or digits, e.g. BTCUSDT")
    return normalize_symbol(value)


def _interval(value):
    return check_interval(value)


def _time(value, info: ValidationInfo):
    """Epoch ms or ISO-8601 (UTC unless it says otherwise)."""
    text = str(value).strip()
    if text.isascii() and text.isdigit():
        ms = int(text)
    else:
        try:
            t = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"invalid {info.field_name} {text!r}: use epoch milliseconds or ISO-8601, "
                             f"e.g. 2020-01-01T00:00:00Z") from None
        if t.tzinfo is None:
            t = t.replace(tzinfo=timezone.utc)
        ms = int(t.timestamp() * 1000)
    if not 0 <= ms <= MAX_TIME_MS:
        raise ValueError(f"{info.field_name} {text!r} is out of range: from 1970 to 9999")
    return ms


def _limit(value):
    text = str(value)
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        raise ValueError(f"invalid limit {text!r}: expected a whole number")
    if int(text) < 1:
        raise ValueError("limit must be at least 1")
    return int(text)


def _window(value):
    if not re.fullmatch(WINDOW_PATTERN, str(value)):
        raise ValueError(f"invalid window {value!r}: use a number of candles (500) "
                         f"or a duration such as 90m, 24h, 7d")
    return value


Symbol = Annotated[str, BeforeValidator(_symbol), Field(
    description="A Binance symbol, either case.", json_schema_extra={"pattern": SYMBOL_PATTERN, "example": "BTCUSDT"})]
Interval = Annotated[Literal[tuple(INTERVALS)], BeforeValidator(_interval)]
Time = Annotated[int, BeforeValidator(_time), WithJsonSchema({
    "anyOf": [{"type": "integer", "minimum": 0, "maximum": MAX_TIME_MS},
              {"type": "string", "format": "date-time"}],
    "description": "Epoch milliseconds, or ISO-8601 (UTC unless it names an offset), from 1970 to 9999.",
    "example": "2020-01-01T00:00:00Z"})]

assert SYMBOL_RE.pattern == "^[A-Z0-9]{2,20}$", "SYMBOL_PATTERN is the same rule, in either case"


def _absent_is_not_null(schema: dict) -> None:
    """An absent query parameter is None here, which is not a value a
    client could send: the description says what absence means."""
    for prop in schema.get("properties", {}).values():
        if prop.get("default", 0) is None:
            del prop["default"]
        kinds = prop.pop("anyOf", None)
        if kinds is not None:
            kinds = [k for k in kinds if k != {"type": "null"}]
            inner = kinds[0] if len(kinds) == 1 else {"anyOf": kinds}
            prop.update({k: v for k, v in inner.items() if k not in prop})


class Query(BaseModel):
    model_config = ConfigDict(json_schema_extra=_absent_is_not_null)


class SymbolPath(BaseModel):
    symbol: Symbol


class IntervalQuery(Query):
    interval: Interval | None = Field(None, description="Candle interval; the server's BINANCE_INTERVAL "
                                                        "(see /config) when absent.")


class HistoryQuery(IntervalQuery):
    start: Time | None = Field(None, description="Oldest open time to return. With it, candles are returned "
                                                 "from there on; without it, the most recent `limit` up to `end`.")
    end: Time | None = Field(None, description="Newest open time to return (default: now). Not before `start`.")
    limit: Annotated[int, BeforeValidator(_limit)] = Field(
        HISTORY_LIMIT, ge=1, description=f"Most candles to return; more than {HISTORY_MAX} is taken as {HISTORY_MAX}.")


class AnalysisQuery(IntervalQuery):
    window: Annotated[str, BeforeValidator(_window)] | None = Field(
        None, pattern=WINDOW_PATTERN, json_schema_extra={"example": "24h"},
        description=f"A number of candles, or a duration (s, m, h, d, w) measured back from the newest stored "
                    f"candle; {DEFAULT_WINDOW} when absent or empty. Between 1 and {MAX_WINDOW} candles of the "
                    f"interval, and at most ANALYSIS_MAX_CANDLES candles over all symbols read.")


# -- answers -------------------------------------------------------------------
class ErrorBody(BaseModel):
    """Every error answer: a short title and a sentence saying what to change."""
    error: str = Field(description="The HTTP status's name, or what was refused.")
    message: str = Field(description="What was wrong, in words meant for the person writing the client.")
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"error": "Bad Request", "message": "invalid interval '7m': expected one of 1s 1m 3m 5m 15m 30m 1h 2h "
                                            "4h 6h 8h 12h 1d 3d 1w 1M"}]})


CANDLE_EXAMPLE = {
    "symbol": "BTCUSDT", "interval": "1m", "open_time": 1577836800000, "close_time": 1577836859999,
    "open": 7195.24, "high": 7196.25, "low": 7183.14, "close": 7186.68, "volume": 51.642812,
    "quote_volume": 371233.51835535, "price": 7186.68, "price_change": -8.56, "price_change_percent": -0.118968,
    "trades": 493, "closed": True, "event_time": 1577836860000}


class Candle(BaseModel):
    symbol: str
    interval: str
    open_time: int = Field(description="Epoch ms; with symbol and interval, the candle's identity.")
    close_time: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    quote_volume: float
    price: float = Field(description="The close.")
    price_change: float = Field(description="close - open (Binance's kline convention).")
    price_change_percent: float
    trades: int
    closed: bool = Field(description="True on the candle's final update.")
    event_time: int
    model_config = ConfigDict(json_schema_extra={"examples": [CANDLE_EXAMPLE]})


class PriceEntry(Candle):
    seq: int = Field(description="The stream's update count, as in /ws/price.")


class Prices(RootModel[dict[str, PriceEntry]]):
    """The latest candle of every stream, by SYMBOL@interval."""
    model_config = ConfigDict(json_schema_extra={"examples": [{"BTCUSDT@1m": {**CANDLE_EXAMPLE, "seq": 42}}]})


class Stream(BaseModel):
    symbol: str
    interval: str
    stream: str = Field(description="Binance's stream name.")


class Streams(RootModel[list[Stream]]):
    model_config = ConfigDict(json_schema_extra={"examples": [[
        {"symbol": "BTCUSDT", "interval": "1m", "stream": "btcusdt@kline_1m"}]]})


class StorageStats(BaseModel):
    """The storage writer's state (more keys than listed here)."""
    backend: str
    running: bool
    state: str
    last_error: str | None
    points_written: int
    queue_depth: int
    spool_points: int
    lag_ms_p50: float | None
    lag_ms_p99: float | None
    model_config = ConfigDict(extra="allow")


class Health(BaseModel):
    status: Literal["healthy", "degraded", "unhealthy"]
    crypto_provider: str
    feed_connected: bool
    seconds_since_last_message: float | None
    dispatcher_running: bool
    active_websocket_connections: int
    subscribed_symbols: list[str]
    subscribed_streams: list[str]
    storage: StorageStats
    uptime_seconds: float
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "status": "healthy", "crypto_provider": "binance", "feed_connected": True,
        "seconds_since_last_message": 0.4, "dispatcher_running": True, "active_websocket_connections": 3,
        "subscribed_symbols": ["BTCUSDT"], "subscribed_streams": ["btcusdt@kline_1m"],
        "storage": {"backend": "sqlite", "running": True, "state": "ok", "last_error": None,
                    "points_written": 1200, "queue_depth": 0, "spool_points": 0, "lag_ms_p50": 410.0,
                    "lag_ms_p99": 1010.0},
        "uptime_seconds": 3600.0}]})


class Settings(BaseModel):
    """The non-secret settings (secrets appear only as *_SET: true/false)."""
    BINANCE_INTERVAL: str
    BINANCE_SYMBOLS: list[str]
    API_KEY_SET: bool
    ANALYSIS_MAX_CANDLES: int
    WS_MAX_CLIENTS: int
    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [{
        "BINANCE_INTERVAL": "1m", "BINANCE_SYMBOLS": ["BTCUSDT", "ETHUSDT"], "API_KEY_SET": False,
        "ANALYSIS_MAX_CANDLES": 500000, "WS_MAX_CLIENTS": 500, "INFLUXDB_TOKEN_SET": False}]})


class Stats(BaseModel):
    """Throughput and state of every part; the same numbers as /metrics."""
    uptime_seconds: float
    messages_in: int
    messages_in_per_second: float
    stale_updates: int
    ingest_queue: int
    feed: dict[str, Any] = Field(description="Binance connections: connected, messages, reconnects, streams, ...")
    clients: dict[str, Any] = Field(description="WebSocket clients: connected, sent, dropped, refused, ...")
    refusals: dict[str, int] = Field(description="Requests refused, by reason (api_key, cross_site, origin, ...).")
    storage: StorageStats
    backfill: dict[str, Any]
    gc: dict[str, Any] = Field(description="Garbage-collection pauses by generation.")
    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [{
        "uptime_seconds": 3600.0, "messages_in": 7200, "messages_in_per_second": 2.0, "stale_updates": 0,
        "ingest_queue": 0, "feed": {"connected": True, "messages": 7200, "reconnects": 0, "streams": 2},
        "clients": {"clients": 3, "messages_sent": 21600}, "refusals": {"api_key": 1},
        "storage": {"backend": "sqlite", "running": True, "state": "ok", "last_error": None,
                    "points_written": 1200, "queue_depth": 0, "spool_points": 0, "lag_ms_p50": 410.0,
                    "lag_ms_p99": 1010.0},
        "backfill": {"candles_fetched": 0, "gaps_filled": 0}, "gc": {"gen2": {"collections": 3}}}]})


class History(BaseModel):
    symbol: str
    interval: str
    start: int | None
    end: int | None
    limit: int = Field(description="The limit applied (at most 5000).")
    count: int
    candles: list[Candle] = Field(description="In time order.")
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "symbol": "BTCUSDT", "interval": "1m", "start": 1577836800000, "end": None, "limit": 1, "count": 1,
        "candles": [CANDLE_EXAMPLE]}]})


class Analysis(BaseModel):
    """Statistics over the window; only symbol, interval, window and count
    when nothing is stored in it."""
    symbol: str
    interval: str
    window: str
    count: int
    first_time: str | None = None
    last_time: str | None = None
    first_close: float | None = None
    last_close: float | None = None
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    return_pct: float | None = None
    volatility_pct: float | None = None
    volatility_annualised_pct: float | None = None
    vwap: float | None = None
    sma_20: float | None = None
    ema_20: float | None = None
    rsi_14: float | None = None
    max_drawdown_pct: float | None = None
    volume: float | None = None
    quote_volume: float | None = None
    trades: int | None = None
    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [{
        "symbol": "BTCUSDT", "interval": "1m", "window": "1h", "count": 60,
        "first_time": "2020-01-01T00:00:00.000Z", "last_time": "2020-01-01T00:59:00.000Z",
        "first_close": 7186.68, "last_close": 7215.0, "min": 7170.0, "max": 7230.0, "mean": 7200.5,
        "return_pct": 0.39, "volatility_pct": 0.06, "volatility_annualised_pct": 45.1, "vwap": 7201.2,
        "sma_20": 7210.1, "ema_20": 7209.8, "rsi_14": 61.2, "max_drawdown_pct": 0.3, "volume": 3100.5,
        "quote_volume": 22330000.1, "trades": 29000}]})


class Movers(BaseModel):
    interval: str
    window: str
    movers: list[dict[str, Any]] = Field(description="Every symbol with data: its statistics as in "
                                                     "/analysis/{symbol}, best return first.")
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "interval": "1m", "window": "24h", "movers": [{"symbol": "ETHUSDT", "count": 1440, "return_pct": 1.2},
                                                      {"symbol": "BTCUSDT", "count": 1440, "return_pct": 0.4}]}]})


class SubscriptionResult(BaseModel):
    symbol: str
    interval: str
    stream: str
    status: str = Field(description="active, pending or queued after subscribe; removed (or pending) after "
                                    "unsubscribe.")
    remembered: bool = Field(description="The followed streams were saved (SUBSCRIPTIONS_PATH): the change "
                                         "survives a restart. False when the file could not be written.")
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"symbol": "BTCUSDT", "interval": "5m", "stream": "btcusdt@kline_5m", "status": "active",
         "remembered": True}]})


ERROR_SCHEMA = ErrorBody.model_json_schema()
ERROR_TEXT = {
    400: "Bad input: a parameter outside its declared form, or a rule between them.",
    401: "API_KEY is set and X-API-Key is missing or wrong.",
    403: "A browser page of another site tried to change state (Sec-Fetch-Site or Origin).",
    404: "No such symbol upstream.",
    409: "MAX_STREAMS streams are followed already.",
    502: "Binance refused to stream it.",
    503: "Temporarily unavailable; Retry-After says when to try again where known.",
}
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before trying again.", "schema": {"type": "string"}}}


def errors(*statuses: int, **texts: str) -> dict:
    """Documented error answers: the one ErrorBody shape, with what each
    status means for this operation (texts keyed e.g. s503=...)."""
    out = {}
    for status in statuses:
        text = texts.get(f"s{status}", ERROR_TEXT[status])
        out[status] = {"description": text, "content": {"application/json": {
            "schema": ERROR_SCHEMA,
            "example": {"error": _TITLES.get(status, "Bad Request"), "message": text}}}}
        if status == 503:
            out[status]["headers"] = RETRY_AFTER
    return out


_TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 409: "Conflict",
           502: "Bad Gateway", 503: "Service Unavailable"}
