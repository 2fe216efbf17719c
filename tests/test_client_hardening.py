"""Hostile WebSocket clients: what they send never reaches past their own
session, and what they make the server queue for them is bounded.

Real clients on real sockets against the app under gunicorn; the raw
frames are written by hand where a well-behaved client library would not
send them."""
import json
import os
import socket
import struct
import time
from urllib.parse import quote

import pytest
import websocket

from tests.harness import LiveApp, wait_until

OUTPUT_LIMIT = 200_000


@pytest.fixture(scope="module")
def app(replay_server, tmp_path_factory):
    app = LiveApp(tmp_path_factory.mktemp("hostile"), replay_server.url, BINANCE_SYMBOLS="BTCUSDT,ETHUSDT",
                  WS_MAX_OUTPUT_BYTES=OUTPUT_LIMIT, WS_MAX_MESSAGES_PER_SECOND=10).start()
    yield app
    log = app.log()
    app.stop()
    assert "Traceback" not in log, log


def connect(app, query: str = "", **kwargs) -> websocket.WebSocket:
    return websocket.create_connection(app.ws_url + query, timeout=10, **kwargs)


def messages_until(ws, predicate, timeout: float = 10.0) -> list[dict]:
    """Every message up to and including the first that `predicate` accepts."""
    out = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = json.loads(ws.recv())
        out.append(msg)
        if predicate(msg):
            return out
    raise AssertionError(f"no such message within {timeout}s: {out[-5:]}")


class CloseCode(int):
    """A close code that shows its reason in an assertion's message."""
    reason = ""

    def __repr__(self):
        return f"{int(self)} ({self.reason!r})"


def close_code(ws, timeout: float = 10.0) -> CloseCode:
    """Read raw frames until the server's close frame; its code."""
    ws.settimeout(timeout)
    while True:
        frame = ws.recv_frame()
        if frame.opcode == websocket.ABNF.OPCODE_CLOSE:
            code = CloseCode(int.from_bytes(frame.data[:2], "big"))
            code.reason = frame.data[2:].decode("utf-8", "replace")
            return code


def not_update(msg) -> bool:
    return msg.get("type") != "price_update"


def test_deeply_nested_json_is_an_error_message_and_the_session_goes_on(app):
    ws = connect(app)
    try:
        ws.send("[" * 1900 + "]" * 1900)
        reply = messages_until(ws, lambda m: m["type"] not in ("snapshot", "price_update"))[-1]
        assert reply["type"] == "error" and "JSON" in reply["message"]
        ws.send(json.dumps({"action": "ping"}))
        assert messages_until(ws, lambda m: m["type"] not in ("snapshot", "price_update"))[-1]["type"] == "pong"
    finally:
        ws.close()


@pytest.mark.parametrize("last_seq", ["BTCUSDT@1m:²", "BTCUSDT@1m:" + "9" * 100, "BTCUSDT@1m:١٢"])
def test_bad_resume_numbers_close_with_1008(app, last_seq):
    before = app.get("/stats")[1]["clients"]["closed_bad_input"]
    ws = connect(app, "?epoch=1&last_seq=" + quote(last_seq))
    assert close_code(ws) == 1008
    ws.close()
    assert app.get("/stats")[1]["clients"]["closed_bad_input"] == before + 1


def test_invalid_utf8_closes_with_1007_and_binary_gets_an_error(app):
    ws = connect(app)
    try:
        ws.send_binary(b"\x00\x01")
        reply = messages_until(ws, not_update)
        assert reply[-1]["type"] == "snapshot" or "binary" in reply[-1]["message"]
        if reply[-1]["type"] == "snapshot":
            assert "binary" in messages_until(ws, lambda m: m["type"] == "error")[-1]["message"]
        ws.send(b"\xff\xfe\xfd", opcode=websocket.ABNF.OPCODE_TEXT)
        assert close_code(ws) == 1007
    finally:
        ws.close()


def test_unsubscribing_distinct_targets_is_capped_and_replies_stay_small(app):
    ws = connect(app)
    cap = app.get("/config")[1]["WS_MAX_STREAMS_PER_CLIENT"]
    try:
        replies, n = [], 0
        # 8 messages of 100 distinct symbols each: past the cap by the third
        for batch in range(8):
            symbols = [f"X{batch:02d}{i:04d}" for i in range(100)]
            ws.send(json.dumps({"action": "unsubscribe", "symbols": symbols}))
            raw = None
            while raw is None or json.loads(raw)["type"] in ("snapshot", "price_update"):
                raw = ws.recv()
            replies.append((len(raw), json.loads(raw)))
            time.sleep(0.15)  # under the rate limit
            n += 1
        kinds = [r["type"] for _, r in replies]
        assert kinds[:2] == ["subscriptions", "subscriptions"]
        assert set(kinds[2:]) == {"error"}, kinds
        assert "too many subscriptions" in replies[2][1]["message"]
        assert len(replies[1][1]["excluded"]) == 200 <= cap
        assert max(size for size, _ in replies) < 10_000
        # the refused changes changed nothing: subscribing one symbol back works
        ws.send(json.dumps({"action": "subscribe", "symbols": ["X000000"]}))
        reply = messages_until(ws, lambda m: m["type"] == "subscriptions")[-1]
        assert len(reply["excluded"]) == 199
    finally:
        ws.close()


