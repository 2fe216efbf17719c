"""The REST API: health, configuration, prices, statistics, subscriptions."""
import hmac
from functools import wraps

from flask import current_app, jsonify, request
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel

from config import Config

from ..services import SubscriptionError
from . import ApiError
from .schemas import (Health, IntervalQuery, Prices, Settings, Stats, Streams, SubscriptionResult, SymbolPath,
                      errors)

bp = APIBlueprint("api", __name__)
STATE = Tag(name="state", description="What the server follows and how it is doing.")
SUBSCRIPTIONS = Tag(name="subscriptions", description="Streams followed from Binance.")
# Why the services refused a subscription change, as an HTTP status: only
# the web layer knows about statuses.
SUBSCRIPTION_STATUS = {
    "invalid": 400,
    "unknown_symbol": 404,
    "limit": 409,
    "upstream_refused": 502,
    "upstream_unavailable": 503,
}


def services():
    return current_app.extensions["services"]


@bp.get("/health", tags=[STATE], responses={200: Health, 503: {
    "description": "Unhealthy: a thread died, or the feed has been down past the start-up grace. The same body.",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Health"}}}}})
def health():
    """Service health: healthy or degraded (200), unhealthy (503)."""
    body = services().health()
    return jsonify(body), 503 if body["status"] == "unhealthy" else 200


@bp.get("/config", tags=[STATE], responses={200: Settings})
def config():
    """The non-secret settings."""
    return jsonify(Config.public(current_app.config))


@bp.get("/prices", tags=[STATE], responses={200: Prices})
def prices():
    """The latest candle of every stream."""
    return jsonify({f"{c.symbol}@{c.interval}": {**c.to_dict(), "seq": seq}
                    for c, seq in services().prices.snapshot()})


@bp.get("/stats", tags=[STATE], responses={200: Stats})
def stats():
    """Throughput, feed, clients and storage statistics."""
    return jsonify(services().stats())


@bp.get("/symbols", tags=[SUBSCRIPTIONS], responses={200: Streams})
def symbols():
    """The streams followed."""
    return jsonify(services().subscriptions())


def require_api_key(view):
    """With API_KEY set, the view needs it in X-API-Key (compared in constant time)."""
    @wraps(view)
    def checked(*args, **kwargs):
        expected = current_app.config["API_KEY"]
        given = request.headers.get("X-API-Key", "")
        if expected and not hmac.compare_digest(given.encode(), expected.encode()):
            services().count_refusal("api_key")
            raise ApiError(401, "Unauthorized", "missing or wrong X-API-Key header")
        return view(*args, **kwargs)
    return checked


def change_subscription(action: str, symbol: str, interval: str | None):
    try:
        return jsonify(getattr(services(), action)(symbol, interval or current_app.config["BINANCE_INTERVAL"]))
    except SubscriptionError as exc:
        headers = {"Retry-After": str(max(1, round(exc.retry_after)))} if exc.retry_after else None
        raise ApiError(SUBSCRIPTION_STATUS[exc.reason], f"{action} refused", str(exc), headers) from None


# Without API_KEY the key is not needed: {} is the "no security" alternative.
KEY = [{}, {"ApiKey": []}]


@bp.post("/symbol/<symbol>/subscribe", tags=[SUBSCRIPTIONS], security=KEY, responses={
    200: SubscriptionResult, **errors(400, 401, 403, 404, 409, 502, 503, s503="Binance could not be asked "
                                      "whether it lists the symbol (unreachable, or rate-limited: Retry-After).")})
@require_api_key
def subscribe(path: SymbolPath, query: IntervalQuery):
    """Follow a stream.

    Its candles are stored, served and streamed from now on, and the recent
    ones fetched. Waits up to 5 s for Binance to confirm."""
    return change_subscription("subscribe", path.symbol, query.interval)


@bp.post("/symbol/<symbol>/unsubscribe", tags=[SUBSCRIPTIONS], security=KEY, responses={
    200: SubscriptionResult, **errors(400, 401, 403)})
@require_api_key
def unsubscribe(path: SymbolPath, query: IntervalQuery):
    """Stop following a stream (stored candles stay)."""
    return change_subscription("unsubscribe", path.symbol, query.interval)


class ActionPath(BaseModel):
    symbol: str
    action: str


@bp.post("/symbol/<symbol>/<action>", doc_ui=False)
@require_api_key
def unknown_action(path: ActionPath):
    raise ApiError(404, "Not Found", f"unknown action {path.action!r}: use subscribe or unsubscribe")
