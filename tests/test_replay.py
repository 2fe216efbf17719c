"""The replay exchange against real WebSocket and HTTP clients on 127.0.0.1,
checked against the recorded CSVs and a real Binance capture."""
import csv
import json
import threading
import time
import urllib.error
import urllib.request
from decimal import Decimal
from pathlib import Path

import pytest
import websocket

from app.replay import ReplayServer
from app.replay.timeline import Bar, minute_update, read_csv, window
from tests.harness import http, wait_until
from tests.replay_helpers import start_replay, stop_replay

DATA = Path(__file__).resolve().parent.parent / "data"
BTC_CSV = DATA / "klines" / "BTCUSDT-1m-2020-01-01.csv"
ROWS = {int(r[0]): r for r in csv.reader(BTC_CSV.open())}
FIRST = min(ROWS)


@pytest.fixture(scope="module")
def server():
    """60 s of BTC every 0.1 s, 2 updates per second (ping every 0.5 s)."""
    srv = ReplayServer(speed=600, ping_interval=0.5, weight_limit=100).start()
    yield srv
    srv.stop()


def ws_url(srv, path):
    return "ws" + srv.url[4:] + path


def connect(srv, path="/ws", timeout=5):
    return websocket.create_connection(ws_url(srv, path), timeout=timeout)


def request(ws, method, params=None, id_=1):
    """Send a control message and return its reply, skipping stream frames."""
    msg = {"method": method, "id": id_} if params is None else {"method": method, "params": params, "id": id_}
    ws.send(json.dumps(msg))
    return reply(ws)


def reply(ws):
    while True:
        msg = json.loads(ws.recv())
        if "result" in msg or "error" in msg:
            return msg


def frames(ws, until, limit=2000):
    """Data frames until `until(frames)` is true."""
    out = []
    while len(out) < limit:
        msg = json.loads(ws.recv())
        if "result" in msg or "error" in msg:
            continue
        out.append(msg)
        if until(out):
            return out
    raise AssertionError("condition not reached")


def finals(n):
    return lambda fs: sum(f.get("data", f)["k"]["x"] for f in fs) >= n


def first_complete_candles(events):
    """{open_time: [updates]} for candles whose every update was seen (the
    first candle may have started before we subscribed)."""
    by_t = {}
    for e in events:
        by_t.setdefault(e["k"]["t"], []).append(e["k"])
    return {t: ks for t, ks in list(by_t.items())[1:] if ks[-1]["x"]}


# -- payload -------------------------------------------------------------------------------

def test_frame_shape_equals_a_captured_binance_frame(server):
    lines = (DATA / "captures" / "BINANCE.ws.1.0").read_text().splitlines()[1:]
    captured = next(json.loads(line.split(": ", 1)[1]) for line in lines if "@kline_1m" in line)
    ws = connect(server, "/stream?streams=btcusdt@kline_1m")
    try:
        ours = frames(ws, lambda fs: True)[0]
    finally:
        ws.close()
    assert list(ours) == list(captured) == ["stream", "data"]
    assert list(ours["data"]) == list(captured["data"])
    assert list(ours["data"]["k"]) == list(captured["data"]["k"])
    for key, value in captured["data"]["k"].items():
        assert type(ours["data"]["k"][key]) is type(value), key
    k = ours["data"]["k"]
    assert k["T"] == k["t"] + 60_000 - 1 and k["s"] == "BTCUSDT" and k["i"] == "1m"
    assert all(len(k[x].split(".")[1]) == 8 for x in "ochlvqVQ")


