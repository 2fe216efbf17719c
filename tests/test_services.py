"""The background services in process: every thread they start has a name
and ends when they stop."""
import subprocess
import sys
import threading
import time

from app import create_app
from tests.harness import ROOT, wait_until

NAMES = ("feed-", "dispatcher", "backfill", "ws-fanout", "storage-writer")


def ours():
    return [t for t in threading.enumerate() if t.name.startswith(NAMES)]


def test_stop_ends_every_service_thread(replay_server, tmp_path):
    app = create_app(TESTING=True, BINANCE_WS_URL=replay_server.ws_url, BINANCE_REST_URL=replay_server.url,
                     BINANCE_SYMBOLS=["ETHUSDT"], SQLITE_PATH=str(tmp_path / "c.sqlite3"),
                     SPOOL_DIR=str(tmp_path / "spool"))
    services = app.extensions["services"]
    services.start()
    try:
        wait_until(lambda: services.stats()["messages_in"] > 0, 10, message="updates from the replay")
        assert {t.name.rstrip("0123456789") for t in ours()} == {"feed-", *NAMES[1:]}
        assert services.stats()["storage"]["running"]
    finally:
        t0 = time.monotonic()
        services.stop()
    wait_until(lambda: not ours(), 5, message="service threads to end")
    assert time.monotonic() - t0 < 10


def test_gunicorn_tls_is_refused_at_start(tmp_path):
    """The fan-out needs plain sockets; TLS belongs in a reverse proxy."""
    pem = tmp_path / "x.pem"
    pem.write_text("")
    result = subprocess.run([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--certfile", str(pem),
                             "--keyfile", str(pem), "-b", "127.0.0.1:0", "wsgi:app"],
                            cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "terminate TLS in a reverse proxy" in result.stderr
