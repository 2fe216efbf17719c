"""End to end: replay exchange -> app under gunicorn -> real WebSocket clients."""
import json
import socket
import threading
import time
from pathlib import Path

import websocket

from app.candles import candles_from_csv
from tests.harness import wait_until

DATA = Path(__file__).resolve().parent.parent / "data" / "klines"
RECORDED = {
    ("BTCUSDT", "1m"): {c.open_time: c for c in candles_from_csv(DATA / "BTCUSDT-1m-2020-01-01.csv")},
    ("ETHUSDT", "1m"): {c.open_time: c for c in candles_from_csv(DATA / "ETHUSDT-1m-2022-08-14.csv")},
}


class Listener(threading.Thread):
    """A WebSocket client that records every message until stopped."""

    def __init__(self, url: str):
        super().__init__(name="test-listener", daemon=True)
        self.ws = websocket.create_connection(url, timeout=10)
        self.messages: list[dict] = []
        self.frames = 0
        self.arrivals: list[float] = []   # when each update arrived (monotonic)
        self.closed_with = None
        self._halt = threading.Event()
        self.start()

    def run(self):
        self.ws.settimeout(0.5)
        while not self._halt.is_set():
            try:
                opcode, data = self.ws.recv_data(control_frame=True)
            except websocket.WebSocketTimeoutException:
                continue
            except (websocket.WebSocketConnectionClosedException, OSError):
                return
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                self.closed_with = int.from_bytes(data[:2], "big")
                return
            if opcode == websocket.ABNF.OPCODE_TEXT:
                msg = json.loads(data)
                batch = msg if isinstance(msg, list) else [msg]
                self.frames += 1
                self.arrivals.extend(time.monotonic() for m in batch if m["type"] == "price_update")
                self.messages.extend(batch)

    def updates(self):
        return [m["data"] for m in self.messages if m["type"] == "price_update"]

    def close(self):
        self._halt.set()
        self.join(5)
        self.ws.close()


def by_stream(updates):
    out = {}
    for u in updates:
        out.setdefault((u["symbol"], u["interval"]), []).append(u)
    return out


def test_fifty_clients_get_every_update_in_order_with_recorded_values(live_app):
    # odd clients follow BTCUSDT only (every interval); even ones follow everything
    clients = [Listener(live_app.ws_url + ("?symbols=BTCUSDT" if i % 2 else "")) for i in range(50)]
    try:
        time.sleep(6)  # 60 replayed minutes
    finally:
        for c in clients:
            c.close()
    reference = None
    for i, c in enumerate(clients):
        assert c.messages[0]["type"] == "snapshot"
        streams = by_stream(c.updates())
        expected = {("BTCUSDT", "1m"), ("BTCUSDT", "5m")} | ({("ETHUSDT", "1m")} if i % 2 == 0 else set())
        assert set(streams) == expected, (i, set(streams))
        for key, ups in streams.items():
            seqs = [u["seq"] for u in ups]
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"client {i} missed updates of {key}"
            closes = [u for u in ups if u["closed"]]
            assert len(closes) >= (5 if key[1] == "1m" else 1)
            for u in closes:
                if key in RECORDED:
                    r = RECORDED[key][u["open_time"]]
                    assert (u["open"], u["high"], u["low"], u["close"], u["volume"], u["trades"]) == \
                        (r.open, r.high, r.low, r.close, r.volume, r.trades)
        if i % 2 == 0:
            # every all-streams client saw the same updates for the overlap of their lifetimes
            seqs = {k: {u["seq"]: u for u in v} for k, v in streams.items()}
            if reference:
                for k in seqs:
                    common = seqs[k].keys() & reference[k].keys()
                    assert len(common) > 10
                    assert all(seqs[k][s] == reference[k][s] for s in common)
            reference = seqs


def test_batched_mode_carries_arrays_of_updates(live_app):
    c = Listener(live_app.ws_url + "?batch=100ms")
    time.sleep(2)
    c.close()
    updates, batches = len(c.updates()), c.frames - 1   # the first frame is the snapshot
    # ~20 batches in 2 s, each carrying several of the ~3 updates a tick of
    # the replay makes: far fewer frames than updates
    assert 10 <= batches <= 25, batches
    assert updates >= 3 * batches, (updates, batches)
    seqs = [u["seq"] for u in c.updates() if (u["symbol"], u["interval"]) == ("ETHUSDT", "1m")]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


