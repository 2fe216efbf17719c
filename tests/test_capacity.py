"""What one server process holds: WebSocket clients past gunicorn's default
of 1000 connections, one thread each, pings that find silent clients; and
the platform conventions (PORT, WEB_CONCURRENCY). Real gunicorn, real
clients on 127.0.0.1."""
import json
import os
import resource
import socket
import sys
import time

import pytest
import websocket

from tests.harness import LiveApp, free_port, http, wait_until
from tests.test_config import assert_one_line, run

# Past gunicorn's default worker_connections (1000).
MANY = 1005


@pytest.fixture(scope="module")
def slow_replay():
    """The replay exchange at real speed: clients that do not read are not
    drowned while the test holds them."""
    from tests.replay_helpers import start_replay, stop_replay
    server = start_replay(speed=1)
    yield server
    stop_replay(server)


@pytest.fixture(scope="module")
def roomy(slow_replay, tmp_path_factory):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 2 * MANY + 200  # our clients' sockets; the server inherits the limit
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"the hard limit on open files ({hard}) is below {needed}")
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    app = LiveApp(tmp_path_factory.mktemp("capacity"), slow_replay.url, BINANCE_SYMBOLS="BTCUSDT",
                  WS_MAX_CLIENTS=MANY, WS_MAX_CLIENTS_PER_IP=MANY, BACKFILL_INITIAL_CANDLES=0).start()
    yield app
    log = app.log()
    app.stop()
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert "Traceback" not in log, log


def connect(url: str) -> websocket.WebSocket:
    ws = websocket.create_connection(url, timeout=10)
    assert json.loads(ws.recv())["type"] == "snapshot"  # its session runs
    return ws


def clients(app) -> int:
    return app.get("/stats")[1]["clients"]["clients"]


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def test_each_websocket_client_costs_one_thread(roomy):
    worker, n = roomy.worker_pid(), 40
    before = threads(worker)
    held = [connect(roomy.ws_url) for _ in range(n)]
    try:
        wait_until(lambda: clients(roomy) == n, 10, message=f"{n} clients")
        added = threads(worker) - before
        # gunicorn's pool may reuse a thread it had from an earlier request
        assert added <= n, f"{added} threads for {n} clients"
    finally:
        for ws in held:
            ws.close()
    wait_until(lambda: clients(roomy) == 0, 10, message="the clients to leave")


def test_more_clients_than_gunicorns_default_connections_and_rest_still_answers(roomy):
    held = []
    try:
        for i in range(MANY):
            try:
                held.append(websocket.create_connection(roomy.ws_url, timeout=10))
            except OSError as exc:
                raise AssertionError(f"client {i + 1} of {MANY} could not connect: {exc!r}")
        wait_until(lambda: clients(roomy) == MANY, 20, message=f"{MANY} clients")
        status, body = http("GET", roomy.url + "/health", timeout=10)
        assert status == 200, body
        # and the client limit still holds, with 1013
        extra = websocket.create_connection(roomy.ws_url, timeout=10)
        extra.settimeout(10)
        while (frame := extra.recv_frame()).opcode != websocket.ABNF.OPCODE_CLOSE:
            pass
        assert int.from_bytes(frame.data[:2], "big") == 1013
        extra.close()
    finally:
        for ws in held:
            ws.close()
    wait_until(lambda: clients(roomy) == 0, 20, message="the clients to leave")


def test_a_client_that_does_not_answer_pings_is_closed_and_one_that_does_stays(slow_replay, tmp_path):
    app = LiveApp(tmp_path, slow_replay.url, BINANCE_SYMBOLS="BTCUSDT", WS_PING_INTERVAL=0.5,
                  BACKFILL_INITIAL_CANDLES=0).start()
    try:
        polite = websocket.create_connection(app.ws_url, timeout=10)
        polite.settimeout(0.2)
        until = time.monotonic() + 2.5   # five pings
        while time.monotonic() < until:
            try:
                polite.recv()            # websocket-client answers pings in recv
            except websocket.WebSocketTimeoutException:
                pass
        assert polite.connected and clients(app) == 1
        polite.close()
        silent = websocket.create_connection(app.ws_url, timeout=10)
        silent.settimeout(10)
        opcodes = []
        while (frame := silent.recv_frame()).opcode != websocket.ABNF.OPCODE_CLOSE:  # never answers
            opcodes.append(frame.opcode)
        assert websocket.ABNF.OPCODE_PING in opcodes
        assert int.from_bytes(frame.data[:2], "big") == 1008 and b"Ping/Pong" in frame.data
        wait_until(lambda: clients(app) == 0, 5, message="the silent client to be gone")
    finally:
        app.stop()


def test_port_is_honoured_and_bind_wins(slow_replay, tmp_path):
    port = free_port()
    app = LiveApp(tmp_path, slow_replay.url, BIND="", PORT=port, BACKFILL_INITIAL_CANDLES=0)
    app.port, app.url = port, f"http://127.0.0.1:{port}"
    app.start(wait_connected=False)
    app.stop()

    app = LiveApp(tmp_path, slow_replay.url, PORT=free_port(), BACKFILL_INITIAL_CANDLES=0)
    app.start(wait_connected=False)
    try:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", int(app.env["PORT"])), timeout=5)
    finally:
        app.stop()


def test_more_than_one_worker_is_refused_with_one_line(tmp_path):
    gunicorn = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
    result = run(gunicorn, tmp_path, timeout=30, WEB_CONCURRENCY="2")
    assert_one_line(result, "WEB_CONCURRENCY", "2", "one worker process runs the feed")
    result = run(gunicorn + ["-w", "3"], tmp_path, timeout=30)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and "one worker process only (got 3)" in result.stderr, result.stderr


def test_a_bad_port_is_one_line(tmp_path):
    result = run([sys.executable, "-c", "import config"], tmp_path, PORT="http")
    assert_one_line(result, "PORT", "http", "a whole number from 1 to 65535")
