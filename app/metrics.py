"""Prometheus metrics, read from the services' own counters at scrape time.

The components already count everything for /stats; a collector that turns
one `Services.stats()` call into metric families keeps the hot paths free of
a second set of counters and the two views from ever disagreeing.
"""
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

PREFIX = "pricestream_"


class ServicesCollector(Collector):
    def __init__(self, services):
        self.services = services

    def collect(self):
        s = self.services.stats()
        feed, clients, storage = s["feed"], s["clients"], s["storage"]

        def counter(name, doc, value, labels=None):
            m = CounterMetricFamily(PREFIX + name, doc, labels=list(labels or {}))
            m.add_metric(list((labels or {}).values()), value)
            return m

        def gauge(name, doc, value, labels=None):
            m = GaugeMetricFamily(PREFIX + name, doc, labels=list(labels or {}))
            m.add_metric(list((labels or {}).values()), value)
            return m

        yield gauge("uptime_seconds", "Seconds since the background services started.", s["uptime_seconds"])
        yield gauge("feed_connected", "1 when every feed connection with streams is up.", int(feed["connected"]))
        yield counter("feed_messages", "Frames received from Binance.", feed["messages"])
        yield counter("feed_parse_errors", "Binance frames that were not valid klines.", feed["parse_errors"])
        yield counter("feed_unexpected_frames", "Binance frames of an unexpected kind.", feed["unexpected_frames"])
        yield counter("feed_reconnects", "Feed reconnections.", feed["reconnects"])
        age = feed["seconds_since_last_message"]
        # NaN rather than a missing series: "never received" must not look like a scrape gap.
        yield gauge("feed_seconds_since_last_message", "Age of the newest frame from Binance (NaN before the first).",
                    float("nan") if age is None else age)
        yield gauge("subscribed_streams", "Kline streams followed.", feed["streams"])
        yield counter("updates_received", "Candle updates taken by the dispatcher.", s["messages_in"])
        yield counter("updates_stale", "Updates older than the candle already held, ignored.", s["stale_updates"])
        yield gauge("ingest_queue", "Updates waiting for the dispatcher.", s["ingest_queue"])

        yield gauge("websocket_clients", "Connected WebSocket clients.", clients["clients"])
        yield counter("websocket_connections", "WebSocket clients accepted.", clients["connected_total"])
        yield counter("websocket_rejected", "WebSocket clients refused because the server was full.",
                      clients["rejected_full"])
        yield counter("websocket_dropped", "WebSocket clients dropped for not reading.", clients["dropped_slow"])
        yield counter("websocket_resynced", "WebSocket clients that fell behind and were sent a new snapshot.",
                      clients["resynced_lagging"])
        yield counter("websocket_rejected_per_ip", "WebSocket clients refused because their address had "
                      "WS_MAX_CLIENTS_PER_IP connections.", clients["rejected_per_ip"])
        closed = CounterMetricFamily(PREFIX + "websocket_closed", "WebSocket clients closed for what they sent "
                                     "(1008): over their output bound, flooding, a bad query.", labels=["reason"])
        for reason in ("output_limit", "flooding", "bad_input"):
            closed.add_metric([reason], clients["closed_" + reason])
        yield closed
        yield counter("websocket_refused_messages", "Client messages refused by the rate limit.",
                      clients["refused_messages"])
        pauses = CounterMetricFamily(PREFIX + "gc_pause_seconds", "Time every thread stood still for garbage "
                                     "collection, by generation.", labels=["generation"])
        longest = GaugeMetricFamily(PREFIX + "gc_longest_pause_seconds", "The longest garbage-collection pause "
                                    "since start, by generation.", labels=["generation"])
        for gen in range(3):
            g = s["gc"][f"gen{gen}"]
            pauses.add_metric([str(gen)], g["pause_seconds_total"])
            longest.add_metric([str(gen)], g["longest_pause_ms"] / 1000)
        yield pauses
        yield longest
        yield counter("websocket_messages_sent", "Messages sent to WebSocket clients.", clients["messages_sent"])
        yield counter("websocket_frames_sent", "WebSocket frames sent (a batch is one frame).", clients["frames_sent"])
        backfill = s["backfill"]
        gaps = CounterMetricFamily(PREFIX + "backfill_gaps", "Gaps found after reconnects, by stream and result.",
                                   labels=["stream", "result"])
        for stream, totals in sorted(backfill["gaps_by_stream"].items()):
            for result, n in sorted(totals.items()):
                gaps.add_metric([stream, result], n)
        yield gaps
        yield counter("backfill_candles", "Closed candles fetched from Binance's REST API.", backfill["candles_fetched"])
        refusals = CounterMetricFamily(PREFIX + "requests_refused", "Requests refused, by reason.", labels=["reason"])
        for reason, n in sorted(s["refusals"].items()):
            refusals.add_metric([reason], n)
        yield refusals

        backend = {"backend": storage["backend"]}
        yield gauge("storage_up", "1 while the writer is running and its last write succeeded.",
                    int(storage["running"] and storage["state"] == "ok"), backend)
        yield counter("storage_batches_written", "Batches written to the database.", storage["batches_written"])
        yield counter("storage_points_written", "Candles written to the database.", storage["points_written"])
        yield counter("storage_failures", "Failed database writes.", storage["failures"])
        yield counter("storage_dropped", "Candles dropped because memory and spool were full.", storage["dropped"])
        yield counter("storage_rejected", "Candles the database refused as bad data, dropped.", storage["rejected"])
        yield counter("storage_refused_all", "Batches refused together with the check point (retried).",
                      storage["refused_all"])
        yield counter("storage_spool_corrupt", "Spool files found unreadable and moved aside.",
                      storage["spool_corrupt"])
        yield gauge("storage_spool_undecodable", "Spool rows that could not be decoded, set aside.",
                    storage["spool_undecodable"])
        yield gauge("storage_queue", "Candles waiting in memory for the writer.", storage["queue_depth"])
        yield gauge("storage_spool_points", "Candles waiting in the disk spool.", storage["spool_points"])
        yield gauge("storage_spool_bytes", "Size of the disk spool.", storage["spool_bytes"])
        age = storage["last_write_age_seconds"]
        yield gauge("storage_last_write_age_seconds", "Seconds since the last successful write (NaN before it).",
                    float("nan") if age is None else age)
        buckets, lag_sum = self.services.storage.writer.lag_histogram()
        yield HistogramMetricFamily(PREFIX + "storage_write_lag_seconds",
                                    "Time from a candle update to its database write.",
                                    buckets=buckets, sum_value=lag_sum)


def build_registry(services) -> CollectorRegistry:
    """A registry of our own: the global one would collect every app built in
    the process (tests build many) and cannot be reset."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServicesCollector(services))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry
