"""The REST API: health, configuration, prices, statistics, subscriptions."""
import hmac
from functools import wraps

from flask import Blueprint, current_app, jsonify, request

from config import Config

from ..services import SubscriptionError
from . import error_reply

bp = Blueprint("api", __name__)


def services():
    return current_app.extensions["services"]


@bp.get("/health")
def health():
    body = services().health()
    return jsonify(body), 503 if body["status"] == "unhealthy" else 200


@bp.get("/config")
def config():
    return jsonify(Config.public(current_app.config))


@bp.get("/prices")
def prices():
    return jsonify({f"{c.symbol}@{c.interval}": {**c.to_dict(), "seq": seq}
                    for c, seq in services().prices.snapshot()})


@bp.get("/stats")
def stats():
    return jsonify(services().stats())


@bp.get("/symbols")
def symbols():
    return jsonify(services().subscriptions())


def require_api_key(view):
    """With API_KEY set, the view needs it in X-API-Key (compared in constant time)."""
    @wraps(view)
    def checked(*args, **kwargs):
        expected = current_app.config["API_KEY"]
        given = request.headers.get("X-API-Key", "")
        if expected and not hmac.compare_digest(given.encode(), expected.encode()):
            services().count_refusal("api_key")
            return error_reply(401, "Unauthorized", "missing or wrong X-API-Key header")
        return view(*args, **kwargs)
    return checked


@bp.post("/symbol/<symbol>/<action>")
@require_api_key
def change_subscription(symbol, action):
    if action not in ("subscribe", "unsubscribe"):
        return error_reply(404, "Not Found", f"unknown action {action!r}: use subscribe or unsubscribe")
    interval = request.args.get("interval", current_app.config["BINANCE_INTERVAL"])
    try:
        result = getattr(services(), action)(symbol, interval)
    except SubscriptionError as exc:
        return error_reply(exc.status, action + " refused", str(exc))
    return jsonify(result)
