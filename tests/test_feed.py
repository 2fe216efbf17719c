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
