"""The capacity benchmark's camera clip and its cost measurements: decoding the way a stream does (one
thread, keyframes only when the cap allows, kept frames converted) and raw inference, each alone."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from bench.inference import raw_rate
from streamd.entities import Frame
from streamd.networks.spec import Preprocessing
from streamd.streams.budget import decoder_threads
from streamd.video.source import PyAVSource, SourceSettings


def encode_camera(
    path: Path, seconds: int, fps: int, gop_s: float, bitrate: int, width: int, height: int
) -> Path:
    """A camera-like clip: a smooth scene panning slowly with a small busy patch moving across it,
    x264 at `bitrate` (an IP camera's ~1.6 Mbit/s at 720p), a keyframe every `gop_s`, no B-frames."""
    rng = np.random.default_rng(0)
    small = rng.integers(0, 255, (height // 16, width // 8, 3), dtype=np.uint8)
    scene = cv2.resize(small, (width * 2, height), interpolation=cv2.INTER_CUBIC)
    gop = round(gop_s * fps)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("h264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.bit_rate = bitrate
        stream.options = {
            "preset": "veryfast",
            "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0",
        }
        patch = height // 7
        for index in range(seconds * fps):
            left = index * 2 % width
            frame = scene[:, left : left + width].copy()
            x = index * 6 % (width - patch)
            frame[height // 2 : height // 2 + patch, x : x + patch] = rng.integers(0, 255, (patch, patch, 3))
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def remux_repeated(source: Path, target: Path, times: int) -> Path:
    """`source` played `times` over in one file, without re-encoding (for a file-backed RTSP mount,
    which ends with its file)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(source)) as reader, av.open(str(target), "w") as writer:
        video = reader.streams.video[0]
        out = writer.add_stream_from_template(video)
        packets = [p for p in reader.demux(video) if p.size]
        step = max(p.pts for p in packets) + (packets[1].pts - packets[0].pts)
        for round_index in range(times):
            for packet in packets:
                packet.pts += step if round_index else 0
                packet.dts += step if round_index else 0
                packet.stream = out
                writer.mux(packet)
    return target


class _TimingBuffer:
    """Takes the frames a source hands over, noting the decoder thread's CPU time at each; refuses the
    one after `limit` (the source then stops)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.cpu_s: list[float] = []

    def put(self, frame: Frame) -> bool:
        self.cpu_s.append(time.thread_time())
        return len(self.cpu_s) <= self.limit


def decode_cost_ms(video: Path, fps: float, plays: int = 3, skip_loop_filter: bool = False) -> float:
    """Core-ms of decoding per second of camera, as a stream capped at `fps` decodes it among many
    (streams/budget.py's thread rule): the clip looped `plays` times, the first play left out (the
    keyframe gate measures the GOP during it, as a camera does once)."""
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        duration_s = float(stream.frames / stream.average_rate)
    kept = math.ceil(duration_s * fps - 1e-9)  # frames the cap keeps per play
    settings = SourceSettings(
        str(video),
        is_live=False,
        fps_cap=fps,
        loop=True,
        decoder_threads=decoder_threads(64, 2, True),
        skip_loop_filter=skip_loop_filter,
    )
    buffer = _TimingBuffer(kept * plays)
    source = PyAVSource("cost", settings, buffer, lambda event: None)  # type: ignore[arg-type]
    source._run()  # on this thread: its CPU time is the decoder's
    return (buffer.cpu_s[kept * plays] - buffer.cpu_s[kept]) * 1000 / ((plays - 1) * duration_s)


def model_tensors(directory: Path) -> tuple[str, str]:
    """A SavedModel's serving input and output tensor names."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((directory / "saved_model.pb").read_bytes())
    signature = proto.meta_graphs[0].signature_def["serving_default"]
    return next(iter(signature.inputs.values())).name, next(iter(signature.outputs.values())).name


def inference_cost_ms(
    directory: Path,
    input_name: str,
    output_name: str,
    size: int,
    seconds: float = 6.0,
    frozen: bool = False,
    fused: bool = False,
    lite: bool = False,
) -> float:
    """Core-ms per image of raw `session.run` at batch 8 from two threads (as the daemon runs two
    batches at once), loaded the way streamd loads networks (`frozen`: with the graph frozen, as
    `inference.freeze_graphs` does, `fused` too as `inference.fuse_graphs` does, `lite`: run by
    TensorFlow Lite as `inference.lite_graphs` does); preprocessing not included."""
    from streamd.networks.freezing import FrozenSessionModel, runs_lite
    from streamd.networks.savedmodel import load_network_files

    preprocessing = Preprocessing.model_validate(
        {"inputs": [{"tensor_name": input_name, "image": {"target_size": f"{size}x{size}"}}]}
    )
    model, _ = load_network_files(
        directory, preprocessing, freeze_graph=frozen or lite, fuse_graph=fused, lite_graph=lite
    )
    if frozen and not isinstance(model, FrozenSessionModel):
        raise RuntimeError("the model could not be frozen (see the log)")
    if fused and not (isinstance(model, FrozenSessionModel) and model.fused is not None):
        raise RuntimeError("the model could not be fused (see the log)")
    session: Any = model._frozen if isinstance(model, FrozenSessionModel) else model.session
    if lite:
        if not runs_lite(model):
            raise RuntimeError("the model could not be run by TensorFlow Lite (see the log)")
        session = _OneFetch(model)
    started_cpu, started = time.process_time(), time.monotonic()
    rate = raw_rate(session, input_name, output_name, 8, seconds, callers=2, size=size)
    images = rate * (time.monotonic() - started)
    return (time.process_time() - started_cpu) * 1000 / images


class _OneFetch:
    """`session.run(name, feeds)` on a model's own `run`, which takes a list of fetches."""

    def __init__(self, model: Any) -> None:
        self._model = model

    def run(self, fetch: str, feeds: dict[str, Any]) -> Any:
        return self._model.run([fetch], feeds)[0]
