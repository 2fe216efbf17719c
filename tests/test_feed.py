"""The feed against the replay exchange, in process: connections, control
messages, and surviving what the real server does."""
import queue
import threading
import time

import pytest

from app.feed import BinanceFeed
from config import Config
from tests.harness import http, wait_until


def feed_config(replay_url: str, **overrides) -> dict:
    cfg = {k: getattr(Config, k) for k in dir(Config) if k.isupper()}
    cfg.update(BINANCE_WS_URL="ws" + replay_url[4:], FEED_BACKOFF_INITIAL=0.2, FEED_BACKOFF_MAX=1.0)
    cfg.update(overrides)
    return cfg


@pytest.fixture
def make_feed(replay_server):
    feeds = []

    def make(streams, **overrides):
        feed = BinanceFeed(feed_config(replay_server.url, **overrides), queue.Queue())
        feed.add(streams)
        feed.start()
        feeds.append(feed)
        return feed

    yield make
    for f in feeds:
        f.stop()
        assert not any(c.alive for c in f.connections), "a feed thread outlived stop()"


def drain(feed, seconds):
    out = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            candle, source = feed.ingest.get(timeout=0.1)
            out.append(candle)
        except queue.Empty:
            pass
    return out


def test_streams_spread_over_connections_and_all_deliver(make_feed):
    streams = ["btcusdt@kline_1m", "ethusdt@kline_1m", "btcusdt@kline_3m"]
    feed = make_feed(streams, FEED_STREAMS_PER_CONNECTION=2)
    assert len(feed.connections) == 2
    wait_until(lambda: feed.connected, 10, message="both connections up")
    got = {c.key for c in drain(feed, 1.5)}
    assert got == {("BTCUSDT", "1m"), ("ETHUSDT", "1m"), ("BTCUSDT", "3m")}
    assert feed.wait_settled(streams, True, 5) == dict.fromkeys(streams, "active")


def test_many_subscriptions_respect_the_control_rate(make_feed, replay_server):
    feed = make_feed(["btcusdt@kline_1m"])
    wait_until(lambda: feed.connected, 10)
    intervals = ["3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d"]
    for iv in intervals:  # one at a time, as REST calls would
        feed.add([f"ethusdt@kline_{iv}"])
        time.sleep(0.02)
    wanted = [f"ethusdt@kline_{iv}" for iv in intervals]
    assert set(feed.wait_settled(wanted, True, 15).values()) == {"active"}
    assert feed.stats()["reconnects"] == 0  # Binance would have cut us off above 5 msg/s


def test_refused_stream_is_reported_not_retried(make_feed):
    feed = make_feed(["btcusdt@kline_1m"])
    wait_until(lambda: feed.connected, 10)
    feed.add(["BTCUSDT@kline_1m"])  # Binance refuses upper-case stream names
    result = feed.wait_settled(["BTCUSDT@kline_1m"], True, 5)["BTCUSDT@kline_1m"]
    assert "Binance refused SUBSCRIBE" in result
    assert "BTCUSDT@kline_1m" not in feed.streams()


def test_reconnects_and_resubscribes_after_drops(make_feed, replay_server):
    feed = make_feed(["btcusdt@kline_1m", "ethusdt@kline_1m"])
    wait_until(lambda: feed.connected, 10)
    for i in range(3):
        replay_server.drop()
        wait_until(lambda: feed.stats()["reconnects"] > i, 10, message="reconnect")
        wait_until(lambda: feed.connected, 10)
    drain(feed, 0.2)
    assert {c.key for c in drain(feed, 1.5)} == {("BTCUSDT", "1m"), ("ETHUSDT", "1m")}


def test_refused_handshakes_back_off_then_recover(make_feed, replay_server):
    feed = make_feed(["btcusdt@kline_1m"])
    wait_until(lambda: feed.connected, 10)
    http("POST", replay_server.url + "/_replay/refuse?status=503&seconds=2")
    replay_server.drop()
    wait_until(lambda: "HTTP 503" in feed.stats()["connections"][0]["last_error"], 5, message="503 seen")
    wait_until(lambda: feed.connected, 15, message="recovery after the refusal window")
    assert feed.stats()["reconnects"] >= 2


def test_silent_upstream_is_detected(make_feed, replay_server):
    feed = make_feed(["btcusdt@kline_1m"], FEED_SILENCE_TIMEOUT=1.0)
    wait_until(lambda: feed.connected, 10)
    http("POST", replay_server.url + "/_replay/silence?seconds=3")
    wait_until(lambda: "no data" in feed.stats()["connections"][0]["last_error"], 5, message="silence noticed")
    wait_until(lambda: feed.connected and drain(feed, 0.3), 10, message="data again")