def test_updates_walk_recorded_prices_and_the_final_equals_the_csv_row(server):
    ws = connect(server, "/ws/btcusdt@kline_1m")
    try:
        events = frames(ws, finals(4))
    finally:
        ws.close()
    candles = first_complete_candles(events)
    assert len(candles) >= 3
    for t, updates in candles.items():
        row = ROWS[t]
        recorded = dict(zip("ohlcv", row[1:6])) | {"q": row[7], "n": int(row[8]), "V": row[9], "Q": row[10]}
        *partial, final = updates
        assert len(partial) == 4 and not any(u["x"] for u in partial) and final["x"] is True
        assert {k: final[k] for k in recorded} == recorded
        assert {k: partial[-1][k] for k in recorded} == recorded       # the final repeats the last values
        prices = set(row[1:5])
        for before, after in zip(partial, partial[1:]):
            assert after["o"] == row[1] and {after["h"], after["l"], after["c"]} <= prices
            assert Decimal(after["h"]) >= Decimal(before["h"]) and Decimal(after["l"]) <= Decimal(before["l"])
            assert Decimal(after["v"]) >= Decimal(before["v"]) and after["n"] >= before["n"]


def test_5m_candle_is_the_aggregate_of_five_recorded_minutes(server):
    ws = connect(server, "/ws/btcusdt@kline_5m")
    try:
        events = frames(ws, finals(1), limit=200)
    finally:
        ws.close()
    k = events[-1]["k"]
    rows = [ROWS[k["t"] + i * 60_000] for i in range(5)]
    assert k["T"] == k["t"] + 300_000 - 1 and k["t"] % 300_000 == 0
    assert k["o"] == rows[0][1] and k["c"] == rows[-1][4]
    assert Decimal(k["h"]) == max(Decimal(r[2]) for r in rows)
    assert Decimal(k["l"]) == min(Decimal(r[3]) for r in rows)
    for key, col in (("v", 5), ("q", 7), ("V", 9), ("Q", 10)):
        assert k[key] == f"{sum(Decimal(r[col]) for r in rows):.8f}", key
    assert k["n"] == sum(int(r[8]) for r in rows)


def test_two_connections_see_the_same_frames(server):
    a, b = connect(server, "/ws/btcusdt@kline_1m"), connect(server, "/stream?streams=btcusdt@kline_1m")
    try:
        got_a = frames(a, lambda fs: len(fs) >= 12)
        got_b = [f["data"] for f in frames(b, lambda fs: len(fs) >= 12)]
    finally:
        a.close()
        b.close()
    common = [e for e in got_a if e in got_b]
    assert len(common) >= 8
    assert common == [e for e in got_b if e in got_a]


# -- live subscription protocol -------------------------------------------------------------

def test_subscribe_list_unsubscribe(server):
    ws = connect(server, "/ws")
    try:
        assert request(ws, "SUBSCRIBE", ["btcusdt@kline_1m", "nosuchcoin@kline_1m"], 1) == {"result": None, "id": 1}
        assert request(ws, "LIST_SUBSCRIPTIONS", None, 2) == {
            "result": ["btcusdt@kline_1m", "nosuchcoin@kline_1m"], "id": 2}
        event = frames(ws, lambda fs: True)[0]
        assert event["e"] == "kline" and event["s"] == "BTCUSDT"       # raw: not wrapped
        assert request(ws, "UNSUBSCRIBE", ["btcusdt@kline_1m"], "abc") == {"result": None, "id": "abc"}
        assert request(ws, "LIST_SUBSCRIPTIONS", None, 3) == {"result": ["nosuchcoin@kline_1m"], "id": 3}
        assert request(ws, "GET_PROPERTY", ["combined"], 4) == {"result": False, "id": 4}
        time.sleep(1)   # the rate limit: 5 messages per second
        assert request(ws, "SET_PROPERTY", ["combined", True], 5) == {"result": None, "id": 5}
        opcodes(ws, 0.1)
        assert websocket.ABNF.OPCODE_TEXT not in opcodes(ws, 0.5)   # an unknown symbol stays silent
    finally:
        ws.close()


