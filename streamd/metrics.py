"""Prometheus metrics: one `Metrics` object owning its own CollectorRegistry, created in `build_app`.

Counters and histograms are updated where things happen (decoder events, batches, sinks, requests);
gauges of live state (stream state, windowed fps, spool size) are read at scrape time by a collector.
Label sets are bounded: streams and networks by id, sinks by index, routes by their pattern.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from streamd.entities import SinkCount, StreamStatus
from streamd.streams.state import StreamState

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
COUNT_BUCKETS = (0, 1, 2, 5, 10, 20, 50, 100)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._live: _Live | None = None
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        r = self.registry
        # streams
        self.frames_decoded = Counter(
            "streamd_stream_frames_decoded_total", "Frames decoded.", ["stream"], registry=r
        )
        self.frames_processed = Counter(
            "streamd_stream_frames_processed_total",
            "Frames whose record reached the sinks.",
            ["stream"],
            registry=r,
        )
        self.frames_dropped = Counter(
            "streamd_stream_frames_dropped_total",
            "Frames dropped, by cause.",
            ["stream", "reason"],
            registry=r,
        )
        self.discontinuities = Counter(
            "streamd_stream_discontinuities_total",
            "Timestamps that went backwards (joined segments, camera resync, wrap), folded into pts_s.",
            ["stream"],
            registry=r,
        )
        self.reconnects = Counter(
            "streamd_stream_reconnects_total", "Source reconnections.", ["stream"], registry=r
        )
        self.line_crossings = Counter(
            "streamd_line_crossings_total",
            "Tracks whose anchor crossed a stream's line, by class and direction (scene.lines).",
            ["stream", "line", "class", "direction"],
            registry=r,
        )
        self.stream_stage = Histogram(
            "streamd_stream_stage_seconds",
            "Where the latency goes: buffer (decoded to taken), chain (batches and inference), emit_wait "
            "(ready to written, in frame order).",
            ["stream", "stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stream_latency = Histogram(
            "streamd_stream_latency_seconds",
            "Decoded frame to record handed to the sinks.",
            ["stream"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        # inference
        self.batch_size = Histogram(
            "streamd_inference_batch_size", "Items per batch.", ["network"], buckets=BATCH_BUCKETS, registry=r
        )
        self.queue_wait = Histogram(
            "streamd_inference_queue_wait_seconds",
            "Arrival to batch dispatch.",
            ["network"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.run_duration = Histogram(
            "streamd_inference_run_duration_seconds",
            "session.run per batch.",
            ["network"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.preprocess_duration = Histogram(
            "streamd_inference_preprocess_duration_seconds",
            "Preprocessing per batch.",
            ["network"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.items = Counter("streamd_inference_items_total", "Items inferred.", ["network"], registry=r)
        self.batches = Counter("streamd_inference_batches_total", "Batches run.", ["network"], registry=r)
        self.inference_errors = Counter(
            "streamd_inference_errors_total", "Failed batches.", ["network"], registry=r
        )
        self.item_errors = Counter(
            "streamd_inference_item_errors_total",
            "Items that failed: their batch failed, or their own post-processing did.",
            ["network"],
            registry=r,
        )
        self.deployments = Counter(
            "streamd_network_deployments_total", "Deployments ended, by outcome.", ["outcome"], registry=r
        )
        # chains
        self.chain_call_duration = Histogram(
            "streamd_chain_call_duration_seconds",
            "One service call of a chain, all its images.",
            ["service"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.detections = Histogram(
            "streamd_chain_detections_per_image",
            "Results kept per image and service.",
            ["service"],
            buckets=COUNT_BUCKETS,
            registry=r,
        )
        # sinks
        self.sink_records = Counter(
            "streamd_sink_records_total",
            "Records by outcome (delivered, retried, spooled, dropped_<reason>).",
            ["stream", "sink", "outcome"],
            registry=r,
        )
        self.sink_delivery = Histogram(
            "streamd_sink_delivery_seconds",
            "One delivery (write or POST).",
            ["stream", "sink"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        # cluster mode (empty on one node)
        self.cluster_events = Counter(
            "streamd_cluster_events_total",
            "This node's lease events: rounds ok or failed, streams claimed, taken over from a dead node, "
            "handed over (rebalancing), lost, fenced.",
            ["event"],
            registry=r,
        )
        self.cluster_failover = Histogram(
            "streamd_cluster_failover_seconds",
            "For each stream taken over from a dead node: seconds since that node's last renewal.",
            buckets=(1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 60),
            registry=r,
        )
        self.cluster_streams = Gauge(
            "streamd_cluster_streams", "Streams this node holds leases for.", registry=r
        )
        # REST
        self.http_requests = Counter(
            "streamd_http_requests_total", "API requests.", ["route", "method", "status"], registry=r
        )
        self.http_duration = Histogram(
            "streamd_http_request_duration_seconds",
            "API request duration.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    def add_stream_gauges(self, read: Callable[[], Iterable[tuple[str, StreamStatus]]]) -> None:
        """Gauges computed at scrape time from the streams' statuses, (stream label, status) each."""
        self._live = _Live(lambda: stream_gauges(read()))
        self.registry.register(self._live)

    def cluster_observe(self, event: str, value: float) -> None:
        """A ClusterNode event: `failover` (seconds), `streams` (held now), else a count of `event`."""
        if event == "failover":
            self.cluster_failover.observe(value)
        elif event == "streams":
            self.cluster_streams.set(value)
        else:
            self.cluster_events.labels(event).inc(value)

    def sink_observer(self, stream: str, sink: str) -> Callable[[str, int], None]:
        """What a sink's stats call with (outcome, count): records delivered, retried, spooled, dropped."""

        def observe(outcome: str, count: int) -> None:
            if outcome != SinkCount.EMITTED:
                self.sink_records.labels(stream, sink, outcome).inc(count)

        return observe

    async def exposition(self) -> bytes:
        """The text format. Live gauges are read on the loop (they own that state); the rest is
        rendered in a thread, since the process collector reads /proc."""
        if self._live is not None:
            self._live.snapshot()
        return await asyncio.to_thread(generate_latest, self.registry)


