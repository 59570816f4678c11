"""StreamPipeline: one stream from its decoder thread to its sinks.

The decoder thread fills a FrameBuffer; on the loop a producer starts the chain on each frame (a few
frames in flight, so the networks' batches fill across frames and streams) and an emitter writes the
records to the sinks strictly in frame order. Source events drive the state machine; every drop is
counted by cause. Everything here but the decoder runs on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import orjson

from streamd.analytics.zones import SceneConfig
from streamd.chains.results import Prediction
from streamd.chains.runner import ChainRunner
from streamd.chains.spec import ChainPlan
from streamd.entities import (
    DropReason,
    Frame,
    Image,
    Sink,
    SourceEvent,
    SourceEventKind,
    StreamStatus,
)
from streamd.health import LastError
from streamd.inference.batching import FILE, LANE, LIVE, Lane
from streamd.metrics import Metrics
from streamd.streams.analytics import StreamAnalytics
from streamd.streams.checkpoints import Checkpoint, Checkpoints
from streamd.streams.counters import StreamCounters
from streamd.streams.state import StreamState, check_transition
from streamd.video.buffer import DropPolicy, FrameBuffer
from streamd.video.source import PyAVSource, SourceSettings, redact

logger = logging.getLogger(__name__)

DRAIN_TIMEOUT_S = 30.0

# (frames, when they left the buffer, the chain's task: its predictions and when they were ready)
# (None: a frame the motion gate skipped).
InFlight = asyncio.Queue[
    "tuple[list[Frame], float, asyncio.Task[tuple[list[Prediction | None], float]]] | None"
]
# Decoder events that are counted drops, and the reason they count under.
_DROPS = {
    SourceEventKind.DECODE_ERROR: DropReason.DECODE_ERROR,
    SourceEventKind.FPS_CAP: DropReason.FPS_CAP,
    SourceEventKind.NOT_DECODED: DropReason.NOT_DECODED,
}


@dataclass(frozen=True, slots=True)
class PipelineSettings:
    """How one stream's pipeline buffers, bounds its frames in the chain and checkpoints."""

    buffer_frames: int
    frames_in_flight: int
    drop_policy: DropPolicy
    checkpoint_interval_s: float = 1.0
    scene: SceneConfig | None = None  # zones and lines (streams/analytics.py)
    live_batch_wait_s: float = 0.0  # how long a live frame may wait for a fuller batch (batching.Lane)


def lane_of(stream_id: int, source: SourceSettings, live_batch_wait_s: float) -> Lane:
    """A stream's lane in its networks' batchers: cameras before files; frames that come at a camera's
    pace (a camera, or a file played in realtime) wait for company, a file at decoding speed does not.
    A realtime file keeps the files' priority: its `wait` drop policy lets it fall behind and catch up
    at full speed, which must not take batches from cameras that drop what they cannot hold."""
    wait = live_batch_wait_s if source.is_live or source.realtime else 0.0
    return Lane(LIVE if source.is_live else FILE, f"stream-{stream_id}", wait)