@pytest.mark.parametrize("message, error", [
    ("{not json", {"code": 3, "msg": "Invalid JSON: expected value at line 1 column 2"}),
    ('{"method":"SUBSCRIBEX","params":[],"id":7}',
     {"code": 2, "msg": "Invalid request: unknown variant `SUBSCRIBEX`, expected one of `SUBSCRIBE`,"
                        " `UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY` at line 1 column 22"}),
    ('{"params":[],"id":7}', {"code": 2, "msg": "Invalid request: missing field `method` at line 1 column 20"}),
    ('{"method":"SUBSCRIBE","params":["btcusdt@kline_1m"],"id":true}',
     {"code": 2, "msg": "Invalid request: request ID must be an unsigned integer"}),
    ('{"method":"LIST_SUBSCRIPTIONS","params":["x"],"id":7}',
     {"code": 2, "msg": "Invalid request: too many parameters"}),
    ('{"method":"GET_PROPERTY","params":["color"],"id":7}', {"code": 0, "msg": "Unknown property"}),
    ('{"method":"SET_PROPERTY","params":["combined","yes"],"id":7}',
     {"code": 1, "msg": "Invalid value type: expected Boolean"}),
    ('{"method":"SUBSCRIBE","params":["BTCUSDT@kline_1m"],"id":7}',
     {"code": 2, "msg": "Invalid request: invalid stream"}),
])
def test_bad_requests_get_binance_errors(server, message, error):
    ws = connect(server, "/ws")
    try:
        ws.send(message)
        got = reply(ws)
    finally:
        ws.close()
    assert got["error"] == error
    assert got["id"] == (7 if '"id":7' in message else None)


def test_too_many_streams_are_refused(server):
    ws = connect(server, "/ws")
    try:
        got = request(ws, "SUBSCRIBE", [f"coin{i}usdt@kline_1m" for i in range(1025)])
        assert got["error"]["code"] == 2 and request(ws, "LIST_SUBSCRIPTIONS", None, 2)["result"] == []
    finally:
        ws.close()
    with pytest.raises(websocket.WebSocketBadStatusException) as bad:
        connect(server, "/ws/BTCUSDT@kline_1m")
    assert bad.value.status_code == 400


def test_more_than_five_messages_a_second_disconnect(server):
    ws = connect(server, "/ws")
    try:
        for i in range(6):
            ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}))
        assert close_code(ws) == 1008
    finally:
        ws.close()


def close_code(ws, seconds=5):
    """The close code the server sent, or None if the TCP connection just ended."""
    ws.settimeout(seconds)
    try:
        while True:
            opcode, data = ws.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return int.from_bytes(data[:2], "big")
    except (websocket.WebSocketConnectionClosedException, ConnectionError):
        return None


# -- REST ----------------------------------------------------------------------------------

def test_ping_time_and_exchange_info(server):
    assert http("GET", server.url + "/api/v3/ping") == (200, {})
    status, body = http("GET", server.url + "/api/v3/time")
    assert status == 200 and FIRST <= body["serverTime"] < FIRST + 86_400_000
    status, info = http("GET", server.url + "/api/v3/exchangeInfo")
    assert status == 200 and info["timezone"] == "UTC"
    assert [(s["symbol"], s["status"], s["baseAsset"], s["quoteAsset"]) for s in info["symbols"]] == [
        ("BTCUSDT", "TRADING", "BTC", "USDT"), ("ETHUSDT", "TRADING", "ETH", "USDT")]
    assert [s["symbol"] for s in http("GET", server.url + "/api/v3/exchangeInfo?symbol=ETHUSDT")[1]["symbols"]] == [
        "ETHUSDT"]
    assert http("GET", server.url + "/api/v3/exchangeInfo?symbol=DOGEUSDT") == (
        400, {"code": -1121, "msg": "Invalid symbol."})


def test_klines_pages_through_the_past_only(server):
    url = server.url + "/api/v3/klines?symbol=BTCUSDT&interval=1m"
    time.sleep(0.5)   # let a few minutes play
    _, page1 = http("GET", f"{url}&startTime={FIRST}&limit=2")
    _, page2 = http("GET", f"{url}&startTime={page1[-1][0] + 60_000}&limit=2")
    for row in page1 + page2:
        csv_row = ROWS[row[0]]
        assert row == [int(csv_row[0]), *csv_row[1:6], int(csv_row[6]), csv_row[7], int(csv_row[8]), *csv_row[9:11], "0"]
    assert [r[0] for r in page1 + page2] == [FIRST + i * 60_000 for i in range(4)]
    def clock():
        return http("GET", server.url + "/_replay/stats")[1]["clock"]["BTCUSDT"]

    before = clock()
    _, latest = http("GET", url)
    after = clock()       # at 600x the replay moves a minute in 0.1 s
    assert latest[0][0] == FIRST and before - 60_000 < latest[-1][0] <= after
    assert latest[-1][6] >= before                              # the open candle comes last, partial
    assert float(latest[-1][5]) <= float(ROWS[latest[-1][0]][5])
    assert http("GET", url.replace("BTCUSDT", "NOPE")) == (400, {"code": -1121, "msg": "Invalid symbol."})
    assert http("GET", url.replace("1m", "7m")) == (400, {"code": -1120, "msg": "Invalid interval."})


