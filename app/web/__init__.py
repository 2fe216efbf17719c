"""HTTP and WebSocket endpoints. Handlers stay thin: they parse the request,
call the services and shape the answer.

The REST blueprints are flask-openapi3 APIBlueprints: each view declares its
path and query parameters and its answers as pydantic models (schemas.py),
and the same models both validate the request and make /openapi.json."""
from flask import jsonify
from flask_openapi3 import Info, OpenAPI
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from ..storage import StorageError

# Headers of a werkzeug error worth passing on (405's Allow, 503's Retry-After);
# its Content-Type is for the HTML body we do not send.
PASSED_ON_HEADERS = ("Allow", "Retry-After", "WWW-Authenticate")
API_VERSION = "1"


class ApiError(Exception):
    """An error answer raised from anywhere under a view."""

    def __init__(self, status: int, error: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.error, self.headers = status, error, headers


def error_reply(status: int, error: str, message: str, headers: dict | None = None):
    """Every error answer has this one shape, JSON {error, message}: clients
    of this API are programs."""
    return jsonify(error=error, message=message), status, headers or {}


def validation_message(exc: ValidationError) -> str:
    """The first problem, in the words of our own validators when they
    raised it (the messages users know), else pydantic's."""
    first = exc.errors(include_url=False)[0]
    if first["type"] == "value_error":
        return str(first["ctx"]["error"])
    name = ".".join(str(part) for part in first["loc"]) or "request"
    return f"invalid {name} {first.get('input')!r}: {first['msg']}"


def validation_error(exc: ValidationError):
    from flask import make_response
    return make_response(error_reply(400, "Bad Request", validation_message(exc)))


class ApiApp(OpenAPI):
    """The Flask app: flask-openapi3's, which collects the declarations."""

    def generate_spec_json(self):
        super().generate_spec_json()
        # It adds its own validation-error answer (an array) to every
        # operation without a 400; ours is ErrorBody, declared where a 400 can happen.
        for item in self.spec_json["paths"].values():
            for operation in item.values():
                answer = operation["responses"].get(self.validation_error_status, {})
                if "ValidationErrorModel" in str(answer):
                    del operation["responses"][self.validation_error_status]
        del self.spec_json["components"]["schemas"][self.validation_error_model.__name__]


def create_flask_app(import_name: str) -> OpenAPI:
    """flask-openapi3's own document pages load their scripts from a CDN,
    which our Content-Security-Policy forbids: ours are under /docs."""
    return ApiApp(import_name, info=Info(title="Crypto price stream server", version=API_VERSION),
                   security_schemes={"ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
                   doc_ui=False, validation_error_status=400, validation_error_callback=validation_error)


def init_app(app):
    from . import api, data, docs, metrics, pages, stream
    app.register_api(api.bp)
    app.register_blueprint(pages.bp)
    app.register_api(metrics.bp)
    from . import headers
    headers.init_app(app)
    app.register_api(data.bp)
    app.register_blueprint(docs.bp)
    from ..clients.session import InlineReader
    app.config.setdefault("SOCK_SERVER_OPTIONS", {
        "ping_interval": app.config["WS_PING_INTERVAL"],
        "max_message_size": app.config["WS_MAX_MESSAGE_BYTES"],
        "thread_class": InlineReader,  # one thread per client: the session reads
    })
    stream.sock.init_app(app)
    app.register_blueprint(stream.bp)

    @app.errorhandler(ApiError)
    def api_error(exc):
        return error_reply(exc.status, exc.error, str(exc), exc.headers)

    @app.errorhandler(StorageError)
    def storage_unavailable(exc):
        return error_reply(503, "Storage Unavailable", exc.diagnosis)

    @app.errorhandler(HTTPException)
    def http_error(exc):
        headers = {k: v for k, v in exc.get_headers() if k in PASSED_ON_HEADERS}
        return error_reply(exc.code, exc.name, exc.description, headers)

    @app.errorhandler(Exception)
    def unexpected_error(exc):
        app.logger.exception("unhandled error")
        return error_reply(500, "Internal Server Error", "unexpected error; see the server log")
