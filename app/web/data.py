"""GET /history and /analysis: stored candles and statistics over them.

Analysis is the one read here that costs real time and memory (50,000
candles are ~0.4 s of CPU and ~25 MB), so it is bounded twice: candles per
request (ANALYSIS_MAX_CANDLES, window x symbols; 400 beyond) and requests
computed at once (ANALYSIS_MAX_CONCURRENT; 503 with Retry-After beyond,
rather than queueing threads behind each other)."""
import threading
from contextlib import contextmanager

from flask import current_app, jsonify
from flask_openapi3 import APIBlueprint, Tag

from .. import analysis
from . import ApiError
from .schemas import (HISTORY_MAX, Analysis, AnalysisQuery, History, HistoryQuery, IntervalQuery, Movers,
                      SymbolPath, errors)

bp = APIBlueprint("data", __name__)
STORED = Tag(name="stored candles", description="Reads from the database.")
STORE_DOWN = "The database cannot be read (the message says why); or, for analyses, ANALYSIS_MAX_CONCURRENT " \
             "are running already (Retry-After: 1)."


@bp.record_once
def _analysis_slots(state):
    state.app.extensions["analysis_slots"] = threading.BoundedSemaphore(state.app.config["ANALYSIS_MAX_CONCURRENT"])


@contextmanager
def analysis_slot():
    slots = current_app.extensions["analysis_slots"]
    if not slots.acquire(blocking=False):
        current_app.extensions["services"].count_refusal("analysis_busy")
        raise ApiError(503, "Busy", f"{current_app.config['ANALYSIS_MAX_CONCURRENT']} analyses are running "
                                    f"already; try again in a second", {"Retry-After": "1"})
    try:
        yield
    finally:
        slots.release()


def store():
    return current_app.extensions["services"].storage.store


def interval_of(query: IntervalQuery) -> str:
    return query.interval or current_app.config["BINANCE_INTERVAL"]


def bad_request(message: str) -> ApiError:
    return ApiError(400, "Bad Request", message)


@bp.get("/history/<symbol>", tags=[STORED], responses={
    200: History, **errors(400, 503, s400="A parameter outside its declared form, or start after end.",
                           s503=STORE_DOWN)})
def history(path: SymbolPath, query: HistoryQuery):
    """Stored candles in time order.

    From `start` if given, else the most recent `limit` up to `end` (or now)."""
    if query.start is not None and query.end is not None and query.start > query.end:
        raise bad_request("start is after end")
    interval, limit = interval_of(query), min(query.limit, HISTORY_MAX)
    candles = store().history(path.symbol, interval, query.start, query.end, limit)
    return jsonify(symbol=path.symbol, interval=interval, start=query.start, end=query.end, limit=limit,
                   count=len(candles), candles=[c.to_dict() for c in candles])


@bp.get("/analysis/<symbol>", tags=[STORED], responses={
    200: Analysis, **errors(400, 503, s400="A parameter outside its declared form, or a window of more than "
                                           "50,000 candles of the interval or ANALYSIS_MAX_CANDLES.",
                            s503=STORE_DOWN)})
def analysis_one(path: SymbolPath, query: AnalysisQuery):
    """Statistics over a window of one stream's stored candles.

    Return, volatility, VWAP, SMA, EMA, RSI, drawdown, volume."""
    try:
        with analysis_slot():
            return jsonify(analysis.analyze(store(), path.symbol, interval_of(query), query.window,
                                            current_app.config["ANALYSIS_MAX_CANDLES"]))
    except ValueError as exc:
        raise bad_request(str(exc)) from None


@bp.get("/analysis", tags=[STORED], responses={
    200: Movers, **errors(400, 503, s400="A parameter outside its declared form, or a window of more than "
                                         "50,000 candles of the interval, or window x stored symbols more "
                                         "than ANALYSIS_MAX_CANDLES.", s503=STORE_DOWN)})
def analysis_all(query: AnalysisQuery):
    """Every stored symbol of the interval ranked by return over the window."""
    try:
        with analysis_slot():
            return jsonify(analysis.top_movers(store(), interval_of(query), query.window,
                                               current_app.config["ANALYSIS_MAX_CANDLES"]))
    except ValueError as exc:
        raise bad_request(str(exc)) from None