def test_replies_to_messages_over_the_rate_limit_are_limited_too_and_floods_are_closed(app):
    ws = connect(app)
    try:
        before = app.get("/stats")[1]["clients"]
        for _ in range(60):
            ws.send(json.dumps({"action": "ping"}))
        wait_until(lambda: app.get("/stats")[1]["clients"]["refused_messages"] >= before["refused_messages"] + 50,
                   10, message="the refusals")
        ws.send(json.dumps({"action": "nonsense"}))  # refused too: the run goes on
        time.sleep(0.5)
        ws.settimeout(1)
        got = []
        try:
            while True:
                msg = json.loads(ws.recv())
                if not_update(msg) and msg["type"] != "snapshot":
                    got.append(msg)
        except websocket.WebSocketTimeoutException:
            pass
        pongs = [m for m in got if m["type"] == "pong"]
        errors = [m for m in got if m["type"] == "error"]
        assert 1 <= len(pongs) <= 12      # the burst allowance, and what refilled meanwhile
        assert len(errors) == 1 and "rate limit" in errors[0]["message"], errors

        for _ in range(200):              # still over the limit: not listening, closed
            ws.send(json.dumps({"action": "ping"}))
        assert close_code(ws) == 1008
        assert app.get("/stats")[1]["clients"]["closed_flooding"] == before["closed_flooding"] + 1
    finally:
        ws.close()


def _ws_ping_frame(payload: bytes) -> bytes:
    """A masked client ping frame (RFC 6455 §5.5.2)."""
    mask = os.urandom(4)
    return struct.pack("!BB", 0x89, 0x80 | len(payload)) + mask + bytes(
        b ^ mask[i % 4] for i, b in enumerate(payload))


def test_a_client_that_does_not_read_its_pongs_is_closed_at_the_output_bound(app):
    """Pongs are queued for a client however fast it pings; one that never
    reads them must not make the server hold them without limit."""
    before = app.get("/stats")[1]["clients"]
    ws = connect(app, "?symbols=ETHUSDT@1m", sockopt=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)])
    frame = _ws_ping_frame(b"p" * 125)
    try:
        # far more pong bytes than the kernel buffers and the bound together
        for _ in range(40):
            ws.sock.sendall(frame * 500)
        wait_until(lambda: app.get("/stats")[1]["clients"]["closed_output_limit"] > before["closed_output_limit"],
                   15, 0.2, "the client closed at its output bound")
    except OSError:
        pass  # the server closed the connection under our feet
    finally:
        ws.close()
    assert app.get("/stats")[1]["clients"]["closed_output_limit"] == before["closed_output_limit"] + 1


def test_one_host_cannot_take_every_client_slot(replay_server, tmp_path):
    app = LiveApp(tmp_path, replay_server.url, BINANCE_SYMBOLS="ETHUSDT", WS_MAX_CLIENTS_PER_IP=2).start()
    try:
        first = [connect(app) for _ in range(2)]
        third = connect(app)
        assert close_code(third) == 1013
        stats = app.get("/stats")[1]["clients"]
        assert stats["rejected_per_ip"] == 1 and stats["clients"] == 2
        for ws in first:
            ws.close()
        wait_until(lambda: app.get("/stats")[1]["clients"]["clients"] == 0, 10, message="the clients to leave")
        again = connect(app)  # the slots are given back
        assert json.loads(again.recv())["type"] == "snapshot"
        again.close()
    finally:
        app.stop()


def test_a_client_that_falls_off_the_log_gets_a_fresh_snapshot_and_goes_on(tmp_path):
    """A client that reads too slowly for the log (WS_BACKLOG updates) to
    hold what it is owed is resynchronised with a snapshot, not dropped."""
    from tests.replay_helpers import start_replay, stop_replay
    replay = start_replay(speed=6000)
    app = LiveApp(tmp_path, replay.url, BINANCE_SYMBOLS="BTCUSDT,ETHUSDT", WS_BACKLOG=50).start()
    try:
        ws = connect(app, sockopt=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)])
        assert json.loads(ws.recv())["type"] == "snapshot"
        # not reading: the kernel buffers fill, and the log moves on by far more than 50 updates
        wait_until(lambda: app.get("/stats")[1]["messages_in"] > 3000, 20, 0.2, "updates to pile up")
        lagged = messages_until(ws, lambda m: m["type"] == "snapshot", timeout=20)[-1]
        assert lagged["reason"] == "lagged" and {d["symbol"] for d in lagged["data"]} == {"BTCUSDT", "ETHUSDT"}
        after = [m for m in (json.loads(ws.recv()) for _ in range(20)) if m["type"] == "price_update"]
        seqs = [u["data"]["seq"] for u in after if u["data"]["symbol"] == "ETHUSDT"]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))   # in order again from there
        assert app.get("/stats")[1]["clients"]["resynced_lagging"] >= 1
        ws.close()
    finally:
        app.stop()
        stop_replay(replay)
