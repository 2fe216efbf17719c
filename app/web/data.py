"""GET /history and /analysis: stored candles and statistics over them."""
from datetime import datetime, timezone

from flask import Blueprint, current_app, jsonify, request

from .. import analysis
from ..candles import check_interval, normalize_symbol
from ..storage import StorageError

bp = Blueprint("data", __name__)

HISTORY_LIMIT = 500
HISTORY_MAX = 5000
MAX_TIME_MS = int(datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc).timestamp() * 1000)


class BadRequest(ValueError):
    pass


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
    return jsonify(error="Bad Request", message=str(exc)), 400


@bp.errorhandler(StorageError)
def storage_unavailable(exc):
    return jsonify(error="Storage Unavailable", message=exc.diagnosis), 503


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
        return jsonify(analysis.analyze(store(), symbol, interval, request.args.get("window")))
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


@bp.get("/analysis")
def analysis_all():
    _, interval = stream_args()
    try:
        return jsonify(analysis.top_movers(store(), interval, request.args.get("window")))
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
