"""WS /ws/price: the live update stream (protocol in README.md)."""
from flask import Blueprint, current_app, request
from flask_sock import Sock

from ..clients import POLICY_VIOLATION, ClientError, ClientSession

bp = Blueprint("stream", __name__)
sock = Sock()


@sock.route("/ws/price", bp=bp)
def price_stream(ws):
    hub = current_app.extensions["services"].hub
    try:
        session = ClientSession(hub, ws, request.args)
    except (ClientError, ValueError) as exc:
        ws.close(POLICY_VIOLATION, str(exc)[:120])
        return
    session.run()
