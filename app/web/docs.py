"""The API's descriptions: /openapi.json (made by flask-openapi3 from the
views' declarations), /asyncapi.json (/ws/price) and /docs, Swagger UI
reading the first. Swagger UI is vendored from npm like the chart library,
so /docs runs under the same Content-Security-Policy: its start-up code is
static/js/docs.js, not an inline script."""
from pathlib import Path

from flask import Blueprint, current_app, jsonify, render_template, request

from . import asyncapi

bp = Blueprint("docs", __name__)
SWAGGER_UI = ("vendor/swagger-ui-bundle.js", "vendor/swagger-ui.css")


@bp.get("/openapi.json")
def openapi_document():
    return jsonify(current_app.api_doc)


@bp.get("/asyncapi.json")
def asyncapi_document():
    return jsonify(asyncapi.document(request.host))


@bp.get("/docs")
def docs():
    static = Path(current_app.static_folder)
    return render_template("docs.html", swagger_available=all((static / f).is_file() for f in SWAGGER_UI),
                           swagger_js=SWAGGER_UI[0], swagger_css=SWAGGER_UI[1])
