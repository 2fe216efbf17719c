"""The API's descriptions, checked by tools from outside the project:
openapi-spec-validator on /openapi.json, schemathesis attacking the live
server (gunicorn, replay exchange) through that document, the official
AsyncAPI parser (@asyncapi/parser, from npm) on /asyncapi.json, and that
document's references and coverage of /ws/price."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from openapi_spec_validator import validate

from app.web.headers import CSP
from tests.harness import ROOT, http

# Rules no schema states, so valid-looking input may still get a 400:
# start after end, a calendar date that does not exist, a window of more
# than 50,000 candles of the chosen interval. Every other check stays strict.
SCHEMATHESIS_CONFIG = """
[[operations]]
include-path-regex = "^/(history|analysis)"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "404"]
"""
GET_EXAMPLES = 100
POST_EXAMPLES = 25


def test_the_openapi_document_is_valid_and_covers_the_api(client):
    doc = client.get("/openapi.json").get_json()
    validate(doc)  # raises with the first problem
    assert doc["openapi"].startswith("3.1")
    assert set(doc["paths"]) == {"/health", "/config", "/prices", "/stats", "/symbols", "/metrics",
                                 "/history/{symbol}", "/analysis/{symbol}", "/analysis",
                                 "/symbol/{symbol}/subscribe", "/symbol/{symbol}/unsubscribe"}
    history = doc["paths"]["/history/{symbol}"]["get"]
    params = {p["name"]: p["schema"] for p in history["parameters"]}
    assert params["symbol"]["pattern"] == "^[A-Za-z0-9]{2,20}$" and "1M" in params["interval"]["enum"]
    # every error documented has the one shape, with an example
    for path in doc["paths"].values():
        for operation in path.values():
            for status, answer in operation["responses"].items():
                if status.startswith(("4", "5")) and status != "503" or "ErrorBody" in str(answer):
                    body = answer["content"]["application/json"]
                    assert body["schema"]["title"] == "ErrorBody" and set(body["example"]) == {"error", "message"}


def test_bad_input_is_refused_with_the_messages_users_know(client):
    cases = [("/history/BTC-USDT", "invalid symbol 'BTC-USDT'"), ("/history/BTCUSDT?interval=7m", "invalid interval"),
             ("/history/BTCUSDT?limit=ten", "invalid limit 'ten'"), ("/history/BTCUSDT?limit=0", "at least 1"),
             ("/history/BTCUSDT?start=yesterday", "invalid start 'yesterday'"),
             ("/history/BTCUSDT?start=2&end=1", "start is after end"),
             ("/analysis/BTCUSDT?window=%D9%A3", "invalid window"),  # an Arabic-Indic 3: not the declared digits
             ("/history/%C3%9F%C3%9F", "invalid symbol")]            # "ßß", which upper() would make "SSSS"
    for url, text in cases:
        r = client.get(url)
        assert r.status_code == 400 and r.json["error"] == "Bad Request" and text in r.json["message"], (url, r.json)


def test_the_docs_page_runs_under_the_same_policy(client):
    r = client.get("/docs")
    assert r.status_code == 200 and r.headers["Content-Security-Policy"] == CSP
    html = r.get_data(as_text=True)
    assert "/openapi.json" in html and "/asyncapi.json" in html
    assert "<script>" not in html and "<script " + "type" not in html  # only src= scripts
    if (Path(client.application.static_folder) / "vendor/swagger-ui-bundle.js").is_file():
        assert "js/docs.js" in html and "vendor/swagger-ui-bundle.js" in html
    else:
        assert "Swagger UI is not installed" in html


def refs(node):
    if isinstance(node, dict):
        if "$ref" in node:
            yield node["$ref"]
        for v in node.values():
            yield from refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from refs(v)


def test_the_asyncapi_document_describes_the_stream(client):
    doc = client.get("/asyncapi.json", headers={"Host": "prices.example:8000"}).get_json()
    assert doc["asyncapi"] == "3.0.0" and doc["servers"]["this"]["host"] == "prices.example:8000"
    for ref in refs(doc):  # every reference resolves within the document
        node = doc
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
    channel = doc["channels"]["price"]
    assert channel["address"] == "/ws/price"
    assert set(channel["bindings"]["ws"]["query"]["properties"]) == {"symbols", "batch", "epoch", "last_seq"}
    assert set(channel["x-close-codes"]) == {"1001", "1007", "1008", "1009", "1011", "1013"}
    sent = {r.rsplit("/", 1)[1] for r in refs(doc["operations"]["sendUpdates"]["messages"])}
    received = {r.rsplit("/", 1)[1] for r in refs(doc["operations"]["receiveActions"]["messages"])}
    assert sent == {"snapshot", "priceUpdate", "gap", "subscriptions", "pong", "error"}
    assert received == {"subscribe", "unsubscribe", "ping"}


def test_the_asyncapi_parser_finds_no_error_in_the_served_document(live_app):
    if not (shutil.which("node") and shutil.which("npm")):
        pytest.skip("node and npm are needed for @asyncapi/parser (`make test` installs it with npm ci)")
    status, doc = http("GET", f"{live_app.url}/asyncapi.json")
    assert status == 200, doc
    run = subprocess.run(["node", str(ROOT / "tests/asyncapi_validate.mjs")], input=json.dumps(doc),
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-6000:] or run.stdout[-2000:]


def schemathesis(live_app, tmp_path, *args) -> subprocess.CompletedProcess:
    config = tmp_path / "schemathesis.toml"
    config.write_text(SCHEMATHESIS_CONFIG)
    return subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run", f"{live_app.url}/openapi.json",
         "--seed", "1", "--request-timeout", "15", "--continue-on-failure", *args],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)


def test_schemathesis_every_check_on_the_read_operations(live_app, tmp_path):
    run = schemathesis(live_app, tmp_path, "--include-method", "GET", "--checks", "all",
                       "--max-examples", str(GET_EXAMPLES))
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]


def test_schemathesis_no_server_error_from_the_write_operations(live_app, tmp_path):
    run = schemathesis(live_app, tmp_path, "--include-method", "POST", "--checks", "not_a_server_error",
                       "--max-examples", str(POST_EXAMPLES))
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]


def test_the_documented_candle_is_the_one_the_server_sends():
    """The answers' shape is declared beside the code that builds it
    (Candle.to_dict): the two must name the same fields, or the document
    drifts from what clients get."""
    from app.candles import Candle as StreamCandle
    from app.web.schemas import CANDLE_EXAMPLE, Candle
    sent = StreamCandle("BTCUSDT", "1m", 1577836800000, 1577836859999, 7195.24, 7196.25, 7183.14, 7186.68,
                        51.642812, 371233.51835535, 493, True, 1577836860000).to_dict()
    assert list(Candle.model_fields) == list(sent)
    assert CANDLE_EXAMPLE == sent
