"""Keyframe-only decoding: a stream capped at a rate its keyframes already meet decodes keyframes only,
with exactly the records full decoding gives, and returns to full decoding when the GOP grows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from streamd.app import build_app
from streamd.settings import Settings
from streamd.video.keyframes import KeyframeGate
from tests.conftest import make_settings
from tests.factories.models import ModelFiles
from tests.factories.videos import NAMES, encode_h264
from tests.test_streams import create_stream, read_jsonl, setup_chain, wait_state


def test_the_gate_skips_only_once_two_measured_intervals_fit_the_period() -> None:
    gate = KeyframeGate(0.5)  # a frame every 2 s
    decisions = []
    for index in range(8 * 30):  # 1 s GOPs at 30 fps
        decisions.append(gate.decode(index % 30 == 0, index / 30))
    # Full decoding until the third keyframe (two 1 s intervals measured), then keyframes only.
    assert all(decisions[:61]) and [i for i, d in enumerate(decisions) if d][61:] == [90, 120, 150, 180, 210]
    assert KeyframeGate(None).decode(False, 1.0) is True
    fast = KeyframeGate(2.0)  # a frame every 0.5 s: 1 s GOPs are too sparse to skip anything
    assert all(fast.decode(index % 30 == 0, index / 30) for index in range(300))


@pytest.fixture
def gop_settings(tmp_path: Path) -> Settings:
    media = tmp_path / "media"
    encode_h264(media / "gop30.mp4", frames=300, gop=30)
    encode_h264(media / "growing.mp4", frames=330, keyframes=frozenset({0, 30, 60, 90, 240}))
    return make_settings(tmp_path / "data", storage={"media_roots": [str(media)]})


async def run_file(
    client: Any, settings: Settings, uri: str, fps: float
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    stream = await create_stream(client, settings, source={"uri": uri}, fps=fps)
    status = await wait_state(client, stream["id"], "finished")
    return await read_jsonl(settings.storage.data_dir / "results" / "cam.jsonl"), status


async def test_a_capped_stream_decodes_keyframes_only_with_the_records_of_full_decoding(
    aiohttp_client: Any, gop_settings: Settings, tf1_model: ModelFiles
) -> None:
    client = await aiohttp_client(build_app(gop_settings))
    await setup_chain(client, tf1_model)
    records, status = await run_file(client, gop_settings, "gop30.mp4", 0.5)
    assert [r["frame_index"] for r in records] == [0, 60, 120, 180, 240]
    assert [r["pts_s"] for r in records] == pytest.approx([0.0, 2.0, 4.0, 6.0, 8.0], abs=1e-6)
    assert all(r["predictions"][0]["classes"][0]["cat"] == NAMES[r["frame_index"] % 3] for r in records)
    # Frames 0-60 decoded while the GOP was measured, then the keyframes 90, 120, ..., 270.
    assert status["frames"]["decoded"] == 68
    assert status["frames"]["dropped"] == {"not_decoded": 232, "fps_cap": 63}


async def test_a_stream_whose_gop_grows_returns_to_full_decoding(
    aiohttp_client: Any, gop_settings: Settings, tf1_model: ModelFiles
) -> None:
    client = await aiohttp_client(build_app(gop_settings))
    await setup_chain(client, tf1_model)
    records, status = await run_file(client, gop_settings, "growing.mp4", 0.5)
    # Keyframes 0, 30, 60 measured two 1 s intervals: frames 61-89 and, after keyframe 90, 91-239 were
    # skipped. The frames the cap wanted at 120 and 180 were never decoded (the pitfall the docs name);
    # keyframe 240 came 5 s after 90, so from it on every frame is decoded again.
    assert [r["frame_index"] for r in records] == [0, 60, 240, 300]
    assert status["frames"]["dropped"]["not_decoded"] == 29 + 149
    assert status["frames"]["decoded"] == 330 - 178


def test_what_the_gate_measured_holds_when_the_source_is_reopened() -> None:
    gate = KeyframeGate(0.5)
    for index in range(90):
        gate.decode(index % 30 == 0, index / 30)
    gate.new_play()  # a looping file starts over, a camera reconnects: timestamps restart
    decoded = [index for index in range(90) if gate.decode(index % 30 == 0, index / 30)]
    assert decoded == [0, 30, 60]
