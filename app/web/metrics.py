"""GET /metrics: Prometheus text format, from the app's own registry."""
from flask import Response, current_app
from flask_openapi3 import APIBlueprint, Tag
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..metrics import build_registry

bp = APIBlueprint("metrics", __name__)
TEXT = {"description": "Prometheus text exposition format 0.0.4.",
        "content": {"text/plain": {"schema": {"type": "string"}, "example": (
            "# HELP pricestream_feed_messages_total Frames received from Binance.\n"
            "# TYPE pricestream_feed_messages_total counter\npricestream_feed_messages_total 7200.0\n")}}}


@bp.record_once
def create_registry(state):
    state.app.extensions["metrics_registry"] = build_registry(state.app.extensions["services"])


@bp.get("/metrics", tags=[Tag(name="metrics")], responses={200: TEXT})
def metrics():
    """Prometheus metrics (the numbers of /stats, by Prometheus' conventions)."""
    body = generate_latest(current_app.extensions["metrics_registry"])
    return Response(body, content_type=CONTENT_TYPE_LATEST)
