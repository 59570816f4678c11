"""What a stream may hold: frames by its fps, decoder threads by the number of streams (streams/budget.py),
with real PyAV decoders and a real stream through TF."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import av
import pytest

from streamd.app import build_app
from streamd.settings import Settings
from streamd.streams.budget import decoder_threads, held_frames
from streamd.video.source import PyAVSource, SourceSettings
from tests.conftest import make_settings
from tests.factories.models import ModelFiles
from tests.factories.videos import encode_h264
from tests.test_streams import create_stream, read_jsonl, setup_chain, wait_state


@pytest.mark.parametrize(
    ("configured", "fps_cap", "held"),
    [
        (24, None, 24),  # uncapped: a file at full speed needs the configured bound to fill batches
        (24, 30.0, 24),
        (24, 12.0, 12),
        (24, 5.0, 5),
        (8, 5.0, 5),
        (8, 2.5, 3),  # rounded up: 2.5 frames a second still needs a third slot
        (24, 1.0, 2),  # never fewer than 2: one in the chain while the next waits
        (24, 0.5, 2),
        (1, 0.5, 1),  # never more than configured
    ],
)
def test_a_stream_holds_one_second_of_its_capped_frames(
    configured: int, fps_cap: float | None, held: int
) -> None:
    assert held_frames(configured, fps_cap) == held


@pytest.mark.parametrize(
    ("streams", "cores", "may_skip", "threads"),
    [
        (1, 2, False, 2),  # one stream decoding every frame: frame and slice threads on both cores
        (1, 8, False, 8),
        (3, 8, False, 2),
        (2, 2, False, 1),  # as many streams as cores: the streams are the parallelism
        (64, 2, False, 1),
        (1, 2, True, 1),  # may decode keyframes only: a frame thread would hold each one back a GOP
    ],
)
def test_decoder_threads_follow_streams_and_cores(
    streams: int, cores: int, may_skip: bool, threads: int
) -> None:
    assert decoder_threads(streams, cores, may_skip) == threads


def keyframes_fed_before_first_frame(container: Any) -> int:
    stream = container.streams.video[0]
    for fed, packet in enumerate((p for p in container.demux(stream) if p.size and p.is_keyframe), 1):
        if packet.decode():
            return fed
    raise AssertionError("no frame came out")


@pytest.mark.parametrize(("threads", "thread_type", "fed"), [(1, "SLICE", 1), (3, "AUTO", 3)])
def test_frame_threads_hold_keyframes_back_by_whole_gops(
    tmp_path: Path, threads: int, thread_type: str, fed: int
) -> None:
    """Why a stream that may decode keyframes only gets one thread: with 3 frame threads the first
    keyframe comes out after the third (two GOPs late); with the source's 1 thread, at once."""
    video = encode_h264(tmp_path / "gop.mp4", frames=60, fps=30, gop=10)
    source = PyAVSource("t", SourceSettings(str(video), is_live=False, decoder_threads=threads), None, print)  # type: ignore[arg-type]
    container = source._open()
    try:
        codec = container.streams.video[0].codec_context
        assert (codec.thread_count, codec.thread_type.name) == (threads, thread_type)
        assert keyframes_fed_before_first_frame(container) == fed
    finally:
        container.close()


def test_without_a_thread_choice_ffmpeg_keeps_its_own(tmp_path: Path) -> None:
    video = encode_h264(tmp_path / "plain.mp4", frames=3)
    with av.open(str(video)) as plain:
        default = plain.streams.video[0].codec_context.thread_count
    container = PyAVSource("t", SourceSettings(str(video), is_live=False), None, print)._open()  # type: ignore[arg-type]
    with container:
        assert container.streams.video[0].codec_context.thread_count == default


@pytest.fixture
def capped_settings(tmp_path: Path) -> Settings:
    """A 4 s file at 30 fps, the default bounds (24 in flight, 8 buffered), and a batcher that waits
    50 ms for more items: the largest batch shows how many frames of the stream were in the chain."""
    media = tmp_path / "media"
    encode_h264(media / "colours.mp4", frames=120, fps=30)
    return make_settings(
        tmp_path / "data", storage={"media_roots": [str(media)]}, inference={"max_wait_s": 0.05}
    )


async def test_a_stream_capped_at_3_fps_has_at_most_3_frames_in_the_chain(
    aiohttp_client: Any, capped_settings: Settings, tf1_model: ModelFiles
) -> None:
    from streamd.api.context import SERVICES

    settings = capped_settings
    client = await aiohttp_client(build_app(settings))
    await setup_chain(client, tf1_model)
    stream = await create_stream(client, settings, fps=3)
    status = await wait_state(client, stream["id"], "finished", 60)
    [loaded] = client.app[SERVICES].runtime.loaded.values()
    assert loaded.batcher.stats.items == 12
    assert max(loaded.batcher.stats.batch_sizes) == 3  # held_frames(24, 3.0), not 24 (nor 8 buffered)
    assert status["frames"]["dropped"] == {"fps_cap": 108}  # counted in bulk, the total exact
    records = await read_jsonl(settings.storage.data_dir / "results" / "cam.jsonl")
    assert [r["frame_index"] for r in records] == list(range(0, 120, 10))
