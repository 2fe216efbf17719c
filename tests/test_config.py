"""Settings are checked at start: a bad one stops gunicorn, the flask CLI and
anything importing the settings with one line naming it, and no traceback."""
import ast
import os
import subprocess
import sys

import pytest

from tests.harness import ROOT, free_port

# What a user can get wrong, and what the line must say.
BAD = [
    ("WS_MAX_CLIENTS", "lots", "a whole number from 1 up"),
    ("WS_MAX_CLIENTS", "0", "a whole number from 1 up"),
    ("FEED_STREAMS_PER_CONNECTION", "2000", "a whole number from 1 to 1024"),
    ("FEED_SILENCE_TIMEOUT", "nan", "a number greater than 0"),
    ("STORAGE_FLUSH_INTERVAL", "-1", "a number greater than 0"),
    ("LOG_LEVEL", "loud", "one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
    ("BINANCE_WS_URL", "https://stream.binance.com", "ws://host[:port] or wss://host[:port]"),
    ("BINANCE_REST_URL", "api.binance.com", "http://host[:port] or https://host[:port]"),
    ("BINANCE", "ftp://127.0.0.1:9443", "http://host[:port]"),
    ("INFLUXDB_HOST", "localhost:8086", "http://host[:port] or https://host[:port]"),
    ("INFLUXDB_API", "v3", "one of v1, v2 or empty"),
    ("BINANCE_INTERVAL", "7m", "one of 1s 1m"),
    ("BINANCE_SYMBOLS", "BTCUSDT,BTC-USDT", "symbols of 2-20 letters or digits"),
    ("ALLOWED_ORIGINS", "dash.example.com", "origins such as https://"),
    ("WS_ALLOWED_ORIGINS", "https://dash.example.com/page", "origins such as https://"),
    ("BIND", "0.0.0.0:99999", "host:port"),
    ("ACCESS_LOG", "maybe", "1 or 0"),
    ("FEED_BACKOFF_MAX", "0.5", "not below FEED_BACKOFF_INITIAL"),
]


def run(args, tmp_path, timeout=60, **env):
    full = {k: v for k, v in os.environ.items() if k not in {name for name, _, _ in BAD}}
    full.update({"SQLITE_PATH": str(tmp_path / "c.sqlite3"), "SPOOL_DIR": str(tmp_path / "spool"),
                 "BIND": f"127.0.0.1:{free_port()}", "BINANCE": f"http://127.0.0.1:{free_port()}", **env})
    return subprocess.run(args, cwd=ROOT, env=full, capture_output=True, text=True, timeout=timeout)


def assert_one_line(result, name, value, expected):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"config error: {name}=") and expected in lines[0], lines[0]
    if value is not None:
        assert repr(value) in lines[0]


@pytest.mark.parametrize("name,value,expected", BAD, ids=[f"{n}={v}" for n, v, _ in BAD])
def test_a_bad_setting_is_one_line(tmp_path, name, value, expected):
    result = run([sys.executable, "-c", "import config"], tmp_path, **{name: value})
    assert_one_line(result, name, value, expected)


def test_gunicorn_stops_with_one_line(tmp_path):
    result = run([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"], tmp_path,
                 WS_MAX_CLIENTS="lots")
    assert_one_line(result, "WS_MAX_CLIENTS", "lots", "a whole number from 1 up")


def test_flask_commands_stop_with_one_line(tmp_path):
    flask = [sys.executable, "-m", "flask", "--app", "app"]
    result = run(flask + ["check-db"], tmp_path, WS_MAX_CLIENTS="lots")
    assert_one_line(result, "WS_MAX_CLIENTS", "lots", "a whole number from 1 up")
    result = run(flask + ["analyze", "BTCUSDT"], tmp_path, BINANCE_INTERVAL="7m")
    assert_one_line(result, "BINANCE_INTERVAL", "7m", "one of 1s 1m")


def test_a_secret_is_named_but_never_shown(tmp_path):
    result = run([sys.executable, "-c", "import config"], tmp_path, API_KEY="s3cret\tkey")
    assert_one_line(result, "API_KEY", None, "printable ASCII")
    assert "s3cret" not in result.stderr and "(value hidden)" in result.stderr


def test_every_bad_setting_is_reported_at_once(tmp_path):
    result = run([sys.executable, "-c", "import config"], tmp_path, WS_MAX_CLIENTS="lots", LOG_LEVEL="loud")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert sorted(line.split("=")[0] for line in result.stderr.splitlines()) == [
        "config error: LOG_LEVEL", "config error: WS_MAX_CLIENTS"]


def test_good_and_empty_values(tmp_path):
    """Empty lines (as in a copied .env.example) mean the default."""
    code = ("from config import Config as C; print(repr((C.WS_MAX_CLIENTS, C.LOG_LEVEL, C.BINANCE_WS_URL, "
            "C.ACCESS_LOG, C.ALLOWED_ORIGINS, C.INFLUXDB_API)))")
    result = run([sys.executable, "-c", code], tmp_path, WS_MAX_CLIENTS="", LOG_LEVEL="debug",
                 BINANCE="http://127.0.0.1:9443/", ACCESS_LOG="yes", ALLOWED_ORIGINS="https://Dash.example:8443",
                 INFLUXDB_API="")
    assert result.returncode == 0, result.stderr
    assert ast.literal_eval(result.stdout) == (500, "DEBUG", "ws://127.0.0.1:9443", True,
                                               ["https://dash.example:8443"], "")
