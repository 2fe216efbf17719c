"""GET /history and /analysis: stored candles and statistics over them.

Analysis is the one read here that costs real time and memory (50,000
candles are ~0.4 s of CPU and ~25 MB), so it is bounded twice: candles per
request (ANALYSIS_MAX_CANDLES, window x symbols; 400 beyond) and requests
computed at once (ANALYSIS_MAX_CONCURRENT; 503 with Retry-After beyond,
rather than queueing threads behind each other)."""
import threading
from contextlib import contextmanager
from datetime import datetime, timezone

from flask import Blueprint, current_app, jsonify, request

from .. import analysis
from ..candles import check_interval, normalize_symbol
from ..storage import StorageError
from . import error_reply

bp = Blueprint("data", __name__)

HISTORY_LIMIT = 500
HISTORY_MAX = 5000
MAX_TIME_MS = int(datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc).timestamp() * 1000)


class BadRequest(ValueError):
    pass


class Busy(Exception):
    pass


@bp.record_once
def _analysis_slots(state):
    state.app.extensions["analysis_slots"] = threading.BoundedSemaphore(state.app.config["ANALYSIS_MAX_CONCURRENT"])


@contextmanager
def analysis_slot():
    slots = current_app.extensions["analysis_slots"]
    if not slots.acquire(blocking=False):
        current_app.extensions["services"].count_refusal("analysis_busy")
        raise Busy(f"{current_app.config['ANALYSIS_MAX_CONCURRENT']} analyses are running already; "
                   f"try again in a second")
    try:
        yield
    finally:
        slots.release()


def store():
    return current_app.extensions["services"].storage.store


def parse_time(name: str) -> int | None:
    """Epoch ms or ISO-8601 (UTC unless it says otherwise)."""
    text = request.args.get(name, "").strip()
    if not text:
        return None
    if text.isascii() and text.isdigit():
        ms = int(text)
    else:
        try:
            t = datetime.fromisoformat(text)
        except ValueError:
            raise BadRequest(f"invalid {name} {text!r}: use epoch milliseconds or ISO-8601, "
                             f"e.g. 2020-01-01T00:00:00Z") from None
        if t.tzinfo is None:
            t = t.replace(tzinfo=timezone.utc)
        ms = int(t.timestamp() * 1000)
    if not 0 <= ms <= MAX_TIME_MS:
        raise BadRequest(f"{name} {text!r} is out of range: from 1970 to 9999")
    return ms


def stream_args(symbol: str | None = None) -> tuple[str | None, str]:
    try:
        interval = check_interval(request.args.get("interval", current_app.config["BINANCE_INTERVAL"]))
        return (normalize_symbol(symbol) if symbol is not None else None), interval
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


@bp.errorhandler(BadRequest)
def bad_request(exc):
    return error_reply(400, "Bad Request", str(exc))


@bp.errorhandler(Busy)
def busy(exc):
    return error_reply(503, "Busy", str(exc), {"Retry-After": "1"})


@bp.errorhandler(StorageError)
def storage_unavailable(exc):
    return error_reply(503, "Storage Unavailable", exc.diagnosis)


@bp.get("/history/<symbol>")
def history(symbol):
    """Candles in time order: from `start` if given, else the most recent
    `limit` up to `end` (or now)."""
    symbol, interval = stream_args(symbol)
    start, end = parse_time("start"), parse_time("end")
    if start is not None and end is not None and start > end:
        raise BadRequest("start is after end")
    try:
        limit = int(request.args.get("limit", HISTORY_LIMIT))
    except ValueError:
        raise BadRequest(f"invalid limit {request.args['limit']!r}: expected a whole number") from None
    if limit < 1:
        raise BadRequest("limit must be at least 1")
    limit = min(limit, HISTORY_MAX)
    candles = store().history(symbol, interval, start, end, limit)
    return jsonify(symbol=symbol, interval=interval, start=start, end=end, limit=limit,
                   count=len(candles), candles=[c.to_dict() for c in candles])


@bp.get("/analysis/<symbol>")
def analysis_one(symbol):
    symbol, interval = stream_args(symbol)
    try:
        with analysis_slot():
            return jsonify(analysis.analyze(store(), symbol, interval, request.args.get("window"),
                                            current_app.config["ANALYSIS_MAX_CANDLES"]))
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


@bp.get("/analysis")
def analysis_all():
    _, interval = stream_args()
    try:
        with analysis_slot():
            return jsonify(analysis.top_movers(store(), interval, request.args.get("window"),
                                               current_app.config["ANALYSIS_MAX_CANDLES"]))
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