def test_a_client_that_stops_reading_is_dropped_without_delaying_the_others(live_app):
    status, before = live_app.get("/stats")
    # connects, then never reads: its buffers fill and the server's send stalls
    stuck = websocket.create_connection(live_app.ws_url, sockopt=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)])
    reader = Listener(live_app.ws_url)
    try:
        def dropped():
            return live_app.get("/stats")[1]["clients"]["dropped_slow"] > before["clients"]["dropped_slow"]
        wait_until(dropped, 60, 0.5, "the stuck client to be dropped")
    finally:
        reader.close()
        stuck.close()
    seqs = [u["seq"] for u in reader.updates() if (u["symbol"], u["interval"]) == ("ETHUSDT", "1m")]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert len(seqs) > 50
    # The replay sends several updates a second: the reader never waited
    # anywhere near the WS_SEND_TIMEOUT the stuck client was given.
    pauses = [b - a for a, b in zip(reader.arrivals, reader.arrivals[1:])]
    assert max(pauses) < 2.0, max(pauses)


def test_client_messages_choose_streams_and_bad_ones_get_errors(live_app):
    ws = websocket.create_connection(live_app.ws_url, timeout=10)
    try:
        assert json.loads(ws.recv())["type"] == "snapshot"
        ws.send(json.dumps({"action": "ping"}))
        ws.send("not json")
        ws.send(json.dumps({"action": "dance"}))
        ws.send(json.dumps({"action": "subscribe", "symbols": ["BTC-USDT"]}))
        ws.send(json.dumps({"action": "subscribe", "symbols": "ETHUSDT"}))
        ws.send(json.dumps([1, 2]))
        ws.send("subscribe:ETHUSDT@1m")  # the seed's text protocol
        replies = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(r.get("type") == "subscriptions" for r in replies):
            msg = json.loads(ws.recv())
            if msg["type"] != "price_update":
                replies.append(msg)
        kinds = [r["type"] for r in replies]
        assert kinds[:6] == ["pong", "error", "error", "error", "error", "error"], replies
        assert "invalid symbol" in replies[3]["message"]
        assert replies[6]["symbols"] == ["ETHUSDT@1m"]
        # from now on only ETHUSDT 1m arrives
        time.sleep(0.5)
        ws.settimeout(2)
        later = [json.loads(ws.recv()) for _ in range(20)]
        ups = [m["data"] for m in later if m["type"] == "price_update"]
        assert ups and {(u["symbol"], u["interval"]) for u in ups} == {("ETHUSDT", "1m")}
    finally:
        ws.close()


def test_oversized_messages_close_with_1009(live_app):
    ws = websocket.create_connection(live_app.ws_url, timeout=10)
    ws.send("x" * 10_000)
    ws.settimeout(5)
    code = None
    while code is None:
        frame = ws.recv_frame()  # raw frames: no automatic close reply to a closed socket
        if frame.opcode == websocket.ABNF.OPCODE_CLOSE:
            code = int.from_bytes(frame.data[:2], "big")
    assert code == 1009


def test_upstream_drop_reconnects_and_clients_keep_receiving(live_app, replay_server):
    c = Listener(live_app.ws_url)
    try:
        time.sleep(1)
        reconnects = live_app.get("/stats")[1]["feed"]["reconnects"]
        replay_server.drop()
        wait_until(lambda: live_app.get("/stats")[1]["feed"]["reconnects"] > reconnects, 10, 0.1, "a reconnect")
        wait_until(lambda: live_app.get("/health")[1]["feed_connected"], 10, 0.1, "feed reconnected")
        n = len(c.updates())
        wait_until(lambda: len(c.updates()) > n + 20, 10, 0.1, "updates after the reconnect")
        assert c.closed_with is None
        status, symbols = live_app.get("/symbols")
        assert {s["stream"] for s in symbols} == {"btcusdt@kline_1m", "ethusdt@kline_1m", "btcusdt@kline_5m"}
    finally:
        c.close()


