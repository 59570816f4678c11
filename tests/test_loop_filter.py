"""`streams.skip_loop_filter`: the decoder skips H.264's deblocking on every frame but keyframes (FFmpeg's
skip_loop_filter=nokey). Same frames, same timestamps; keyframes identical; the other frames a little
different (blockier), never far off."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from streamd.entities import Frame
from streamd.video.frames import I420Frame
from streamd.video.source import PyAVSource, SourceSettings

GOP = 15


def textured_clip(path: Path, frames: int = 2 * GOP) -> Path:
    """A noisy texture panning under a low bitrate: blocks the deblocking filter has work on."""
    rng = np.random.default_rng(0)
    scene = rng.integers(0, 255, (96, 480, 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("h264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
        stream.bit_rate = 100_000
        stream.options = {"preset": "veryfast", "x264-params": f"keyint={GOP}:min-keyint={GOP}:bframes=0"}
        for index in range(frames):
            image = np.ascontiguousarray(scene[:, index * 3 : index * 3 + 160])
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


class Collect:
    def __init__(self) -> None:
        self.frames: list[Frame] = []

    def put(self, frame: Frame) -> bool:
        self.frames.append(frame)
        return True


def decode(video: Path, skip_loop_filter: bool) -> list[Frame]:
    settings = SourceSettings(str(video), is_live=False, decoder_threads=1, skip_loop_filter=skip_loop_filter)
    buffer = Collect()
    PyAVSource("t", settings, buffer, lambda event: None)._run()  # type: ignore[arg-type]
    return buffer.frames


def luma(frame: Frame) -> np.ndarray:
    assert isinstance(frame.pixels, I420Frame)
    return frame.pixels.planes[: frame.pixels.height].astype(np.int16)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return textured_clip(tmp_path_factory.mktemp("loop-filter") / "texture.mp4")


def test_without_the_loop_filter_keyframes_are_the_same_and_other_frames_close(clip: Path) -> None:
    filtered, unfiltered = decode(clip, False), decode(clip, True)
    assert [f.frame_index for f in unfiltered] == [f.frame_index for f in filtered] == list(range(2 * GOP))
    assert [f.pts_s for f in unfiltered] == [f.pts_s for f in filtered]
    differences = [float(np.abs(luma(a) - luma(b)).mean()) for a, b in zip(filtered, unfiltered, strict=True)]
    assert differences[0] == differences[GOP] == 0.0  # keyframes keep their deblocking
    others = [d for index, d in enumerate(differences) if index % GOP]
    # The filter ran on them before and no longer does; what differs builds up over each GOP (the
    # frames refer to unfiltered frames), to a few grey levels on average at most.
    assert differences[GOP - 1] > differences[1] and differences[2 * GOP - 1] > differences[GOP + 1]
    assert sum(d > 0 for d in others) >= len(others) - 4
    assert float(np.mean(others)) > 0.05 and max(others) < 4.0


def test_the_option_reaches_the_codec_only_when_asked(clip: Path) -> None:
    for skip in (False, True):
        settings = SourceSettings(str(clip), is_live=False, skip_loop_filter=skip)
        container = PyAVSource("t", settings, None, print)._open()  # type: ignore[arg-type]
        with container:
            options = container.streams.video[0].codec_context.options
            assert options.get("skip_loop_filter") == ("nokey" if skip else None)
