"""HTTP and WebSocket endpoints. Handlers stay thin: they parse the request,
call the services and shape the answer."""
import threading

from flask import jsonify
from werkzeug.exceptions import HTTPException


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
        # JSON errors everywhere: clients of this API are programs.
        return jsonify(error=exc.name, message=exc.description), exc.code

    @app.errorhandler(Exception)
    def unexpected_error(exc):
        app.logger.exception("unhandled error")
        return jsonify(error="Internal Server Error", message="unexpected error; see the server log"), 500
