"""The stream path's shared types: what decoders, the pipeline, sinks, the API, the status page and the
metrics hand each other (as Roboflow's `inference` keeps one entities module for its sources, pipeline,
sinks and watchdog).

Frames and positions come from decoder threads; `SourceEvent`s tell a stream what its decoder saw;
drop reasons, sink counters and delivery outcomes are enums, so a typo is an error, not a new metric
label; a stream's and a sink's status are frozen snapshots that the API, the page and the Prometheus
gauges all read. Plain data and protocols only: nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from streamd.sinks.stats import SinkStats

# -- pixels ------------------------------------------------------------------------------------------


class LazyImage(Protocol):
    """A BGR frame not converted yet (a stream's decoded yuv420p frame): preprocessing asks it for its
    resized pixels only, other users for the whole frame."""

    @property
    def shape(self) -> tuple[int, int, int]: ...
    def bgr(self) -> np.ndarray: ...
    def gray(self) -> np.ndarray: ...
    def resized_bgr(self, width: int, height: int) -> np.ndarray: ...


Image = np.ndarray | LazyImage


# -- frames and what decoders say --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Position:
    """Where a stream stands: its last emitted frame. A restart resumes after it (checkpoints)."""

    frame_index: int
    pts_s: float  # stream time
    media_pts_s: float  # the frame's own timestamp in its file (or play of a live source), for seeking

    def to_json(self) -> dict[str, float]:
        return {"frame_index": self.frame_index, "pts_s": self.pts_s, "media_pts_s": self.media_pts_s}

    @classmethod
    def from_json(cls, data: dict[str, float]) -> Position:
        return cls(int(data["frame_index"]), float(data["pts_s"]), float(data["media_pts_s"]))


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame on its way from a decoder thread to its stream's chain."""

    pixels: Image  # uint8 HxWx3 BGR, or a yuv420p frame converted when needed (video.frames.I420Frame)
    frame_index: int  # position among the stream's decoded frames, counting across reconnects and loops
    pts_s: float  # stream time
    captured_ts: float  # wall clock when decoded (epoch seconds)
    decoded_s: float  # time.monotonic() when decoded, for latency
    media_pts_s: float = 0.0  # timestamp within the current play of the source (see Position)
    motion: bool | None = None  # what the stream's motion gate saw; None: no gate

    @property
    def position(self) -> Position:
        return Position(self.frame_index, self.pts_s, self.media_pts_s)


class SourceEventKind(StrEnum):
    CONNECTED = "connected"
    ENDED = "ended"
    FAILED = "failed"  # with a reason: the stream ends in error
    RECONNECTING = "reconnecting"
    DISCONTINUITY = "discontinuity"  # timestamps jumped (a join, a camera reset)
    DECODE_ERROR = "decode_error"  # frames dropped, counted
    FPS_CAP = "fps_cap"
    NOT_DECODED = "not_decoded"  # packets skipped by keyframe-only decoding


@dataclass(frozen=True, slots=True)
class SourceEvent:
    """What a decoder thread tells its stream."""

    kind: SourceEventKind
    message: str = ""
    count: int = 1


class DropReason(StrEnum):
    """Why frames of a stream were not processed: `frames.dropped` in status, the `reason` label."""

    FPS_CAP = "fps_cap"
    BUFFER_FULL = "buffer_full"
    PAUSED = "paused"
    DECODE_ERROR = "decode_error"
    NOT_DECODED = "not_decoded"
    INFERENCE_ERROR = "inference_error"
    NO_MOTION = "no_motion"  # the motion gate skipped its inference (a record is still written by option)
    RECORD_ERROR = "record_error"  # the chain ran but its record could not be made (a bug: logged)


# Frames dropped after they were decoded: they count as decoded (decoded = processed + these + in flight).
DECODED_BUT_DROPPED = frozenset({DropReason.FPS_CAP, DropReason.BUFFER_FULL, DropReason.PAUSED})


# -- sinks -------------------------------------------------------------------------------------------


class SinkCount(StrEnum):
    """A sink's counters of records (the `outcome` label of streamd_sink_records_total)."""

    EMITTED = "emitted"
    DELIVERED = "delivered"
    RETRIED = "retried"  # attempts that failed and will be tried again (batches, not records)
    SPOOLED = "spooled"


class SinkDrop(StrEnum):
    """Why a sink gave records up (counted, shown in status, `dropped_<reason>` in metrics)."""

    QUEUE_FULL = "queue_full"
    WRITE_ERROR = "write_error"
    DISK_FULL = "disk_full"
    SPOOL_FULL = "spool_full"
    REJECTED = "rejected"  # the receiver answered 4xx: retrying cannot help
    LEASE_LOST = "lease_lost"  # cluster mode: another node took the stream (it carries on from the spool)


class Delivery(StrEnum):
    """What one POST or publish of a batch came to."""

    DELIVERED = "delivered"
    FAILED = "failed"  # worth retrying (connection, 5xx, 408, 429)
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class ErrorStatus:
    """A stream's or a sink's latest failure (health.LastError's snapshot)."""

    message: str | None
    at: str | None  # ISO 8601, UTC
    active: bool

    def to_api(self) -> dict[str, Any]:
        return {"last_error": self.message, "last_error_at": self.at, "error_active": self.active}


@dataclass(frozen=True, slots=True)
class SinkStatus:
    kind: str
    emitted: int
    delivered: int
    retried: int
    spooled: int
    dropped: dict[str, int]
    error: ErrorStatus
    spool_bytes: int | None = None  # network sinks: bytes waiting in the spool (disk, or PostgreSQL)

    def to_api(self) -> dict[str, Any]:
        return {
            "type": self.kind,
            "emitted": self.emitted,
            "delivered": self.delivered,
            "retried": self.retried,
            "spooled": self.spooled,
            "dropped": dict(self.dropped),
            **self.error.to_api(),
        }


class Sink(Protocol):
    """Where a stream's records go (sinks/): `emit` never blocks, delivery happens in the sink's own
    tasks, and `stats` counts every record (settled ones move the stream's checkpoint)."""

    kind: str
    stats: SinkStats
    events_only: bool  # given only frames with events, as their events (an MQTT option)

    async def start(self) -> None: ...
    def emit(self, record: bytes) -> None: ...
    async def drain(self) -> None: ...  # what was emitted is written (files), before `finished` shows
    async def close(self) -> None: ...
    def status(self) -> SinkStatus: ...

    @property
    def idle(self) -> bool: ...  # nothing left to deliver (network sinks: memory and spool empty)


# -- streams -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Percentiles:
    p50: float | None
    p95: float | None
    p99: float | None

    def to_api(self) -> dict[str, float | None]:
        return {"p50": self.p50, "p95": self.p95, "p99": self.p99}


@dataclass(frozen=True, slots=True)
class FrameCounts:
    decoded: int
    processed: int
    dropped: dict[str, int]
    buffered: int

    def to_api(self) -> dict[str, Any]:
        return {
            "decoded": self.decoded,
            "processed": self.processed,
            "dropped": dict(self.dropped),
            "buffered": self.buffered,
        }


@dataclass(frozen=True, slots=True)
class AnalyticsStatus:
    """Tracks alive now, the latest frame's zone occupancy and line crossings since the stream started."""

    tracks: int
    zones: dict[str, dict[str, int]]  # zone → class → detections in it
    lines: dict[str, dict[str, dict[str, int]]]  # line → class → {"in": n, "out": n}

    def to_api(self) -> dict[str, Any]:
        return {"tracks": self.tracks, "zones": self.zones, "lines": self.lines}


@dataclass(frozen=True, slots=True)
class StreamStatus:
    """One stream's live state, read by the API, the status page and the gauges."""

    state: str
    degraded: bool  # a sink is failing now (full disk, receiver down)
    error: ErrorStatus
    frames: FrameCounts
    reconnects: int
    discontinuities: int
    fps_in: float
    fps_out: float
    latency: Percentiles  # capture → sink, seconds
    stages: dict[str, Percentiles]  # where that latency goes
    last_frame_age_s: float | None
    sinks: tuple[SinkStatus, ...]
    analytics: AnalyticsStatus | None = None  # a stream with tracking, zones or lines

    def to_api(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "degraded": self.degraded,
            **self.error.to_api(),
            "frames": self.frames.to_api(),
            "reconnects": self.reconnects,
            "discontinuities": self.discontinuities,
            "fps_in": self.fps_in,
            "fps_out": self.fps_out,
            "latency_s": {
                **self.latency.to_api(),
                "stages": {stage: value.to_api() for stage, value in self.stages.items()},
            },
            "last_frame_age_s": self.last_frame_age_s,
            "sinks": [sink.to_api() for sink in self.sinks],
            **({"analytics": self.analytics.to_api()} if self.analytics is not None else {}),
        }
