"""Live streams against a real RTSP server (GStreamer's, from Debian) that the tests start, kill and
freeze: reconnection, stall timeout, refused connections, credential redaction."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from streamd.app import build_app
from streamd.settings import Settings
from tests.conftest import make_settings, wait_until
from tests.factories.daemon import free_port
from tests.factories.models import ModelFiles
from tests.factories.rtsp import RtspServer
from tests.test_streams import read_jsonl, setup_chain, wait_state

pytestmark = pytest.mark.slow


@pytest.fixture
def rtsp() -> Iterator[RtspServer]:
    server = RtspServer(free_port())
    yield server
    server.close()


@pytest.fixture
def live_settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data", streams={"reconnect_max_s": 1.0})


async def live_stream(client: TestClient, url: str, **options: Any) -> dict[str, Any]:
    response = await client.post(
        "/v0.7/streams",
        json={
            "name": "gate",
            "source": {"uri": url, "options": {"timeout_s": 2.0, **options}},
            "chain": "whole",
            "sinks": [{"type": "jsonl", "path": "gate.jsonl"}],
        },
    )
    body = await response.json()
    assert response.status == 201, body
    return body


async def processed_beyond(client: TestClient, stream_id: int, count: int) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        status = await (await client.get(f"/v0.7/streams/{stream_id}")).json()
        return status if status["frames"]["processed"] > count else None

    return await wait_until(check, 60)


async def test_a_camera_that_dies_and_comes_back_is_reconnected(
    aiohttp_client: Any, live_settings: Settings, tf1_model: ModelFiles, rtsp: RtspServer
) -> None:
    await asyncio.to_thread(rtsp.start)
    client = await aiohttp_client(build_app(live_settings))
    await setup_chain(client, tf1_model)
    stream = await live_stream(client, f"rtsp://admin:secret@127.0.0.1:{rtsp.port}/cam")
    assert stream["source"]["uri"] == f"rtsp://***@127.0.0.1:{rtsp.port}/cam"
    before = await processed_beyond(client, stream["id"], 10)
    assert before["state"] == "running" and before["fps_in"] > 0

    await asyncio.to_thread(rtsp.signal, signal.SIGKILL)
    down = await wait_state(client, stream["id"], "reconnecting", 30)
    assert down["reconnects"] >= 1 and down["last_error"]
    assert "secret" not in str(down)

    await asyncio.to_thread(rtsp.start)
    back = await wait_state(client, stream["id"], "running", 60)
    after = await processed_beyond(client, stream["id"], back["frames"]["processed"] + 10)
    records = await read_jsonl(live_settings.storage.data_dir / "results" / "gate.jsonl")
    indices = [r["frame_index"] for r in records]
    assert indices == sorted(indices) and len(set(indices)) == len(indices)
    assert {c["cat"] for r in records for c in r["predictions"][0]["classes"]} == {"red"}
    assert after["reconnects"] >= 1


async def test_a_frozen_camera_hits_the_stall_timeout(
    aiohttp_client: Any, live_settings: Settings, tf1_model: ModelFiles, rtsp: RtspServer
) -> None:
    await asyncio.to_thread(rtsp.start)
    client = await aiohttp_client(build_app(live_settings))
    await setup_chain(client, tf1_model)
    stream = await live_stream(client, f"rtsp://127.0.0.1:{rtsp.port}/cam")
    await processed_beyond(client, stream["id"], 5)
    rtsp.signal(signal.SIGSTOP)
    try:
        frozen = await wait_state(client, stream["id"], "reconnecting", 30)
        assert frozen["last_error"]
    finally:
        rtsp.signal(signal.SIGCONT)
    back = await wait_state(client, stream["id"], "running", 60)
    await processed_beyond(client, stream["id"], back["frames"]["processed"] + 5)


async def test_a_refusing_camera_reconnects_then_gives_up_within_its_budget(
    aiohttp_client: Any, live_settings: Settings, tf1_model: ModelFiles, caplog: pytest.LogCaptureFixture
) -> None:
    client = await aiohttp_client(build_app(live_settings))
    await setup_chain(client, tf1_model)
    stream = await live_stream(client, f"rtsp://127.0.0.1:{free_port()}/cam", max_reconnects=2)
    failed = await wait_state(client, stream["id"], "error", 60)
    assert failed["reconnects"] == 2
    # The API says no more than "connection failed" (refused and filtered ports read alike); the
    # operator's log has FFmpeg's reason.
    assert failed["last_error"] == "connection failed (the daemon log has the details)"
    assert "Connection refused" in caplog.text
    assert failed["frames"]["decoded"] == 0
