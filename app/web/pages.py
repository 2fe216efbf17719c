"""GET /: the status page (JSON API info for Accept: application/json)."""
from flask import Blueprint, current_app, jsonify, render_template, request

bp = Blueprint("pages", __name__)

ENDPOINTS = {
    "GET /health": "service health (200 healthy/degraded, 503 unhealthy)",
    "GET /config": "non-secret settings",
    "GET /prices": "latest candle of every stream",
    "GET /stats": "throughput, feed, clients and storage statistics",
    "GET /symbols": "subscribed streams",
    "POST /symbol/{symbol}/subscribe?interval=1m": "follow a stream",
    "POST /symbol/{symbol}/unsubscribe?interval=1m": "stop following a stream",
    "WS /ws/price": "live updates (see README)",
}


@bp.get("/")
def index():
    services = current_app.extensions["services"]
    if request.accept_mimetypes.best_match(["text/html", "application/json"]) == "application/json":
        return jsonify(name="crypto price stream server", endpoints=ENDPOINTS)
    return render_template("index.html", health=services.health(), stats=services.stats(),
                           prices=[c for c, _ in services.prices.snapshot()], endpoints=ENDPOINTS)