def test_request_weight_header_and_429():
    with ReplayServer(speed=1, weight_limit=7) as srv:
        req = srv.url + "/api/v3/klines?symbol=BTCUSDT&interval=1m"
        with urllib.request.urlopen(req) as resp:
            used = int(resp.headers["X-MBX-USED-WEIGHT-1M"])
        assert used == 2
        statuses = [http("GET", req)[0] for _ in range(3)]
        assert statuses[-1] == 429
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(req)
        assert exc.value.code == 429 and 1 <= int(exc.value.headers["Retry-After"]) <= 60
        assert json.loads(exc.value.read())["code"] == -1003


# -- pings and faults ----------------------------------------------------------------------

def opcodes(ws, seconds):
    """Opcodes of every frame received within `seconds`."""
    seen = []
    deadline = time.monotonic() + seconds
    ws.settimeout(0.1)
    while time.monotonic() < deadline:
        try:
            seen.append(ws.recv_data(control_frame=True)[0])
        except websocket.WebSocketTimeoutException:
            pass
    return seen


def test_pings_then_silence_then_data_again(server):
    ws = connect(server, "/ws/btcusdt@kline_1m")
    try:
        assert websocket.ABNF.OPCODE_PING in opcodes(ws, 1.2)
        assert http("POST", server.url + "/_replay/silence?seconds=1.5")[0] == 200
        opcodes(ws, 0.1)   # whatever was already on the wire
        assert opcodes(ws, 1.2) == []
        time.sleep(0.3)
        assert set(opcodes(ws, 1.0)) >= {websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_PING}
    finally:
        ws.close()


def test_drop_cuts_connections_without_a_close_frame(server):
    conns = [connect(server, "/ws/btcusdt@kline_1m") for _ in range(2)]
    wait_until(lambda: http("GET", server.url + "/_replay/stats")[1]["connections"] >= 2, 5)
    status, body = http("POST", server.url + "/_replay/drop")
    assert status == 200 and body["dropped"] >= 2
    assert [close_code(ws) for ws in conns] == [None, None]
    wait_until(lambda: http("GET", server.url + "/_replay/stats")[1]["connections"] == 0, 5)


def test_refused_handshakes_then_recovery(server):
    assert http("POST", server.url + "/_replay/refuse?status=503&seconds=1")[0] == 200
    with pytest.raises(websocket.WebSocketBadStatusException) as bad:
        connect(server, "/stream")
    assert bad.value.status_code == 503
    assert http("GET", server.url + "/api/v3/ping")[0] == 200       # REST is not affected
    http("POST", server.url + "/_replay/refuse?status=429&seconds=1")
    with pytest.raises(websocket.WebSocketBadStatusException) as bad:
        connect(server, "/stream")
    assert bad.value.status_code == 429 and int(bad.value.resp_headers["retry-after"]) >= 1
    time.sleep(1.1)
    connect(server, "/stream").close()


def test_server_shutdown_event(server):
    raw, combined = connect(server, "/ws"), connect(server, "/stream")
    # The handshake completes just before the server registers the connection.
    wait_until(lambda: http("GET", server.url + "/_replay/stats")[1]["connections"] >= 2, 5)
    try:
        assert http("POST", server.url + "/_replay/shutdown-event")[1]["sent"] >= 2
        event = json.loads(raw.recv())
        assert list(event) == ["e", "E"] and event["e"] == "serverShutdown" and event["E"] >= FIRST
        assert json.loads(combined.recv()) == {"stream": "!serverShutdown", "data": event}
    finally:
        raw.close()
        combined.close()


