"""Timestamps that go backwards (MPEG-TS segments joined, a camera resync, a 33-bit wrap) are folded into
a monotonic `pts_s`; the fps cap keeps its grid across the jump, and each jump is counted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from streamd.app import build_app
from streamd.settings import Settings
from tests.conftest import make_settings, metric_sample
from tests.factories.models import ModelFiles
from tests.factories.videos import NAMES, encode_joined_ts
from tests.test_streams import create_stream, read_jsonl, setup_chain, wait_state


@pytest.fixture
def joined_settings(tmp_path: Path) -> Settings:
    encode_joined_ts(tmp_path / "media" / "joined.ts", (30, 45))
    return make_settings(tmp_path / "data", storage={"media_roots": [str(tmp_path / "media")]})


@pytest.mark.parametrize(
    ("fps", "kept"),
    [(None, list(range(75))), (5, list(range(0, 75, 6)))],
)
async def test_a_backwards_jump_is_folded_into_a_monotonic_clock(
    aiohttp_client: Any, joined_settings: Settings, tf1_model: ModelFiles, fps: float | None, kept: list[int]
) -> None:
    client = await aiohttp_client(build_app(joined_settings))
    await setup_chain(client, tf1_model)
    stream = await create_stream(client, joined_settings, source={"uri": "joined.ts"}, fps=fps)
    status = await wait_state(client, stream["id"], "finished")
    records = await read_jsonl(joined_settings.storage.data_dir / "results" / "cam.jsonl")
    assert [r["frame_index"] for r in records] == kept
    assert [r["pts_s"] for r in records] == pytest.approx([i / 30 for i in kept], abs=1e-6)
    assert all(r["predictions"][0]["classes"][0]["cat"] == NAMES[r["frame_index"] % 3] for r in records)
    assert status["discontinuities"] == 1
    assert await metric_sample(client, "streamd_stream_discontinuities_total", stream=str(stream["id"])) == 1
    assert status["state"] == "finished" and status["last_error"] is None