class StreamPipeline:
    """One stream: decoder → buffer → chain → analytics → record → sinks, in order, with its state."""

    def __init__(
        self,
        stream_id: int,
        name: str,
        chain_name: str,
        source: SourceSettings,
        plan: ChainPlan,
        sinks: list[Sink],
        runner: ChainRunner,
        settings: PipelineSettings,
        metrics: Metrics | None = None,
        *,
        run: int = 0,
        checkpoint: Checkpoint | None = None,
        lease: tuple[int, str] | None = None,
    ) -> None:
        self.stream_id = stream_id
        self.name = name
        self.run = run  # records carry it, so a consumer can tell what a restart replays
        # Cluster mode: (epoch, node) stamped on records, so a consumer can drop a stale owner's writes.
        self.lease = lease
        self.checkpoints = Checkpoints(stream_id, sinks, checkpoint, settings.checkpoint_interval_s)
        self._events_only = any(sink.events_only for sink in sinks)
        self.counters = StreamCounters(stream_id, metrics)
        self.analytics = StreamAnalytics(plan, settings.scene)
        self.chain_name = chain_name
        self.state = StreamState.STARTING
        self.error = LastError()
        self._source_settings = source
        self._plan = plan
        self.sinks = sinks
        self._runner = runner
        self._settings = settings
        self._uri = redact(source.uri)
        self._emit_still = source.motion is not None and source.motion.emit_still
        self._last_frame_s: float | None = None
        self._resume = asyncio.Event()
        self._resume.set()
        self._source: PyAVSource | None = None
        self._buffer: FrameBuffer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._frames_in_flight = 0
        self._room = asyncio.Event()  # set when a group left the chain, so frames_in_flight has room
        self._ended: SourceEvent | None = None
        self.done = asyncio.Event()
        self.latest: tuple[Image, Prediction] | None = None  # for snapshots

    # -- lifecycle -------------------------------------------------------------------------------------
    async def start(self, *, paused: bool = False) -> None:
        """Start the sinks, the decoder thread and the tasks that feed the chain and emit in order."""
        loop = asyncio.get_running_loop()
        await self.analytics.prepare()
        for sink in self.sinks:
            await sink.start()
        self._buffer = FrameBuffer(loop, self._settings.buffer_frames, self._settings.drop_policy, self._drop)
        self._source = PyAVSource(
            str(self.stream_id),
            self._source_settings,
            self._buffer,
            lambda event: loop.call_soon_threadsafe(self._on_event, event),
        )
        in_flight: InFlight = asyncio.Queue()  # bounded by frames_in_flight, counted in frames
        self._tasks = [
            asyncio.create_task(self._produce(in_flight), name=f"stream-{self.stream_id}-produce"),
            asyncio.create_task(self._emit(in_flight), name=f"stream-{self.stream_id}-emit"),
        ]
        self.checkpoints.start()
        if paused:
            self.pause()
        self._source.start()

    def pause(self) -> None:
        self._resume.clear()
        self._set_state(StreamState.PAUSED)

    def resume(self) -> None:
        self._resume.set()
        self._set_state(StreamState.RUNNING if self._last_frame_s is not None else StreamState.STARTING)

    async def stop(self) -> None:
        """Stop decoding, finish the frames in flight, flush and close the sinks."""
        if self._source is not None:
            self._source.stop()
        if self._buffer is not None:
            self._buffer.close()
        self._resume.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for sink in self.sinks:
            try:
                await sink.close()
            except Exception as exc:  # supervision boundary: one sink's failure must not keep the others
                sink.stats.error.set(f"closing failed: {type(exc).__name__}: {exc}")
                logger.exception("stream %d: closing its %s sink failed", self.stream_id, sink.kind)
        await self.checkpoints.stop()
        if self._source is not None and not await asyncio.to_thread(self._source.join, 15.0):
            logger.warning("stream %d: decoder thread did not stop within 15 s", self.stream_id)
        self._set_state(StreamState.STOPPED)

    # -- decoder events (loop) ---------------------------------------------------------------------------
    def _on_event(self, event: SourceEvent) -> None:
        if event.kind is SourceEventKind.CONNECTED:
            if self.state != StreamState.PAUSED:
                self._set_state(StreamState.RUNNING)
        elif event.kind is SourceEventKind.RECONNECTING:
            self.counters.reconnected()
            self.analytics.reset()  # a gap breaks every track
            self.error.set(event.message)
            if self.state != StreamState.PAUSED:
                self._set_state(StreamState.RECONNECTING)
            logger.warning(
                "stream %d (%s): %s",
                self.stream_id,
                self._uri,
                event.message,
                extra={"stream_id": self.stream_id},
            )
        elif event.kind is SourceEventKind.DISCONTINUITY:
            self.counters.discontinuity()
        elif event.kind in _DROPS:
            self._drop(_DROPS[event.kind], event.count)
        elif event.kind in (SourceEventKind.ENDED, SourceEventKind.FAILED):
            self._ended = event
            if event.message:
                self.error.set(event.message)
            assert self._buffer is not None
            self._buffer.close()  # the producer drains what is buffered, then the emitter finishes

    def _drop(self, reason: DropReason, count: int = 1) -> None:
        if reason is DropReason.BUFFER_FULL and not self._resume.is_set():
            reason = DropReason.PAUSED
        self.counters.drop(reason, count)

    def _set_state(self, target: StreamState) -> None:
        if target == self.state:
            return
        if not check_transition(self.state, target):
            logger.debug("stream %d: ignoring %s → %s", self.stream_id, self.state, target)
            return
        logger.info(
            "stream %d (%s): %s → %s",
            self.stream_id,
            self.name,
            self.state,
            target,
            extra={"stream_id": self.stream_id},
        )
        self.state = target

    # -- frames ------------------------------------------------------------------------------------------
    async def _produce(self, in_flight: InFlight) -> None:
        """Every frame already buffered goes into the chain together, so they share the networks' batches
        (as DeepStream's muxer batches frames) instead of trickling in one by one."""
        assert self._buffer is not None
        # The chain tasks created below inherit this context: their items queue in this stream's lane.
        LANE.set(lane_of(self.stream_id, self._source_settings, self._settings.live_batch_wait_s))
        limit = self._settings.frames_in_flight
        while True:
            await self._resume.wait()
            while self._frames_in_flight >= limit:
                self._room.clear()
                await self._room.wait()
            frames = await self._buffer.get_many(
                min(self._settings.buffer_frames, limit - self._frames_in_flight)
            )
            if not frames:
                break
            self.counters.count_decoded(len(frames))
            taken_s = self._last_frame_s = time.monotonic()
            self._frames_in_flight += len(frames)
            for frame in frames:
                self.counters.stage("buffer", taken_s - frame.decoded_s)
            in_flight.put_nowait((frames, taken_s, asyncio.create_task(self._run_chain(frames))))
        in_flight.put_nowait(None)

    async def _run_chain(self, frames: list[Frame]) -> tuple[list[Prediction | None], float]:
        """The chain on the frames that moved (all of them without a motion gate); None for the others."""
        moving = [frame for frame in frames if frame.motion is not False]
        predictions = []
        if moving:  # a group of still frames costs no chain call (nor a zero-image duration sample)
            uris = [self._uri] * len(moving)
            predictions = await self._runner.run(self._plan, [f.pixels for f in moving], uris)
        found = iter(predictions)
        return [next(found) if frame.motion is not False else None for frame in frames], time.monotonic()

    async def _emit(self, in_flight: InFlight) -> None:
        while (item := await in_flight.get()) is not None:
            frames, taken_s, task = item
            try:
                predictions, ready_s = await task
            except Exception as exc:  # supervision boundary: a failing model drops these frames, counted
                self._drop(DropReason.INFERENCE_ERROR, len(frames))
                self.error.set(f"frame {frames[0].frame_index}: {type(exc).__name__}: {exc}")
            else:
                # Batches of a stream may finish out of order; records wait for their turn.
                waited_s = time.monotonic() - ready_s
                for frame, prediction in zip(frames, predictions, strict=True):
                    if prediction is None:
                        self._still(frame)
                        continue
                    self.counters.stage("chain", ready_s - taken_s)
                    self.counters.stage("emit_wait", waited_s)
                    try:
                        self._write(frame, prediction)
                    except Exception as exc:  # supervision boundary: one bad record must not stop the stream
                        self._drop(DropReason.RECORD_ERROR)
                        self.error.set(f"frame {frame.frame_index}: {type(exc).__name__}: {exc}")
                        logger.exception("stream %d: frame %d: no record", self.stream_id, frame.frame_index)
            self._frames_in_flight -= len(frames)
            self._room.set()
        if self._ended is not None:
            # A finished stream's results are complete on disk when its state says so.
            try:
                await asyncio.wait_for(asyncio.gather(*(s.drain() for s in self.sinks)), DRAIN_TIMEOUT_S)
            except TimeoutError:
                logger.warning(
                    "stream %d: its sinks did not drain in %.0f s", self.stream_id, DRAIN_TIMEOUT_S
                )
        self._finish()

    def _write(self, frame: Frame, prediction: Prediction) -> None:
        now = time.monotonic()
        latency = now - frame.decoded_s
        events: tuple[dict[str, Any], ...] = ()
        width, height = frame.pixels.shape[1], frame.pixels.shape[0]
        if self.analytics.enabled:
            analysed = self.analytics.apply(prediction, frame.pts_s, width, height)
            prediction, events = analysed.prediction, analysed.events
            for event in events:
                self.counters.line_crossed(event["line"], event["class"], event["direction"])
        record = self._header(frame, latency)
        if frame.motion is not None:
            record["motion"] = True
        record["predictions"] = [prediction.to_json()]
        if self.analytics.has_lines:
            record["events"] = list(events)
        only_events = None
        if events and self._events_only:  # an events-only sink's message: the frame, its events
            only_events = orjson.dumps(
                {key: value for key, value in record.items() if key not in ("predictions", "motion")}
            )
        self._emit_record(orjson.dumps(record), frame, only_events)
        self.latest = (frame.pixels, prediction)
        if self._ended is None:  # frames still draining after a failure do not heal it
            self.error.recovered()
        self.counters.processed_one(latency, now)

    def _still(self, frame: Frame) -> None:
        """A frame the motion gate skipped: counted, and recorded without predictions if asked."""
        self.counters.drop(DropReason.NO_MOTION)
        if not self._emit_still:
            return
        record = self._header(frame, time.monotonic() - frame.decoded_s)
        record["motion"] = False
        record["predictions"] = []
        self._emit_record(orjson.dumps(record), frame)

    def _header(self, frame: Frame, latency_s: float) -> dict[str, Any]:
        """A record's fields before its results (README: Streams, the record format)."""
        header: dict[str, Any] = {"stream_id": self.stream_id, "stream_name": self.name, "run": self.run}
        if self.lease is not None:  # only in cluster mode: SQLite records stay as they were
            header["epoch"], header["node"] = self.lease
        return {
            **header,
            "frame_index": frame.frame_index,
            "pts_s": round(frame.pts_s, 6),
            "captured_ts": frame.captured_ts,
            "latency_s": round(latency_s, 6),
            "width": frame.pixels.shape[1],
            "height": frame.pixels.shape[0],
            "chain": self.chain_name,
        }

    def _emit_record(self, record: bytes, frame: Frame, events: bytes | None = None) -> None:
        """To every sink; an events-only sink gets the frame's events, if it has any, instead."""
        given = []
        for sink in self.sinks:
            payload = events if sink.events_only else record
            if payload is not None:
                sink.emit(payload)
            given.append(payload is not None)
        self.checkpoints.emitted(frame.position, given)

    def _finish(self) -> None:
        event = self._ended
        if event is not None:
            self._set_state(
                StreamState.FINISHED if event.kind is SourceEventKind.ENDED else StreamState.ERROR
            )
        self.done.set()

    # -- status ------------------------------------------------------------------------------------------
    def status(self) -> StreamStatus:
        """The stream's `StreamStatus` now: state, counts, rates, latencies, sinks and analytics."""
        now = time.monotonic()
        sinks = tuple(sink.status() for sink in self.sinks)
        fps_in, fps_out = self.counters.fps(now)
        return StreamStatus(
            state=self.state.value,
            degraded=any(sink.error.active for sink in sinks),
            error=self.error.snapshot(),
            frames=self.counters.frames(len(self._buffer) if self._buffer is not None else 0),
            reconnects=self.counters.reconnects,
            discontinuities=self.counters.discontinuities,
            fps_in=fps_in,
            fps_out=fps_out,
            latency=self.counters.latency(),
            stages=self.counters.stages(),
            last_frame_age_s=None if self._last_frame_s is None else round(now - self._last_frame_s, 3),
            sinks=sinks,
            analytics=self.analytics.status() if self.analytics.enabled else None,
        )
