"""Prometheus metrics of a running ingestion: a custom collector over the latest `Snapshot`.

The snapshot is taken in the Trio thread (`flowtel._progress.Watch`), since the buckets read
the Trio clock; the HTTP server's thread only reads the last one, so a scrape never touches
the stages. Nothing here can carry the key: a snapshot holds numbers and names only.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from wsgiref.simple_server import WSGIServer

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.exposition import start_http_server
from prometheus_client.registry import Collector, CollectorRegistry

from flowtel._progress import Snapshot

log = logging.getLogger("flowtel.metrics")

PREFIX = "flowtel"


class RunCollector(Collector):
    """Metrics from whatever `source()` returns (None: no run has started yet)."""

    def __init__(self, source: Callable[[], Snapshot | None]) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        snap = self.source()
        up = GaugeMetricFamily(
            f"{PREFIX}_run_active",
            "1 while an ingestion runs, 0 before it starts and after it ends",
        )
        up.add_metric([], 0 if snap is None or snap.finished else 1)
        yield up
        if snap is None:
            return
        yield from _metrics(snap)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(f"{PREFIX}_{name}", doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", doc, value=value)


def _metrics(snap: Snapshot) -> Iterator[Metric]:
    yield _gauge("events_committed", "Events in the database (committed)", snap.committed)
    if snap.api_total is not None:
        yield _gauge("api_events", "Events the API says it has (/internal/stats)", snap.api_total)
    yield _counter("events_inserted", "Events inserted by this run", snap.inserted)
    yield _counter(
        "events_duplicates", "Events received again and skipped (ON CONFLICT)", snap.duplicates
    )
    yield _counter(
        "events_rejected",
        "Events kept aside in rejected_events (or stored repaired)",
        snap.rejected,
    )
    yield _gauge("events_per_second", "Events committed per second over the last minute", snap.rate)
    if snap.eta is not None:
        yield _gauge("eta_seconds", "Seconds left at the current rate", snap.eta)
    yield _counter("requests", "HTTP requests sent", snap.requests)
    responses = CounterMetricFamily(
        f"{PREFIX}_responses",
        "Answers by endpoint and HTTP status (status 0: no answer: a dropped connection)",
        labels=["endpoint", "status"],
    )
    for endpoint, status, count in snap.responses:
        responses.add_metric([endpoint, str(status)], count)
    yield responses
    yield _counter("throttled", "429 answers received", snap.throttled)
    yield _counter("retries", "Requests sent again after a fault (429s not included)", snap.retries)

    waited = CounterMetricFamily(
        f"{PREFIX}_rate_limit_wait_seconds",
        "Seconds requests spent waiting for a slot of a rate bucket, summed",
        labels=["bucket"],
    )
    bucket_429 = CounterMetricFamily(
        f"{PREFIX}_bucket_throttled", "429 answers by rate bucket", labels=["bucket"]
    )
    remaining = GaugeMetricFamily(
        f"{PREFIX}_bucket_remaining", "Requests left in the current window", labels=["bucket"]
    )
    limit = GaugeMetricFamily(
        f"{PREFIX}_bucket_limit", "Requests allowed per window", labels=["bucket"]
    )
    window = GaugeMetricFamily(
        f"{PREFIX}_bucket_window_seconds", "Length of the rate window", labels=["bucket"]
    )
    next_slot = GaugeMetricFamily(
        f"{PREFIX}_bucket_next_slot_seconds",
        "Seconds until the bucket lets a request go (0: now)",
        labels=["bucket"],
    )
    in_flight = GaugeMetricFamily(
        f"{PREFIX}_bucket_in_flight", "Requests under way", labels=["bucket"]
    )
    concurrency = GaugeMetricFamily(
        f"{PREFIX}_bucket_concurrency", "Requests allowed under way at once", labels=["bucket"]
    )
    for b in snap.buckets:
        waited.add_metric([b.name], b.waited)
        bucket_429.add_metric([b.name], b.throttled)
        next_slot.add_metric([b.name], b.next_slot_in)
        in_flight.add_metric([b.name], b.in_flight)
        if b.remaining is not None:
            remaining.add_metric([b.name], b.remaining)
        if b.limit is not None:
            limit.add_metric([b.name], b.limit)
        if b.window is not None:
            window.add_metric([b.name], b.window)
        if b.concurrency is not None:
            concurrency.add_metric([b.name], b.concurrency)
    yield from (waited, bucket_429, remaining, limit, window, next_slot, in_flight, concurrency)

    if snap.cursor_life_left is not None:
        yield _gauge(
            "cursor_life_left_seconds",
            "Seconds of life left in the oldest cursor a stream relies on",
            snap.cursor_life_left,
        )
    depth = GaugeMetricFamily(
        f"{PREFIX}_channel_depth", "Pages or batches waiting between stages", labels=["channel"]
    )
    for name, used in snap.channels:
        depth.add_metric([name], used)
    yield depth
    commit = SummaryMetricFamily(
        f"{PREFIX}_commit_seconds",
        "Time of each commit (COPY, ON CONFLICT, checkpoint, COMMIT)",
        count_value=snap.commits,
        sum_value=snap.commit_seconds,
    )
    yield commit
    yield _gauge("last_commit_seconds", "Time of the most recent commit", snap.last_commit_seconds)
    yield _gauge("streams", "Streams (shards) of this run", snap.streams)
    yield _gauge("streams_done", "Streams that reached their end", snap.streams_done)
    yield _gauge("elapsed_seconds", "Seconds since the run started", snap.elapsed)


def registry_for(source: Callable[[], Snapshot | None]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RunCollector(source))
    return registry


def serve_metrics(
    port: int, source: Callable[[], Snapshot | None], addr: str = "0.0.0.0"
) -> tuple[WSGIServer, threading.Thread]:
    """Serve `/metrics` on `addr:port` from a daemon thread; `server.shutdown()` stops it."""
    server, thread = start_http_server(port, addr=addr, registry=registry_for(source))
    log.info("Prometheus metrics on http://%s:%d/metrics", addr, server.server_port)
    return server, thread
