"""Shared fixtures. Everything here is real: the replay exchange is a real
WebSocket/HTTP server on 127.0.0.1, the app runs under gunicorn in its own
process, and clients are real WebSocket clients."""
import pytest

from app import create_app
from tests.harness import LiveApp, free_port


# Per module, not per session: at 600x each recording lasts 144 s, and a
# session-wide exchange ran out of candles when slower modules (the fault
# suite) ran between its first and last users.
@pytest.fixture(scope="module")
def replay_server():
    """The replay exchange at 600x: a 1m candle every 0.1 s."""
    from tests.replay_helpers import start_replay, stop_replay
    server = start_replay(speed=600)
    yield server
    stop_replay(server)


@pytest.fixture(scope="module")
def live_app(replay_server, tmp_path_factory):
    """The app under gunicorn following three streams of the replay."""
    app = LiveApp(tmp_path_factory.mktemp("live"), replay_server.url,
                  BINANCE_SYMBOLS="BTCUSDT,ETHUSDT").start()
    status, body = app.post("/symbol/BTCUSDT/subscribe?interval=5m")
    assert status == 200, body
    yield app
    app.stop()


@pytest.fixture
def app(tmp_path):
    """An app whose services are not started (nothing listens on its upstream)."""
    dead = f"127.0.0.1:{free_port()}"
    app = create_app(TESTING=True, BINANCE_WS_URL=f"ws://{dead}", BINANCE_REST_URL=f"http://{dead}",
                     SQLITE_PATH=str(tmp_path / "candles.sqlite3"), SPOOL_DIR=str(tmp_path / "spool"))
    yield app


@pytest.fixture
def client(app):
    return app.test_client()
