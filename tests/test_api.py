"""REST endpoints through Flask's test client (services not started)."""


def test_health_keeps_the_seed_keys_and_says_why(client):
    resp = client.get("/health")
    body = resp.get_json()
    for key in ("status", "crypto_provider", "active_websocket_connections", "subscribed_symbols"):
        assert key in body
    # services are not running in this fixture: that is unhealthy, and says so
    assert resp.status_code == 503 and body["status"] == "unhealthy"
    assert body["subscribed_symbols"] == ["BTCUSDT", "ETHUSDT"]


def test_health_with_nothing_to_follow_is_degraded_not_unhealthy(replay_server, tmp_path):
    from app import create_app
    app = create_app(TESTING=True, BINANCE_WS_URL=replay_server.ws_url, BINANCE_REST_URL=replay_server.url,
                     BINANCE_SYMBOLS=[], SQLITE_PATH=str(tmp_path / "c.sqlite3"), SPOOL_DIR=str(tmp_path / "spool"))
    services = app.extensions["services"]
    services.start()
    try:
        services.started_at -= 60  # past the start-up grace
        resp = app.test_client().get("/health")
        assert resp.status_code == 200 and resp.get_json()["status"] == "degraded"
        assert resp.get_json()["subscribed_streams"] == []
    finally:
        services.stop()


def test_config_never_shows_secrets(tmp_path):
    from app import create_app
    app = create_app(INFLUXDB_TOKEN="s3cret-token", API_KEY="s3cret-key",
                     SQLITE_PATH=str(tmp_path / "c.sqlite3"), SPOOL_DIR=str(tmp_path / "spool"))
    text = app.test_client().get("/config").get_data(as_text=True)
    assert "s3cret" not in text
    body = app.test_client().get("/config").get_json()
    assert body["INFLUXDB_TOKEN_SET"] is True and body["BINANCE_INTERVAL"] == "1m"


def test_index_serves_html_and_json(client):
    assert client.get("/").mimetype == "text/html"
    body = client.get("/", headers={"Accept": "application/json"}).get_json()
    assert "GET /health" in body["endpoints"]


def test_bad_subscriptions_get_clear_errors_and_change_nothing(client):
    before = client.get("/symbols").get_json()
    cases = [
        ("/symbol/BTC-USDT/subscribe", 400, "invalid symbol"),
        ("/symbol/BTCUSDT/subscribe?interval=7m", 400, "invalid interval"),
        ("/symbol/BTCUSDT/unsubscribe?interval=", 400, "invalid interval"),
        ("/symbol/BTCUSDT/explode", 404, "unknown action"),
        # the fixture's exchange is unreachable: we cannot vouch for the symbol
        ("/symbol/SOLUSDT/subscribe", 503, "cannot check the symbol"),
    ]
    for url, status, text in cases:
        resp = client.post(url)
        assert resp.status_code == status, (url, resp.get_json())
        assert text in resp.get_json()["message"]
    assert client.get("/symbols").get_json() == before


def test_unknown_routes_and_methods_answer_json(client):
    resp = client.get("/nope")
    assert resp.status_code == 404 and resp.get_json()["error"] == "Not Found"
    assert client.get("/symbol/BTCUSDT/subscribe").status_code == 405


def test_api_key_guards_mutations_only(tmp_path):
    from app import create_app
    app = create_app(API_KEY="k3y", BINANCE_REST_URL="http://127.0.0.1:9",
                     SQLITE_PATH=str(tmp_path / "c.sqlite3"), SPOOL_DIR=str(tmp_path / "spool"))
    c = app.test_client()
    assert c.post("/symbol/BTCUSDT/subscribe").status_code == 401
    assert c.post("/symbol/BTCUSDT/subscribe", headers={"X-API-Key": "wrong"}).status_code == 401
    # the right key gets through to validation (the exchange here is unreachable)
    assert c.post("/symbol/SOLUSDT/subscribe", headers={"X-API-Key": "k3y"}).status_code == 503
    assert c.get("/prices").status_code == 200
    assert c.get("/stats").get_json()["refusals"] == {"api_key": 2}
