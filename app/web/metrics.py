"""GET /metrics: Prometheus text format, from the app's own registry."""
from flask import Blueprint, Response, current_app
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..metrics import build_registry

bp = Blueprint("metrics", __name__)


@bp.record_once
def create_registry(state):
    state.app.extensions["metrics_registry"] = build_registry(state.app.extensions["services"])


@bp.get("/metrics")
def metrics():
    body = generate_latest(current_app.extensions["metrics_registry"])
    return Response(body, content_type=CONTENT_TYPE_LATEST)
