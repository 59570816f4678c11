"""PyAVSource: one decoder thread per stream, from `av.open` to frames in the FrameBuffer.

It opens the source (never on the loop: `av.open` blocks for seconds on RTSP), decodes, picks frames by
their timestamps when an fps cap is set, and reports what happens through `SourceEvent`s handed to the
loop. A live source that ends, fails or freezes (FFmpeg's `timeout` option is always set for network
sources) is reopened with capped exponential backoff and jitter, for ever unless a budget is set; a file
ends (`ended`) or, with `loop`, starts over.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from streamd.analytics.motion import MotionConfig, MotionGate, y_plane
from streamd.egress import EgressDeniedError, EgressPolicy
from streamd.entities import Frame, Position, SourceEvent, SourceEventKind
from streamd.video.buffer import FrameBuffer
from streamd.video.frames import I420Frame
from streamd.video.keyframes import KeyframeGate

if TYPE_CHECKING:
    import av.video.frame

logger = logging.getLogger(__name__)

_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")
DECLARED_DURATION_FORMATS = ("mov,mp4", "matroska")
LIVE_RESUME_GAP_S = 0.04  # a live source resumed after a restart continues its clock a frame later
NETWORK_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")


def redact(uri: str) -> str:
    """`rtsp://user:pass@cam/x` → `rtsp://***@cam/x`: credentials never reach logs, status or errors."""
    return _CREDENTIALS.sub("***@", uri)


@dataclass(frozen=True, slots=True)
class SourceSettings:
    uri: str  # as FFmpeg takes it (a local path, or a URL)
    is_live: bool
    fps_cap: float | None = None
    loop: bool = False
    realtime: bool = False
    rtsp_transport: str = "tcp"
    stall_timeout_s: float = 10.0
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 30.0
    max_reconnects: int | None = None  # None: for ever
    start: Position | None = None  # resume after this frame (a checkpoint), not from the beginning
    egress: EgressPolicy | None = None  # where a network source may connect (checked at each open)
    keyframe_only: bool = True  # decode keyframes only while they meet the fps cap (KeyframeGate)
    decoder_threads: int = 0  # FFmpeg threads (frame and slice) of this stream's decoder; 0: FFmpeg's choice
    skip_loop_filter: bool = False  # no deblocking but on keyframes (FFmpeg's skip_loop_filter=nokey)
    motion: MotionConfig | None = None  # gate inference on motion (analytics/motion.py), after the fps cap


class FpsCap:
    """Keeps frames by their timestamps: one per 1/fps of stream time, never every Nth frame."""

    def __init__(self, fps: float | None) -> None:
        self._period = None if not fps else 1.0 / fps
        self._next: float | None = None

    def keep(self, pts_s: float) -> bool:
        if self._period is None:
            return True
        if self._next is None or pts_s >= self._next - 1e-6:
            # Advance on the grid; after a gap (reconnect, seek) restart the grid at this frame.
            grid = (self._next or pts_s) + self._period
            self._next = grid if grid > pts_s else pts_s + self._period
            return True
        return False


class PyAVSource:
    def __init__(
        self,
        name: str,
        settings: SourceSettings,
        buffer: FrameBuffer,
        report: Callable[[SourceEvent], object],
    ) -> None:
        self._settings = settings
        self._buffer = buffer
        self._report = report
        self._stop = threading.Event()
        start = settings.start
        self._next_index = 0 if start is None else start.frame_index + 1
        self._capped = 0  # frames skipped by the fps cap not yet reported (reported in bulk)
        self._motion: MotionGate | None = None  # made at the first frame (it needs the size)
        # A file resumes at its checkpoint's own timestamp (seek, then skip what was emitted); a live
        # source cannot seek, so its clock just continues a frame after the checkpoint.
        self._pts_offset_s = 0.0
        self._resume_at_s: float | None = None
        if start is not None and settings.is_live:
            self._pts_offset_s = start.pts_s + LIVE_RESUME_GAP_S
        elif start is not None:
            self._pts_offset_s = start.pts_s - start.media_pts_s
            self._resume_at_s = start.media_pts_s
        self._thread = threading.Thread(target=self._run, name=f"streamd-decode-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout_s: float) -> bool:
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _run(self) -> None:
        attempts = 0
        cap = FpsCap(self._settings.fps_cap)
        # Kept across plays: a looping file or a reconnected camera keeps its GOP, so it need not be
        # measured again (a changed one shows at its second keyframe).
        gate = KeyframeGate(self._settings.fps_cap if self._settings.keyframe_only else None)
        if self._settings.start is not None:
            cap.keep(self._settings.start.pts_s)  # the grid continues from the last emitted frame
        while not self._stop.is_set():
            try:
                decoded = self._play_once(cap, gate)
                error = None
            except Exception as exc:  # supervision boundary: a broken source is a state, never a crash
                decoded, error = 0, _describe(exc)
            if self._stop.is_set():
                return
            if not self._settings.is_live:
                if error is not None and decoded == 0:
                    self._report(SourceEvent(SourceEventKind.FAILED, error))
                    return
                if self._settings.loop and decoded:
                    continue
                self._report(SourceEvent(SourceEventKind.ENDED, error or ""))
                return
            attempts = 0 if decoded else attempts + 1
            budget = self._settings.max_reconnects
            if budget is not None and attempts > budget:
                self._report(
                    SourceEvent(SourceEventKind.FAILED, error or "the source keeps ending without frames")
                )
                return
            delay = min(
                self._settings.reconnect_max_s, self._settings.reconnect_initial_s * 2 ** max(0, attempts - 1)
            )
            delay *= random.uniform(0.5, 1.0)
            reason = error or "the source ended"
            self._report(
                SourceEvent(SourceEventKind.RECONNECTING, f"{reason}; reconnecting in {delay:.1f} s")
            )
            if self._stop.wait(delay):
                return

    def _open_checked(self) -> Any:
        """Open the source; for a network source the error says no more than "connection failed" (what
        FFmpeg says would tell open ports from closed ones to whoever creates streams: it goes to the
        log)."""
        if not self._settings.is_live:
            return self._open()
        if self._settings.egress is not None:
            self._settings.egress.check_url_blocking(self._settings.uri)
        try:
            return self._open()
        except Exception as exc:
            logger.warning(
                "cannot open %s: %s: %s", redact(self._settings.uri), type(exc).__name__, redact(str(exc))
            )
            raise ConnectionFailedError("connection failed (the daemon log has the details)") from None

    def _open(self) -> Any:
        import av

        options = {}
        if self._settings.is_live:
            options["timeout"] = str(int(self._settings.stall_timeout_s * 1_000_000))  # microseconds
            if self._settings.uri.startswith("rtsp"):
                options["rtsp_transport"] = self._settings.rtsp_transport
        container = av.open(self._settings.uri, options=options, timeout=self._settings.stall_timeout_s)
        if container.streams.video:
            # Before the first decode: FFmpeg reads these when the codec opens (streams/budget.py).
            codec = container.streams.video[0].codec_context
            if self._settings.decoder_threads:
                codec.thread_type = "AUTO" if self._settings.decoder_threads > 1 else "SLICE"
                codec.thread_count = self._settings.decoder_threads
            if self._settings.skip_loop_filter:
                codec.options = {**codec.options, "skip_loop_filter": "nokey"}
        return container

    def _play_once(self, cap: FpsCap, gate: KeyframeGate) -> int:
        """Open, decode until the end; returns the number of frames decoded."""
        import av

        container = self._open_checked()
        decoded = 0
        clock: float | None = None  # monotonic time of pts 0, for realtime pacing
        last_pts = end_pts = 0.0
        fps = 25.0
        try:
            stream = container.streams.video[0]
            fps = float(stream.average_rate or 25)
            time_base = float(stream.time_base or 0)  # a float once, not a Fraction product per packet
            skip_until, self._resume_at_s = self._resume_at_s, None
            if skip_until is not None:
                _seek(container, stream, skip_until)
            self._report(SourceEvent(SourceEventKind.CONNECTED))
            packets = container.demux(stream)
            gate.new_play()
            if self._motion is not None:
                self._motion.reset()  # a new play (reconnect, loop): its first frame is the background
            skipped = 0
            while not self._stop.is_set():
                try:
                    packet = next(packets)
                except StopIteration:
                    if not self._settings.is_live:
                        _check_complete(container, stream, end_pts + 1.0 / fps if decoded else 0.0, fps)
                    break
                packet_s = None if packet.pts is None or not time_base else packet.pts * time_base
                if packet.size and not gate.decode(packet.is_keyframe, packet_s):
                    self._next_index += 1  # indexes stay those of full decoding
                    skipped += 1
                    end_pts = max(end_pts, packet_s or 0.0)  # the file is not cut short for skipping
                    continue
                if skipped:  # reported in bulk: one event per GOP, not one per packet
                    self._report(SourceEvent(SourceEventKind.NOT_DECODED, count=skipped))
                    skipped = 0
                try:
                    frames = packet.decode()
                except av.error.InvalidDataError as exc:
                    self._report(SourceEvent(SourceEventKind.DECODE_ERROR, str(exc)))
                    continue
                for frame in frames:
                    decoded += 1
                    pts = float(frame.time) if frame.time is not None else decoded / fps
                    if decoded > 1 and pts <= last_pts:
                        # Backwards (joined segments, a camera resync, a wrap): stream time goes on a
                        # frame later, so pts_s, the fps grid and realtime pacing stay monotonic.
                        self._pts_offset_s += last_pts - pts + 1.0 / fps
                        self._report(SourceEvent(SourceEventKind.DISCONTINUITY))
                    last_pts, end_pts = pts, max(end_pts, pts)
                    if skip_until is not None:
                        if pts <= skip_until + 1e-6:  # emitted before the restart
                            continue
                        skip_until = None
                    if clock is None:
                        clock = time.monotonic() - (self._pts_offset_s + pts)
                    if not self._deliver(frame, pts, cap, clock):
                        return decoded
        finally:
            container.close()
            if skipped:
                self._report(SourceEvent(SourceEventKind.NOT_DECODED, count=skipped))
            self._report_capped()
            if decoded:  # a replayed file or a reconnected camera continues the stream's clock
                self._pts_offset_s += last_pts + 1.0 / fps
        return decoded

    def _report_capped(self) -> None:
        if self._capped:
            self._report(SourceEvent(SourceEventKind.FPS_CAP, count=self._capped))
            self._capped = 0

    def _deliver(self, frame: av.video.frame.VideoFrame, pts: float, cap: FpsCap, clock: float) -> bool:
        """Number the frame, apply the fps cap and realtime pacing, buffer it; False once stopping."""
        index = self._next_index
        self._next_index += 1
        pts_s = self._pts_offset_s + pts
        if not cap.keep(pts_s):
            self._capped += 1
            return True
        self._report_capped()  # with the next kept frame: one hand-off to the loop, not one per frame
        if self._settings.realtime:
            ahead = pts_s - (time.monotonic() - clock)
            if ahead > 0 and self._stop.wait(ahead):
                return False
        pixels = to_image(frame)
        moved = None if self._settings.motion is None else self._moved(pixels)
        if not self._buffer.put(Frame(pixels, index, pts_s, time.time(), time.monotonic(), pts, moved)):
            self._stop.set()
            return False
        return True

    def _moved(self, pixels: np.ndarray | I420Frame) -> bool:
        """Whether the gate lets this frame through to inference (motion, or just after it)."""
        assert self._settings.motion is not None
        height, width = pixels.shape[:2]
        gate = self._motion
        if gate is None or (gate.width, gate.height) != (width, height):
            gate = self._motion = MotionGate(self._settings.motion, width, height)
        return gate.update(y_plane(pixels)).gate_open


class ConnectionFailedError(Exception):
    """A network source could not be opened (details logged, not shown)."""


class TruncatedFileError(Exception):
    """A file ended before its container said it would."""


def _check_complete(container: Any, stream: Any, end_s: float, fps: float) -> None:
    """A file whose frames stop well before the duration its container declares was cut short (a
    download or copy that did not finish): that is an error, not the end of the video. Only containers
    whose header declares the duration (MP4/MOV, Matroska/WebM); MPEG-TS only estimates it."""
    if not container.format.name.startswith(DECLARED_DURATION_FORMATS):
        return
    if stream.duration is None or not stream.time_base:
        return
    declared_s = float((stream.duration + (stream.start_time or 0)) * stream.time_base)
    if end_s < declared_s - max(2.0 / fps, 0.1):
        raise TruncatedFileError(
            f"the file ends at {end_s:.3f} s but its container declares {declared_s:.3f} s: it is "
            "truncated or damaged"
        )


def _describe(exc: Exception) -> str:
    if isinstance(exc, ConnectionFailedError | EgressDeniedError):
        return str(exc)
    return f"{type(exc).__name__}: {redact(str(exc))}"


def _seek(container: Any, stream: Any, pts_s: float) -> None:
    """To the keyframe at or before `pts_s`; where the file cannot seek, decoding from the start and
    skipping by timestamp gives the same frames, only slower."""
    import av

    try:
        container.seek(int(pts_s / stream.time_base), stream=stream, backward=True)
    except (av.error.FFmpegError, ValueError, TypeError) as exc:
        logger.warning("cannot seek to %.3f s (%s): decoding from the start to resume", pts_s, exc)


def to_image(frame: av.video.frame.VideoFrame) -> np.ndarray | I420Frame:
    """A decoded frame as the pipeline carries it. H.264's usual yuv420p stays planar (converted to BGR
    only if an action needs the whole frame; OpenCV's SIMD conversion then, 1420 fps at 720p here against
    1000 for FFmpeg's `bgr24`); other formats become uint8 HxWx3 BGR at once."""
    width, height = frame.width, frame.height
    if frame.format.name == "yuv420p" and width % 2 == 0 and height % 2 == 0:
        planes = frame.to_ndarray(format="yuv420p")
        if planes.shape == (height * 3 // 2, width):
            return I420Frame(planes, width, height)
    return frame.to_ndarray(format="bgr24")