def test_sigterm_closes_clients_with_1001_and_exits_promptly(replay_server, tmp_path):
    from tests.harness import LiveApp
    app = LiveApp(tmp_path, replay_server.url, BINANCE_SYMBOLS="ETHUSDT").start()
    c = Listener(app.ws_url)
    wait_until(lambda: len(c.updates()) > 5, 10, message="updates")
    t0 = time.monotonic()
    assert app.stop() == 0
    assert time.monotonic() - t0 < 10
    c.join(5)
    assert c.closed_with == 1001
    log = app.log()
    assert "services stopped" in log and "Traceback" not in log


def test_client_limit_closes_with_1013(replay_server, tmp_path):
    from tests.harness import LiveApp
    app = LiveApp(tmp_path, replay_server.url, BINANCE_SYMBOLS="ETHUSDT", WS_MAX_CLIENTS=2).start()
    try:
        first = [Listener(app.ws_url) for _ in range(2)]
        third = Listener(app.ws_url)
        third.join(5)
        assert third.closed_with == 1013
        assert app.get("/stats")[1]["clients"]["rejected_full"] == 1
        for c in first:
            assert c.closed_with is None
            c.close()
    finally:
        app.stop()


def _resume_url(base: str, epoch: str, last: dict) -> str:
    return f"{base}&epoch={epoch}&last_seq=" + ",".join(f"{s}@{i}:{seq}" for (s, i), seq in last.items())


def test_a_resuming_client_gets_exactly_what_it_missed(live_app):
    url = live_app.ws_url + "?symbols=ETHUSDT@1m,BTCUSDT@5m"
    first = Listener(url)
    wait_until(lambda: len(by_stream(first.updates())) == 2, 10, message="both streams")
    first.close()
    epoch = first.messages[0]["epoch"]
    seen = by_stream(first.updates())
    last = {key: ups[-1]["seq"] for key, ups in seen.items()}
    time.sleep(1)  # ten replayed minutes go by while it is away

    again = Listener(_resume_url(url, epoch, last))
    try:
        wait_until(lambda: all(len(v) > 10 for v in by_stream(again.updates()).values())
                   and len(by_stream(again.updates())) == 2, 10, message="resumed updates")
    finally:
        again.close()
    assert not [m for m in again.messages if m["type"] in ("gap", "snapshot")]
    for key, ups in by_stream(again.updates()).items():
        seqs = [u["seq"] for u in ups]
        assert seqs == list(range(last[key] + 1, last[key] + 1 + len(seqs))), key
    assert live_app.get("/stats")[1]["clients"]["resumed"] >= 1


def test_resume_says_which_updates_it_cannot_replay(replay_server, tmp_path):
    from tests.harness import LiveApp
    app = LiveApp(tmp_path, replay_server.url, BINANCE_SYMBOLS="ETHUSDT", WS_BACKLOG=20).start()
    try:
        url = app.ws_url + "?symbols=ETHUSDT@1m"
        first = Listener(url)
        wait_until(lambda: first.updates(), 10, message="an update")
        first.close()
        epoch, seq = first.messages[0]["epoch"], first.updates()[-1]["seq"]
        time.sleep(1)  # ~40 updates: more than the server holds

        late = Listener(_resume_url(url, epoch, {("ETHUSDT", "1m"): seq}))
        restarted = Listener(_resume_url(url, "1", {("ETHUSDT", "1m"): seq}))
        wait_until(lambda: late.updates() and restarted.updates(), 10, message="updates after the gaps")
        late.close()
        restarted.close()

        gap = late.messages[0]
        assert gap["type"] == "gap" and gap["reason"] == "history exceeded" and gap["stream"] == "ETHUSDT@1m"
        assert gap["from_seq"] == seq + 1
        assert late.updates()[0]["seq"] == gap["to_seq"] + 1  # the gap ends where the updates start
        assert [m["type"] for m in restarted.messages[:2]] == ["gap", "snapshot"]
        assert restarted.messages[0]["reason"] == "server restarted"
        assert app.get("/stats")[1]["clients"]["resume_gaps"] == 2
    finally:
        app.stop()