def test_server_shutdown_event_and_age_rotate_the_connection(make_feed, replay_server):
    feed = make_feed(["btcusdt@kline_1m"])
    wait_until(lambda: feed.connected, 10)
    http("POST", replay_server.url + "/_replay/shutdown-event")
    wait_until(lambda: feed.stats()["reconnects"] == 1, 5, message="rotation on serverShutdown")
    aged = make_feed(["ethusdt@kline_1m"], FEED_ROTATE_AFTER=1.0)
    wait_until(lambda: aged.stats()["reconnects"] >= 2, 10, message="rotation by age")
    wait_until(lambda: aged.connected, 5)


def test_stop_ends_every_thread_promptly(replay_server):
    feed = BinanceFeed(feed_config(replay_server.url), queue.Queue())
    feed.add(["btcusdt@kline_1m"])
    feed.start()
    wait_until(lambda: feed.connected, 10)
    t0 = time.monotonic()
    feed.stop()
    assert time.monotonic() - t0 < 2
    assert not any(t.name.startswith("feed-") for t in threading.enumerate())


# -- control messages: refusals, the stream limit, removal while subscribing -----------------

def in_flight(feed, stream) -> bool:
    with feed.lock:
        return any(stream in params for c in feed.connections for _, params, _ in c.inflight.values())


def test_one_refused_stream_does_not_drop_the_others(make_feed):
    feed = make_feed(["btcusdt@kline_1m"])
    wait_until(lambda: feed.connected, 10)
    good = ["ethusdt@kline_1m"] + [f"coin{i:03d}usdt@kline_1m" for i in range(198)]
    bad = "BTCUSDT@kline_5m"          # Binance refuses upper-case stream names
    feed.add([bad, *good])            # one call: one SUBSCRIBE of 200 streams, refused as a whole
    result = feed.wait_settled([bad, *good], True, 20)
    assert "Binance refused SUBSCRIBE" in result[bad]
    assert {s for s in good if result[s] != "active"} == set()
    assert feed.streams() == sorted(["btcusdt@kline_1m", *good])
    wait_until(lambda: ("ETHUSDT", "1m") in {c.key for c in drain(feed, 0.3)}, 5, message="ETHUSDT data")


def test_a_full_connection_unsubscribes_before_it_subscribes(make_feed, replay_server):
    """Binance allows 1024 streams per connection: swapping one stream on a
    full connection must send the UNSUBSCRIBE first."""
    fillers = [f"coin{i:04d}usdt@kline_1m" for i in range(1023)]
    feed = make_feed(fillers, FEED_STREAMS_PER_CONNECTION=1024)
    wait_until(lambda: feed.connected, 10)
    assert set(feed.wait_settled(fillers, True, 20).values()) == {"active"}
    replay_server.control("delay-control", delay=0.5, seconds=3)
    try:
        feed.add(["btcusdt@kline_1m"])    # the 1024th
        # While its SUBSCRIBE is on its way, a removal and an addition are both
        # pending when the next control message goes.
        wait_until(lambda: in_flight(feed, "btcusdt@kline_1m"), 5, 0.01, "the 1024th SUBSCRIBE sent")
        feed.remove([fillers[0]])
        feed.add(["ethusdt@kline_1m"])
    finally:
        replay_server.control("delay-control", delay=0, seconds=0)
    assert feed.wait_settled(["ethusdt@kline_1m"], True, 10) == {"ethusdt@kline_1m": "active"}
    assert feed.wait_settled([fillers[0]], False, 10) == {fillers[0]: "removed"}
    assert len(feed.connections) == 1 and len(feed.connections[0].active) == 1024
    assert not feed.connections[0].errors


def test_a_stream_removed_while_its_subscribe_is_in_flight_is_unsubscribed_not_confirmed(make_feed, replay_server):
    feed = make_feed(["btcusdt@kline_1m"])
    confirmed = []
    feed.on_subscribed = confirmed.extend
    wait_until(lambda: feed.connected, 10)
    assert feed.wait_settled(["btcusdt@kline_1m"], True, 10) == {"btcusdt@kline_1m": "active"}
    stream = "ethusdt@kline_5m"
    replay_server.control("delay-control", delay=1, seconds=5)
    try:
        feed.add([stream])
        wait_until(lambda: in_flight(feed, stream), 5, 0.01, "the SUBSCRIBE sent")
        feed.remove([stream])
        # Gone only once Binance has handled the SUBSCRIBE and then our UNSUBSCRIBE.
        assert feed.wait_settled([stream], False, 10) == {stream: "removed"}
        wait_until(lambda: not any(c.inflight for c in feed.connections), 10, message="every reply")
    finally:
        replay_server.control("delay-control", delay=0, seconds=0)
    mark = object()
    feed.ingest.put((mark, "mark"))
    assert stream not in confirmed            # so never backfilled
    assert stream not in replay_server.stats()["subscriptions"]
    after, seen_mark = [], False
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        try:
            candle, _ = feed.ingest.get(timeout=0.1)
        except queue.Empty:
            continue
        if seen_mark:
            after.append(candle.key)
        seen_mark = seen_mark or candle is mark
    assert ("BTCUSDT", "1m") in after and ("ETHUSDT", "5m") not in after
