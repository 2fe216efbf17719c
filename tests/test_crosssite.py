"""Web pages on other sites cannot change the server's state: any page can
make its visitor's browser POST here (fetch with mode "no-cors" needs no
permission), so what a browser marks as cross-site is refused, with or
without API_KEY, while the dashboard (same origin), programs (no browser
headers) and listed origins work. Under real gunicorn, bound like the
default (all interfaces, no key)."""
import pytest

from tests.harness import LiveApp, wait_until

ALLOWED = "http://dash.example:3000"
EVIL = "http://evil.example"


@pytest.fixture(scope="module")
def open_app(replay_server, tmp_path_factory):
    app = LiveApp(tmp_path_factory.mktemp("crosssite"), replay_server.url, BINANCE_SYMBOLS="BTCUSDT,ETHUSDT",
                  ALLOWED_ORIGINS=ALLOWED)
    app.env["BIND"] = f"0.0.0.0:{app.port}"
    app.start()
    yield app
    app.stop()


def following(app, stream: str) -> bool:
    status, body = app.get("/symbols")
    assert status == 200, body
    return stream in [s["stream"] for s in body]


def test_the_start_up_log_says_when_anyone_may_change_state(open_app, live_app):
    assert "subscribe/unsubscribe are open to anyone" in open_app.log()
    assert "open to anyone" not in live_app.log()  # bound to 127.0.0.1


@pytest.mark.parametrize("headers", [
    {"Origin": EVIL, "Sec-Fetch-Site": "cross-site"},
    {"Origin": "http://other.127.0.0.1.nip.io", "Sec-Fetch-Site": "same-site"},
    {"Origin": EVIL},                      # a browser without Sec-Fetch-Site
    {"Origin": "null"},                    # a sandboxed page
], ids=["cross-site", "same-site", "origin-only", "null-origin"])
def test_cross_site_requests_change_nothing(open_app, headers):
    assert following(open_app, "ethusdt@kline_1m")
    before = open_app.get("/stats")[1]["refusals"].get("cross_site", 0)
    status, body = open_app.post("/symbol/ETHUSDT/unsubscribe", **headers)
    assert status == 403 and body["error"] == "Forbidden", body
    assert "cross-site request refused" in body["message"] and "ALLOWED_ORIGINS" in body["message"]
    assert following(open_app, "ethusdt@kline_1m")
    assert open_app.get("/stats")[1]["refusals"]["cross_site"] == before + 1
    # Reading is not changing: GETs from anywhere still answer.
    assert open_app.get("/symbols", **headers)[0] == 200


def test_same_origin_programs_and_allowed_origins_still_work(open_app):
    here = f"http://127.0.0.1:{open_app.port}"
    # The dashboard's own form: a same-origin fetch.
    status, body = open_app.post("/symbol/BTCUSDT/subscribe?interval=5m", Origin=here,
                                 **{"Sec-Fetch-Site": "same-origin"})
    assert status == 200, body
    # An older browser that sends only Origin, naming this host.
    status, body = open_app.post("/symbol/BTCUSDT/unsubscribe?interval=5m", Origin=here)
    assert status == 200 and body["status"] == "removed", body
    # curl and scripts send neither header.
    status, body = open_app.post("/symbol/BTCUSDT/subscribe?interval=15m")
    assert status == 200, body
    # A listed origin, cross-site as far as the browser is concerned, may
    # act and read the answer.
    status, body = open_app.post("/symbol/BTCUSDT/unsubscribe?interval=15m", Origin=ALLOWED,
                                 **{"Sec-Fetch-Site": "cross-site"})
    assert status == 200 and body["status"] == "removed", body
    wait_until(lambda: not following(open_app, "btcusdt@kline_15m"), 10, message="15m stream removed")


def test_allowed_origins_get_cors_answers(open_app):
    import urllib.request
    req = urllib.request.Request(open_app.url + "/symbol/BTCUSDT/subscribe", method="OPTIONS", headers={
        "Origin": ALLOWED, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-api-key"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.headers["Access-Control-Allow-Origin"] == ALLOWED
        assert "X-API-Key" in resp.headers["Access-Control-Allow-Headers"]
        assert "POST" in resp.headers["Access-Control-Allow-Methods"]
    req = urllib.request.Request(open_app.url + "/symbols", headers={"Origin": EVIL})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert "Access-Control-Allow-Origin" not in resp.headers


def test_a_key_does_not_make_cross_site_requests_acceptable(tmp_path):
    """With API_KEY set, a page that somehow has the key (typed into a form
    on another site) is still refused, before the key is even looked at."""
    from app import create_app
    app = create_app(API_KEY="k3y", BINANCE_REST_URL="http://127.0.0.1:9",
                     SQLITE_PATH=str(tmp_path / "c.sqlite3"), SPOOL_DIR=str(tmp_path / "spool"))
    c = app.test_client()
    r = c.post("/symbol/ETHUSDT/unsubscribe", headers={"X-API-Key": "k3y", "Origin": EVIL,
                                                      "Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403
    r = c.post("/symbol/ETHUSDT/unsubscribe", headers={"X-API-Key": "k3y", "Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 200 and r.json["status"] == "removed"
    assert c.get("/stats").json["refusals"] == {"cross_site": 1}
