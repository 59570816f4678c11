"""What a stream counts: frames decoded, processed and dropped by reason, reconnects, windowed fps,
capture→sink latency and where it goes (stages), kept for status and mirrored into the metrics as it
happens. Loop only.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from streamd.entities import DECODED_BUT_DROPPED, DropReason, FrameCounts, Percentiles
from streamd.metrics import Metrics

WINDOW_S = 10.0
STAGES = ("buffer", "chain", "emit_wait")  # where a frame's capture→sink latency goes


@dataclass(frozen=True, slots=True)
class _StreamSeries:
    """This stream's labelled metric children, looked up once (they are touched for every frame)."""

    decoded: Any
    processed: Any
    reconnects: Any
    latency: Any
    discontinuities: Any
    stages: dict[str, Any]

    @classmethod
    def of(cls, metrics: Metrics, stream: str) -> _StreamSeries:
        return cls(
            metrics.frames_decoded.labels(stream),
            metrics.frames_processed.labels(stream),
            metrics.reconnects.labels(stream),
            metrics.stream_latency.labels(stream),
            metrics.discontinuities.labels(stream),
            {stage: metrics.stream_stage.labels(stream, stage) for stage in STAGES},
        )


class StreamCounters:
    """A stream's frame counts, rates, latencies and stage times, for its status and its metrics."""

    def __init__(self, stream_id: int, metrics: Metrics | None) -> None:
        self._stream = str(stream_id)
        self._metrics = metrics
        self._series = None if metrics is None else _StreamSeries.of(metrics, self._stream)
        self.decoded = 0
        self.processed = 0
        self.dropped: dict[DropReason, int] = {}
        self.reconnects = 0
        self.discontinuities = 0
        self._decoded_at: deque[float] = deque()
        self._processed_at: deque[float] = deque()
        self._latencies: deque[float] = deque(maxlen=500)
        self._stages: dict[str, deque[float]] = {stage: deque(maxlen=500) for stage in STAGES}

    def reconnected(self) -> None:
        self.reconnects += 1
        if self._series is not None:
            self._series.reconnects.inc()

    def discontinuity(self) -> None:
        self.discontinuities += 1
        if self._series is not None:
            self._series.discontinuities.inc()

    def drop(self, reason: DropReason, count: int = 1) -> None:
        """Count frames lost for `reason` (those dropped after decoding count as decoded too)."""
        self.dropped[reason] = self.dropped.get(reason, 0) + count
        if reason in DECODED_BUT_DROPPED:
            self.count_decoded(count)
        if self._metrics is not None:
            self._metrics.frames_dropped.labels(self._stream, reason.value).inc(count)

    def count_decoded(self, count: int) -> None:
        """Decoded = processed + dropped after decoding (fps cap, full buffer, paused) + in flight;
        `fps_in` is the windowed rate of the same frames."""
        self.decoded += count
        now = time.monotonic()
        for _ in range(count):
            _record(self._decoded_at, now)
        if self._series is not None:
            self._series.decoded.inc(count)

    def line_crossed(self, line: str, category: str, direction: str) -> None:
        """A track crossed one of the stream's lines (status keeps the totals: streams/analytics.py)."""
        if self._metrics is not None:
            self._metrics.line_crossings.labels(self._stream, line, category, direction).inc()

    def stage(self, stage: str, seconds: float) -> None:
        """Record how long a frame spent in one stage of the pipeline."""
        self._stages[stage].append(seconds)
        if self._series is not None:
            self._series.stages[stage].observe(seconds)

    def processed_one(self, latency_s: float, now: float) -> None:
        """Count one frame handed to the sinks, `latency_s` after it was decoded."""
        self.processed += 1
        self._latencies.append(latency_s)
        if self._series is not None:
            self._series.processed.inc()
            self._series.latency.observe(latency_s)
        _record(self._processed_at, now)

    def frames(self, buffered: int) -> FrameCounts:
        """The frame counts of the status, with `buffered` frames waiting."""
        dropped = {reason.value: count for reason, count in self.dropped.items()}
        return FrameCounts(self.decoded, self.processed, dropped, buffered)

    def fps(self, now: float) -> tuple[float, float]:
        """Windowed frames per second, in (decoded) and out (processed)."""
        return (
            round(len(_window(self._decoded_at, now)) / WINDOW_S, 2),
            round(len(_window(self._processed_at, now)) / WINDOW_S, 2),
        )

    def latency(self) -> Percentiles:
        """Percentiles of the latest latencies (decoded → sinks)."""
        return _percentiles(sorted(self._latencies))

    def stages(self) -> dict[str, Percentiles]:
        """Percentiles of the latest times in each stage."""
        return {stage: _percentiles(sorted(times)) for stage, times in self._stages.items()}


def _record(times: deque[float], now: float) -> None:
    times.append(now)
    _window(times, now)


def _window(times: deque[float], now: float) -> deque[float]:
    """The times within the last WINDOW_S: fps is windowed, never a lifetime average."""
    while times and times[0] < now - WINDOW_S:
        times.popleft()
    return times


def _percentiles(values: list[float]) -> Percentiles:
    return Percentiles(_percentile(values, 0.5), _percentile(values, 0.95), _percentile(values, 0.99))


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return round(values[min(len(values) - 1, int(q * len(values)))], 6)
