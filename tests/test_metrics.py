"""GET /metrics, parsed with prometheus-client's own parser."""
import math
import subprocess

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import wait_until

# Everything the issue asks for, by family name (the parser drops _total).
EXPECTED = {
    "pricestream_feed_messages": "counter",
    "pricestream_feed_parse_errors": "counter",
    "pricestream_feed_reconnects": "counter",
    "pricestream_feed_seconds_since_last_message": "gauge",
    "pricestream_subscribed_streams": "gauge",
    "pricestream_websocket_clients": "gauge",
    "pricestream_websocket_dropped": "counter",
    "pricestream_websocket_frames_sent": "counter",
    "pricestream_storage_batches_written": "counter",
    "pricestream_storage_points_written": "counter",
    "pricestream_storage_failures": "counter",
    "pricestream_storage_spool_points": "gauge",
    "pricestream_storage_write_lag_seconds": "histogram",
    "pricestream_backfill_gaps": "counter",
}


def parse(text: str) -> dict[str, dict]:
    """family name -> {"type": .., "samples": {(sample name, labels): value}}"""
    return {f.name: {"type": f.type,
                     "samples": {(s.name, tuple(sorted(s.labels.items()))): s.value for s in f.samples}}
            for f in text_string_to_metric_families(text)}


def value(families, name, **labels):
    family = families[next(name.removesuffix(suffix) for suffix in ("_total", "_count", "_sum", "_bucket", "")
                           if name.endswith(suffix))]
    return family["samples"][(name, tuple(sorted(labels.items())))]


def test_metrics_are_prometheus_text_with_every_family(client):
    resp = client.get("/metrics")
    assert resp.status_code == 200
    assert resp.mimetype == "text/plain" and "version=" in resp.content_type
    families = parse(resp.get_data(as_text=True))
    for name, kind in EXPECTED.items():
        assert families.get(name, {}).get("type") == kind, name
    assert value(families, "pricestream_subscribed_streams") == 2
    # never received anything: NaN, not zero and not a missing series
    assert math.isnan(value(families, "pricestream_feed_seconds_since_last_message"))
    assert value(families, "pricestream_storage_up", backend="sqlite") == 0  # the writer is not started
    assert "process_cpu_seconds" in families  # the standard process collector is there too


def test_metrics_read_the_components_own_counters(app, client):
    services = app.extensions["services"]
    services.hub.count("dropped_slow")
    services.hub.frames_sent.add(7)
    services.count_refusal("origin")
    for filled in (True, True, False):
        services.backfill._record("btcusdt@kline_1m", 0, 3, filled)
    families = parse(client.get("/metrics").get_data(as_text=True))
    assert value(families, "pricestream_backfill_gaps_total", stream="btcusdt@kline_1m", result="filled") == 2
    assert value(families, "pricestream_backfill_gaps_total", stream="btcusdt@kline_1m", result="failed") == 1
    assert value(families, "pricestream_websocket_dropped_total") == 1
    assert value(families, "pricestream_websocket_frames_sent_total") == 7
    assert value(families, "pricestream_requests_refused_total", reason="origin") == 1


def test_each_app_has_its_own_registry(app, tmp_path):
    from app import create_app
    other = create_app(TESTING=True, SQLITE_PATH=str(tmp_path / "o.sqlite3"), SPOOL_DIR=str(tmp_path / "o"))
    assert other.extensions["metrics_registry"] is not app.extensions["metrics_registry"]
    assert REGISTRY.get_sample_value("pricestream_subscribed_streams") is None


def test_live_metrics_follow_the_feed_and_the_writer(live_app):
    def scrape():
        status, text = live_app.get("/metrics")
        assert status == 200
        return parse(text)

    first = wait_until(lambda: (f := scrape()) and value(f, "pricestream_storage_points_written_total") > 0 and f,
                       20, message="candles written")
    assert value(first, "pricestream_feed_connected") == 1
    assert value(first, "pricestream_feed_seconds_since_last_message") < 5
    # A histogram of every written candle, in seconds, not ms: from an
    # update to its write, so within the app's life (its uptime is rounded to 0.1 s).
    lag = "pricestream_storage_write_lag_seconds"
    count, total = value(first, lag + "_count"), value(first, lag + "_sum")
    assert count >= value(first, "pricestream_storage_points_written_total")
    assert 0 < total / count <= value(first, "pricestream_uptime_seconds") + 0.1
    buckets = {float(dict(labels)["le"]): v for (name, labels), v in first[lag]["samples"].items()
               if name == lag + "_bucket"}
    cumulative = [buckets[le] for le in sorted(buckets)]
    assert cumulative[-1] == count and cumulative == sorted(cumulative)
    assert value(first, "pricestream_storage_failures_total") == 0
    _, stats = live_app.get("/stats")
    assert value(first, "pricestream_subscribed_streams") == stats["feed"]["streams"]

    second = wait_until(lambda: (f := scrape()) and value(f, "pricestream_feed_messages_total")
                        > value(first, "pricestream_feed_messages_total") and f, 10, message="more messages")
    for name in ("pricestream_storage_points_written_total", "pricestream_storage_batches_written_total"):
        assert value(second, name) >= value(first, name)


def test_prometheus_own_checker_accepts_the_live_metrics(live_app):
    """promtool (Debian's prometheus, installed by `make test`) lints the
    names, units, types and labels: it refused the quantile-labelled gauge."""
    text = wait_until(lambda: (r := live_app.get("/metrics")[1]) and value(
        parse(r), "pricestream_storage_points_written_total") > 0 and r, 20, message="candles written")
    checked = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0 and not checked.stdout.strip() and not checked.stderr.strip(), \
        checked.stdout + checked.stderr
