"""Where a frame's latency goes: p50/p95/p99 per stream and per stage, in status and as histograms."""

from __future__ import annotations

from typing import Any

import pytest

from streamd.app import build_app
from streamd.settings import Settings
from tests.conftest import metric_sample
from tests.factories.models import ModelFiles
from tests.test_streams import create_stream, setup_chain, wait_state


async def test_the_stages_of_every_frame_add_up_to_its_latency(
    aiohttp_client: Any, media_settings: Settings, tf1_model: ModelFiles
) -> None:
    client = await aiohttp_client(build_app(media_settings))
    await setup_chain(client, tf1_model)
    stream = await create_stream(client, media_settings)
    status = await wait_state(client, stream["id"], "finished")
    latency = status["latency_s"]
    assert set(latency) == {"p50", "p95", "p99", "stages"}
    assert 0 <= latency["p50"] <= latency["p95"] <= latency["p99"]
    assert set(latency["stages"]) == {"buffer", "chain", "emit_wait"}
    label = str(stream["id"])
    total = await metric_sample(client, "streamd_stream_latency_seconds_sum", stream=label)
    parts = 0.0
    for stage, percentiles in latency["stages"].items():
        assert 0 <= percentiles["p50"] <= percentiles["p95"] <= percentiles["p99"], stage
        count = await metric_sample(client, "streamd_stream_stage_seconds_count", stream=label, stage=stage)
        assert count == 30, stage  # every frame passes every stage once
        parts += await metric_sample(client, "streamd_stream_stage_seconds_sum", stream=label, stage=stage)
    # Taken out of the buffer, through the chain, waiting its turn: nothing else happens to a frame
    # before its record is written (a few microseconds of bookkeeping per frame).
    assert parts == pytest.approx(total, abs=0.01)
