"""Streams subscribed and unsubscribed through the API survive a restart:
the real server under gunicorn, stopped with SIGTERM and started again on
the same directory, against the replay exchange."""
import json
import subprocess
import sys

from tests.harness import ROOT, LiveApp


def followed(app: LiveApp) -> set[str]:
    status, body = app.get("/symbols")
    assert status == 200, body
    return {s["stream"] for s in body}


def restarted(app: LiveApp, **env) -> LiveApp:
    app.stop()
    again = LiveApp(app.tmp, None, **env)
    again.env.update({k: v for k, v in app.env.items() if k not in ("BIND", *env)})
    return again.start()


def test_a_subscribed_stream_is_followed_again_after_a_restart(replay_server, tmp_path):
    app = LiveApp(tmp_path, replay_server.url, BINANCE_SYMBOLS="BTCUSDT,ETHUSDT").start()
    try:
        status, body = app.post("/symbol/BTCUSDT/subscribe?interval=5m")
        assert status == 200 and body["remembered"] is True, body
        app = restarted(app)
        assert followed(app) == {"btcusdt@kline_1m", "ethusdt@kline_1m", "btcusdt@kline_5m"}
        assert "following 3 streams saved in" in app.log()
    finally:
        app.stop()


def test_an_unsubscribed_configured_stream_stays_gone_after_a_restart(replay_server, tmp_path):
    app = LiveApp(tmp_path, replay_server.url, BINANCE_SYMBOLS="BTCUSDT,ETHUSDT").start()
    try:
        status, body = app.post("/symbol/ETHUSDT/unsubscribe?interval=1m")
        assert status == 200 and body["remembered"] is True, body
        app = restarted(app)
        assert followed(app) == {"btcusdt@kline_1m"}
    finally:
        app.stop()


def test_binance_symbols_changed_since_still_apply_beside_saved_subscriptions(replay_server, tmp_path):
    app = LiveApp(tmp_path, replay_server.url, BINANCE_SYMBOLS="BTCUSDT").start()
    try:
        assert app.post("/symbol/ETHUSDT/subscribe?interval=5m")[0] == 200
        # BTCUSDT taken out of the settings, ETHUSDT put in: the runtime
        # subscription stays, and the settings' change applies too.
        app = restarted(app, BINANCE_SYMBOLS="ETHUSDT")
        assert followed(app) == {"ethusdt@kline_1m", "ethusdt@kline_5m"}
        assert "1 added, 1 removed" in app.log()
    finally:
        app.stop()


def test_a_garbage_file_is_moved_aside_and_the_server_starts_from_binance_symbols(replay_server, tmp_path):
    saved = tmp_path / "subscriptions.json"
    saved.write_bytes(b'{"streams": ["btcusdt@kline_5m", \x00\xff torn')
    app = LiveApp(tmp_path, replay_server.url, BINANCE_SYMBOLS="BTCUSDT,ETHUSDT").start()
    try:
        assert followed(app) == {"btcusdt@kline_1m", "ethusdt@kline_1m"}
        aside = list(tmp_path.glob("subscriptions.json.corrupt-*"))
        assert len(aside) == 1 and aside[0].read_bytes().endswith(b"torn"), aside
        assert not saved.exists()
        assert "cannot be read" in app.log() and str(aside[0]) in app.log()
        # The next change writes a good file again.
        assert app.post("/symbol/BTCUSDT/subscribe?interval=5m")[1]["remembered"] is True
        assert json.loads(saved.read_text())["streams"] == ["btcusdt@kline_1m", "btcusdt@kline_5m",
                                                            "ethusdt@kline_1m"]
    finally:
        app.stop()


def test_a_stream_name_that_is_not_one_makes_the_file_unreadable(replay_server, tmp_path):
    (tmp_path / "subscriptions.json").write_text(json.dumps(
        {"streams": ["btcusdt@kline_5m", "BTC-USDT@kline_7m"], "configured": []}))
    app = LiveApp(tmp_path, replay_server.url, BINANCE_SYMBOLS="ETHUSDT").start()
    try:
        assert followed(app) == {"ethusdt@kline_1m"}
        assert len(list(tmp_path.glob("subscriptions.json.corrupt-*"))) == 1
    finally:
        app.stop()


def test_a_failed_write_still_subscribes_and_says_it_is_not_remembered(replay_server, tmp_path):
    (tmp_path / "not-a-dir").write_text("a file where the directory should be")
    app = LiveApp(tmp_path, replay_server.url, BINANCE_SYMBOLS="BTCUSDT",
                  SUBSCRIPTIONS_PATH=str(tmp_path / "not-a-dir" / "subscriptions.json")).start()
    try:
        status, body = app.post("/symbol/ETHUSDT/subscribe?interval=1m")
        assert status == 200 and body["remembered"] is False and body["status"] in ("active", "pending"), body
        assert "ethusdt@kline_1m" in followed(app)
        assert "will not survive a restart" in app.log()
    finally:
        app.stop()


def test_a_directory_as_subscriptions_path_is_one_config_line(tmp_path):
    result = subprocess.run([sys.executable, "-c", "import config"], cwd=ROOT, capture_output=True, text=True,
                            env={"PATH": "", "SUBSCRIPTIONS_PATH": str(tmp_path)}, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"config error: SUBSCRIPTIONS_PATH={str(tmp_path)!r} is not valid: expected the path of a file, "
        "not of a directory"]