def stream_gauges(statuses: Iterable[tuple[str, StreamStatus]]) -> list[GaugeMetricFamily]:
    """One gauge per state (1 for the current one), windowed fps, buffered frames, spool bytes, zone
    occupancy and tracks."""
    state = GaugeMetricFamily(
        "streamd_stream_state", "1 for the stream's current state.", labels=["stream", "state"]
    )
    fps = GaugeMetricFamily(
        "streamd_stream_fps", "Windowed frames per second.", labels=["stream", "direction"]
    )
    buffered = GaugeMetricFamily(
        "streamd_stream_buffered_frames", "Frames waiting in the buffer.", labels=["stream"]
    )
    spool = GaugeMetricFamily(
        "streamd_sink_spool_bytes", "Bytes waiting in a webhook or MQTT spool.", labels=["stream", "sink"]
    )
    occupancy = GaugeMetricFamily(
        "streamd_zone_occupancy",
        "Detections in a stream's zone in its latest processed frame, by class.",
        labels=["stream", "zone", "class"],
    )
    tracks = GaugeMetricFamily("streamd_stream_tracks", "Confirmed tracks alive now.", labels=["stream"])
    for label, status in statuses:
        for value in StreamState:
            state.add_metric([label, value.value], 1.0 if status.state == value else 0.0)
        fps.add_metric([label, "in"], status.fps_in)
        fps.add_metric([label, "out"], status.fps_out)
        buffered.add_metric([label], status.frames.buffered)
        for index, sink in enumerate(status.sinks):
            if sink.spool_bytes is not None:
                spool.add_metric([label, str(index)], sink.spool_bytes)
        if status.analytics is not None:
            tracks.add_metric([label], status.analytics.tracks)
            for zone, counts in status.analytics.zones.items():
                for category, count in counts.items():
                    occupancy.add_metric([label, zone, category], count)
    return [state, fps, buffered, spool, occupancy, tracks]


class _Live(Collector):
    def __init__(self, read: Callable[[], Iterable[GaugeMetricFamily]]) -> None:
        self._read = read
        self._families: list[GaugeMetricFamily] = []

    def snapshot(self) -> None:
        self._families = list(self._read())

    def collect(self) -> Iterable[Any]:
        return list(self._families)
