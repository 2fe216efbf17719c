"""GET /: the dashboard (JSON API info for Accept: application/json).

Rendered complete on the server, so it is useful without JavaScript; the
scripts in static/js then keep it live over /ws/price."""
from pathlib import Path

from flask import Blueprint, current_app, jsonify, render_template, request

from ..candles import INTERVALS, normalize_symbol

bp = Blueprint("pages", __name__)

ENDPOINTS = {
    "GET /health": "service health (200 healthy/degraded, 503 unhealthy)",
    "GET /config": "non-secret settings",
    "GET /prices": "latest candle of every stream",
    "GET /stats": "throughput, feed, clients and storage statistics",
    "GET /symbols": "subscribed streams",
    "GET /history/{symbol}?interval=1m&limit=500": "stored candles",
    "GET /analysis/{symbol}?interval=1m&window=24h": "statistics over stored candles",
    "POST /symbol/{symbol}/subscribe?interval=1m": "follow a stream",
    "POST /symbol/{symbol}/unsubscribe?interval=1m": "stop following a stream",
    "WS /ws/price": "live updates (see /asyncapi.json)",
    "GET /metrics": "Prometheus metrics",
    "GET /docs": "the REST API in Swagger UI",
    "GET /openapi.json": "the REST API, OpenAPI 3.1",
    "GET /asyncapi.json": "WS /ws/price, AsyncAPI 3",
}

# Offered by the chart's interval switch besides the subscribed ones.
CHART_INTERVALS = ("1m", "5m", "15m", "1h", "4h", "1d")
CHART_LIBRARY = "vendor/lightweight-charts.standalone.production.js"


def selected_stream(streams: list[dict]) -> tuple[str | None, str]:
    """The chart's stream: ?symbol=&interval= when valid, else the first one
    followed, preferring the configured interval."""
    default_interval = current_app.config["BINANCE_INTERVAL"]
    interval = request.args.get("interval", default_interval)
    if interval not in INTERVALS:
        interval = default_interval
    try:
        return normalize_symbol(request.args["symbol"]), interval
    except (KeyError, ValueError):
        pass
    preferred = [s for s in streams if s["interval"] == default_interval] or streams
    if preferred:
        return preferred[0]["symbol"], preferred[0]["interval"]
    return None, interval


@bp.get("/")
def index():
    if request.accept_mimetypes.best_match(["text/html", "application/json"]) == "application/json":
        return jsonify(name="crypto price stream server", endpoints=ENDPOINTS)
    services = current_app.extensions["services"]
    streams = services.subscriptions()
    symbol, interval = selected_stream(streams)
    live_intervals = {s["interval"] for s in streams if s["symbol"] == symbol}
    chart_intervals = sorted(live_intervals | set(CHART_INTERVALS) | {interval}, key=INTERVALS.__getitem__)
    return render_template(
        "index.html",
        health=services.health(), stats=services.stats(),
        prices=[c for c, _ in services.prices.snapshot()],
        symbol=symbol, interval=interval,
        chart_intervals=chart_intervals, live_intervals=live_intervals, standard_intervals=CHART_INTERVALS,
        intervals=list(INTERVALS),
        chart_available=(Path(current_app.static_folder) / CHART_LIBRARY).is_file(),
        chart_library=CHART_LIBRARY,
        api_key_required=bool(current_app.config["API_KEY"]),
        endpoints=ENDPOINTS,
    )


# -- number formats, the same as static/js/format.js -------------------------
def price_decimals(value: float) -> int:
    a = abs(value)
    return 2 if a >= 100 else 4 if a >= 1 else 6 if a >= 0.01 else 8


@bp.app_template_filter("price")
def format_price(value, like=None) -> str:
    """`like` sets the precision from another number (a change, by its price)."""
    if value is None:
        return "—"
    return f"{value:,.{price_decimals(value if like is None else like)}f}"


@bp.app_template_filter("signed")
def format_signed(value, like=None) -> str:
    return ("+" if value > 0 else "") + format_price(value, like)


@bp.app_template_filter("pct")
def format_pct(value) -> str:
    return "—" if value is None else f"{value:+.2f}%"


@bp.app_template_filter("compact")
def format_compact(value) -> str:
    if value is None:
        return "—"
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= size:
            return f"{value / size:.2f}{suffix}"
    return f"{value:.2f}".rstrip("0").rstrip(".")


@bp.app_template_filter("duration")
def format_duration(seconds) -> str:
    if seconds is None:
        return "—"
    s = int(seconds)
    if s < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{s} s"
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return f"{d}d {h}h" if d else f"{h}h {m}m" if h else f"{m}m {s}s"


@bp.app_template_filter("direction")
def direction(value) -> str:
    """The CSS class for a change: up, down or flat."""
    return "flat" if not value else "up" if value > 0 else "down"
