"""WS /ws/price: the live update stream (protocol in README.md)."""
from flask import Blueprint, current_app, request
from flask_sock import Sock

from ..clients import ClientSession
from . import error_reply

bp = Blueprint("stream", __name__)
sock = Sock()


@bp.before_request
def check_origin():
    """Refuse upgrades from pages we do not trust, before the handshake."""
    allowed = current_app.config["WS_ALLOWED_ORIGINS"]
    origin = request.headers.get("Origin")
    if allowed and origin is not None and origin not in allowed:
        current_app.extensions["services"].count_refusal("origin")
        return error_reply(403, "Forbidden", f"origin {origin!r} is not allowed")
    return None


@sock.route("/ws/price", bp=bp)
def price_stream(ws):
    ClientSession(current_app.extensions["services"].hub, ws, request.remote_addr or "").run(request.args)
