"""What one stream may hold of the machine: frames (memory) by its fps, decoder threads (cores) by the
number of streams. Pure rules, applied by the manager when a stream starts; no I/O, no clock.

Memory: a 720p yuv420p frame is 1.4 MB and a 1080p one 3.1 MB, so the configured bounds (8 buffered,
24 in flight) cost a 1080p camera ~100 MB. A camera capped at `fps` produces `fps` frames a second;
holding more than `HELD_S` of them only stores lateness, and a stream that far behind is past any
latency target anyway. So each bound is the stream's frames of `HELD_S`, at least `MIN_FRAMES` (one in
the chain while the next waits), at most the configured value; an uncapped stream keeps the configured
bounds (a file at full speed needs them to fill batches).

Threads: FFmpeg's frame threads add one frame of delay per thread, and with keyframe-only decoding one
GOP per thread (measured: 3 keyframes fed before the first frame comes out with 3 frame threads, i.e.
4 s late on a 2 s GOP); slice threads do nothing for the single-slice H.264 that cameras and x264 send.
With as many streams as cores, the streams are the parallelism and extra threads only cost switches
(measured: 8 streams at 1 thread each 1.74 core-ms a frame against 1.93 with PyAV's default, 3 slice
threads, and 2.07 with frame threads too). So a stream gets `cores // streams` threads of both kinds
only when it decodes every frame and there are fewer streams than cores, and one thread otherwise.
"""

from __future__ import annotations

import math
import os

HELD_S = 1.0  # seconds of a capped stream's frames it may buffer, and as many in flight
MIN_FRAMES = 2


def held_frames(configured: int, fps_cap: float | None) -> int:
    """The bound on a stream's frames (buffered, or in flight) for a configured bound and an fps cap."""
    if not fps_cap:
        return configured
    return min(configured, max(MIN_FRAMES, math.ceil(fps_cap * HELD_S - 1e-9)))


def decoder_threads(streams: int, cores: int, may_skip_frames: bool) -> int:
    """FFmpeg threads for a stream starting beside `streams - 1` others (it included) on `cores`.
    `may_skip_frames`: the stream has an fps cap and keyframe-only decoding is on, so it may decode
    keyframes only, where frame threads would hold each keyframe back for whole GOPs."""
    if may_skip_frames or streams >= cores:
        return 1
    return max(1, cores // max(1, streams))


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity; a cgroup CPU quota is not seen)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