def test_old_connections_are_closed_with_a_close_frame():
    with ReplayServer(speed=600, max_age=0.5) as srv:
        ws = connect(srv, "/ws/btcusdt@kline_1m")
        t0 = time.monotonic()
        assert close_code(ws) == 1001 and 0.4 < time.monotonic() - t0 < 2


def test_stop_ends_every_replay_thread():
    before = set(threading.enumerate())
    srv = ReplayServer(speed=600).start()
    clients = [connect(srv, "/stream?streams=btcusdt@kline_1m") for _ in range(3)]
    wait_until(lambda: http("GET", srv.url + "/_replay/stats")[1]["frames_sent"] > 3, 5)
    t0 = time.monotonic()
    srv.stop()
    assert time.monotonic() - t0 < 2
    started = [t.name for t in threading.enumerate() if t not in before and t.name.startswith("replay-")]
    assert started == [] and srv.replay.hub.stats()["connections"] == 0
    for ws in clients:
        ws.close()


def test_subprocess_helper_serves_and_stops():
    server = start_replay(speed=600, symbols=["ETHUSDT"], updates=2)
    try:
        url = server.url
        ws = websocket.create_connection(server.ws_url + "/stream", timeout=5)
        assert request(ws, "SUBSCRIBE", ["ethusdt@kline_1m"]) == {"result": None, "id": 1}
        data = frames(ws, finals(1))[-1]["data"]
        ws.close()
        assert data["s"] == "ETHUSDT" and data["k"]["x"] is True
        assert [s["symbol"] for s in http("GET", url + "/api/v3/exchangeInfo")[1]["symbols"]] == ["ETHUSDT"]
    finally:
        assert stop_replay(server) == 0


# -- the timeline, without a server --------------------------------------------------------

def test_minute_updates_follow_the_candle_path():
    up, down = (next(b for b in read_csv(BTC_CSV) if cond(b))
                for cond in (lambda b: b.close > b.open, lambda b: b.close < b.open))
    assert [minute_update(up, s, 3).close for s in range(4)] == [up.open, up.low, up.high, up.close]
    assert [minute_update(down, s, 3).close for s in range(4)] == [down.open, down.high, down.low, down.close]
    assert minute_update(up, 3, 3) == up and minute_update(up, 0, 3).volume == 0


def test_windows_are_utc_days_monday_weeks_and_calendar_months():
    t = 1577836800000 + 3_723_000                 # 2020-01-01 01:02:03, a Wednesday
    assert window(t, "1h") == (1577836800000 + 3_600_000, 1577836800000 + 7_200_000 - 1)
    assert window(t, "1d") == (1577836800000, 1577923200000 - 1)
    assert window(t, "1w")[0] == 1577664000000    # Monday 2019-12-30
    assert window(t, "1M") == (1577836800000, 1580515200000 - 1)
    assert isinstance(read_csv(BTC_CSV)[0], Bar)


def test_start_later_and_change_speed():
    start = FIRST + 90 * 60_000
    with ReplayServer(speed=60, start=start, symbols=["BTCUSDT"]) as srv:
        ws = connect(srv, "/ws/btcusdt@kline_1m")
        try:
            assert frames(ws, lambda fs: True)[0]["k"]["t"] == start
            assert http("POST", srv.url + "/_replay/speed?x=6000")[1]["speed"] == 6000
            before = http("GET", srv.url + "/_replay/stats")[1]["clock"]["BTCUSDT"]
            time.sleep(0.2)
            assert http("GET", srv.url + "/_replay/stats")[1]["clock"]["BTCUSDT"] - before > 600_000
        finally:
            ws.close()
        assert http("POST", srv.url + "/_replay/speed?x=0")[0] == 400


def test_start_option_accepts_iso_and_ms():
    from app.replay.cli import parse_start
    assert parse_start("2020-01-01T01:30") == parse_start("1577842200000") == FIRST + 90 * 60_000
