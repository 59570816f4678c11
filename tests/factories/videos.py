"""H.264 videos encoded by the tests with PyAV: frame i is painted with COLOURS[i % 3] so its content,
and the classification a chain gives it, are known from its index."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

COLOURS = ((255, 0, 0), (0, 255, 0), (0, 0, 255))  # BGR: blue, green, red
NAMES = ("blue", "green", "red")

# The recognition spec and classification version that name a colours frame (ids 1, 2, 3 in NAMES' order).
COLOUR_SPEC = {
    "name": "colours",
    "outputs": [{"labels": {"labels": [{"id": i, "name": name} for i, name in enumerate(NAMES, 1)]}}],
}


def colour_version(spec_id: int, network_id: int) -> dict[str, object]:
    return {
        "spec_id": spec_id,
        "network_id": network_id,
        "post_processings": [{"classification": {"output_tensor": "prob", "thresholds": [0.5] * 3}}],
    }


def frame_for(index: int, width: int, height: int) -> np.ndarray:
    frame = np.empty((height, width, 3), dtype=np.uint8)
    frame[:] = COLOURS[index % 3]
    return frame


def encode_h264(
    path: Path,
    frames: int,
    fps: int = 30,
    width: int = 160,
    height: int = 96,
    *,
    faststart: bool = False,
    gop: int | None = None,
    keyframes: frozenset[int] | None = None,
) -> Path:
    """`faststart` puts the MP4's index first, as files made for the web have it (a cut copy then still
    opens); `gop` puts a keyframe exactly every `gop` frames, as an IP camera does; `keyframes` puts
    them at these frame indexes and nowhere else."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", options={"movflags": "faststart"} if faststart else {}) as container:
        stream = container.add_stream("h264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "tune": "zerolatency"}
        if gop is not None or keyframes is not None:
            interval = gop or 100_000
            stream.options["x264-params"] = f"keyint={interval}:min-keyint={interval}:scenecut=0"
        for index in range(frames):
            video_frame = av.VideoFrame.from_ndarray(frame_for(index, width, height), format="bgr24")
            if keyframes is not None and index in keyframes:
                video_frame.pict_type = av.video.frame.PictureType.I
            for packet in stream.encode(video_frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def encode_joined_ts(path: Path, segments: tuple[int, ...], fps: int = 30) -> Path:
    """MPEG-TS segments joined byte for byte, as a recorder or `cat` makes them: each segment's
    timestamps start again at 0, so they jump backwards at every join. Frames keep counting across
    segments (frame i is COLOURS[i % 3])."""
    path.parent.mkdir(parents=True, exist_ok=True)
    parts, start = [], 0
    for frames in segments:
        segment = path.with_name(f"{path.stem}.part{len(parts)}.ts")
        with av.open(str(segment), "w", format="mpegts") as container:
            stream = container.add_stream("h264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
            stream.options = {"preset": "ultrafast", "tune": "zerolatency"}
            for index in range(start, start + frames):
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame_for(index, 160, 96), "bgr24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        parts.append(segment.read_bytes())
        segment.unlink()
        start += frames
    path.write_bytes(b"".join(parts))
    return path
