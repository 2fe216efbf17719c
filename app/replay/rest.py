"""The REST endpoints of Binance's spot API that a market-data client uses:
/api/v3/ping, /time, /exchangeInfo and /klines, with Binance's error JSON,
request weights and the X-MBX-USED-WEIGHT-1M header.

exchangeInfo lists the recorded symbols with Binance's shape but without
filters: filters carry prices and quantities, and the replay sends no value
that was not recorded.
"""
from __future__ import annotations

import math
import threading
import time

from flask import Blueprint, Response, current_app, request

from app.candles import INTERVALS, dumps

from .timeline import kline_row

bp = Blueprint("replay_rest", __name__)

# Binance's request weights for the endpoints served here.
WEIGHTS = {"ping": 1, "time": 1, "exchange_info": 20, "klines": 2}
KLINES_DEFAULT, KLINES_MAX = 500, 1000
QUOTE_ASSETS = ("USDT", "BUSD", "USDC", "FDUSD", "TUSD", "BTC", "ETH", "BNB", "EUR", "TRY")


class WeightMeter:
    """Request weight used in the current UTC minute, as Binance counts it."""

    def __init__(self, limit: int):
        self.limit = limit
        self._lock = threading.Lock()
        self._minute = 0
        self.used = 0

    def add(self, weight: int) -> tuple[int, float | None]:
        """Count a request; returns (weight used, seconds to wait if over)."""
        now = time.time()
        with self._lock:
            if int(now // 60) != self._minute:
                self._minute, self.used = int(now // 60), 0
            self.used += weight
            over = self.used > self.limit
            return self.used, (60 - now % 60) if over else None


def _replay():
    return current_app.extensions["replay"]


def _json(body, status: int = 200) -> Response:
    return Response(dumps(body), status=status, mimetype="application/json")


def error(code: int, msg: str, status: int = 400) -> Response:
    return _json({"code": code, "msg": msg}, status)


@bp.before_request
def count_weight():
    used, wait = _replay().weights.add(WEIGHTS.get(request.endpoint.rpartition(".")[2], 1))
    request.environ["replay.used_weight"] = used
    if wait is not None:
        resp = error(-1003, f"Too much request weight used; current limit is {_replay().weights.limit}"
                            " request weight per 1 MINUTE. Please use WebSocket Streams for live"
                            " updates to avoid polling the API.", 429)
        resp.headers["Retry-After"] = str(math.ceil(wait))
        return resp
    return None


@bp.after_request
def used_weight_header(resp: Response) -> Response:
    resp.headers["X-MBX-USED-WEIGHT-1M"] = str(request.environ.get("replay.used_weight", 0))
    return resp


@bp.get("/api/v3/ping")
def ping():
    return _json({})


@bp.get("/api/v3/time")
def server_time():
    return _json({"serverTime": _replay().market.server_time()})


def _symbol_info(symbol: str) -> dict:
    quote = next((q for q in QUOTE_ASSETS if symbol.endswith(q) and symbol != q), symbol[-4:])
    return {
        "symbol": symbol, "status": "TRADING",
        "baseAsset": symbol[:-len(quote)], "baseAssetPrecision": 8,
        "quoteAsset": quote, "quotePrecision": 8, "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8, "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": True, "ocoAllowed": True, "quoteOrderQtyMarketAllowed": True,
        "isSpotTradingAllowed": True, "isMarginTradingAllowed": False,
        "filters": [], "permissions": ["SPOT"],
    }


@bp.get("/api/v3/exchangeInfo")
def exchange_info():
    replay = _replay()
    symbols = list(replay.market.tapes)
    wanted = request.args.get("symbol")
    if wanted is not None:
        if wanted not in replay.market.tapes:
            return error(-1121, "Invalid symbol.")
        symbols = [wanted]
    return _json({
        "timezone": "UTC",
        "serverTime": replay.market.server_time(),
        "rateLimits": [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                        "limit": replay.weights.limit}],
        "exchangeFilters": [],
        "symbols": [_symbol_info(s) for s in symbols],
    })


def _int_arg(name: str) -> int | None:
    value = request.args.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise BadParameter(name) from None


class BadParameter(Exception):
    pass


@bp.errorhandler(BadParameter)
def bad_parameter(exc):
    return error(-1100, f"Illegal characters found in parameter '{exc.args[0]}'; legal range is '^[0-9]{{1,20}}$'.")


@bp.get("/api/v3/klines")
def klines():
    market = _replay().market
    symbol, interval = request.args.get("symbol"), request.args.get("interval")
    if not symbol:
        return error(-1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
    if not interval:
        return error(-1102, "Mandatory parameter 'interval' was not sent, was empty/null, or malformed.")
    if interval not in INTERVALS:
        return error(-1120, "Invalid interval.")
    tape = market.tapes.get(symbol)
    if tape is None:
        return error(-1121, "Invalid symbol.")
    start, end, limit = _int_arg("startTime"), _int_arg("endTime"), _int_arg("limit")
    if limit is not None and limit < 1:
        return error(-1130, "Data sent for parameter 'limit' is not valid.")
    limit = KLINES_DEFAULT if limit is None else min(limit, KLINES_MAX)
    if start is not None and end is not None and start > end:
        return error(-1023, "Start time is greater than end time.")
    if interval == "1s":
        return _json([])          # 1s klines cannot be derived from 1m recordings
    rows = tape.klines(interval, market.now(symbol), start, end, limit)
    return _json([kline_row(bar) for bar in rows])
