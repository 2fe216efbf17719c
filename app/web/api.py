"""The REST API: health, configuration, prices, statistics, subscriptions."""
from flask import Blueprint, current_app, jsonify, request

from config import Config

from ..services import SubscriptionError

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
    return jsonify({f"{c.symbol}@{c.interval}": c.to_dict() for c in services().prices.snapshot()})


@bp.get("/stats")
def stats():
    return jsonify(services().stats())


@bp.get("/symbols")
def symbols():
    return jsonify(services().subscriptions())


@bp.post("/symbol/<symbol>/<action>")
def change_subscription(symbol, action):
    if action not in ("subscribe", "unsubscribe"):
        return jsonify(error="Not Found", message=f"unknown action {action!r}: use subscribe or unsubscribe"), 404
    interval = request.args.get("interval", current_app.config["BINANCE_INTERVAL"])
    try:
        result = getattr(services(), action)(symbol, interval)
    except SubscriptionError as exc:
        return jsonify(error=action + " refused", message=str(exc)), exc.status
    return jsonify(result)
