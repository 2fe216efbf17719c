"""HTTP and WebSocket endpoints. Handlers stay thin: they parse the request,
call the services and shape the answer."""
import threading

from flask import jsonify
from werkzeug.exceptions import HTTPException


def error_reply(status: int, error: str, message: str, headers: dict | None = None):
    """Every error answer has this one shape, JSON {error, message}: clients
    of this API are programs."""
    return jsonify(error=error, message=message), status, headers or {}


def _reader_thread(target):
    """simple-websocket's per-connection reader. Daemon: one blocked on a
    silent peer must not hold the process at exit."""
    return threading.Thread(target=target, name="ws-reader", daemon=True)


def init_app(app):
    from . import api, pages, stream
    app.register_blueprint(api.bp)
    app.register_blueprint(pages.bp)
    from . import headers, metrics
    app.register_blueprint(metrics.bp)
    headers.init_app(app)
    from . import data
    app.register_blueprint(data.bp)
    app.config.setdefault("SOCK_SERVER_OPTIONS", {
        "ping_interval": app.config["WS_PING_INTERVAL"],
        "max_message_size": app.config["WS_MAX_MESSAGE_BYTES"],
        "thread_class": _reader_thread,
    })
    stream.sock.init_app(app)
    app.register_blueprint(stream.bp)

    @app.errorhandler(HTTPException)
    def http_error(exc):
        return error_reply(exc.code, exc.name, exc.description)

    @app.errorhandler(Exception)
    def unexpected_error(exc):
        app.logger.exception("unhandled error")
        return error_reply(500, "Internal Server Error", "unexpected error; see the server log")
