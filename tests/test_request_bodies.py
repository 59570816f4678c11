"""Request bodies that never arrive: a stalled upload gets 408 and leaves no staging directory, a JSON
route refuses a huge Content-Length before reading, and a client that leaves mid-upload is one INFO line."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from streamd.app import build_app
from streamd.settings import Settings
from tests.conftest import make_settings, network_form, preprocessing_for, wait_until
from tests.factories.daemon import Daemon
from tests.factories.models import ModelFiles
from tests.factories.rawhttp import raw_request
from tests.test_networks_api import staged_entries


@pytest.fixture
def quick_settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data", server={"read_timeout_s": 1.0})


async def form_bytes(model: ModelFiles) -> tuple[bytes, str]:
    writer = network_form(model)()
    data = bytearray()

    class Sink:
        async def write(self, chunk: bytes) -> None:
            data.extend(chunk)

    await writer.write(Sink())
    return bytes(data), writer.content_type


def upload_head(content_type: str, length: int) -> bytes:
    return (
        f"POST /v0.7/networks HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nContent-Length: {length}"
    ).encode()


async def test_stalled_upload_gets_408_and_its_staging_dir_is_removed(
    aiohttp_client: Any, quick_settings: Settings, tf1_model: ModelFiles
) -> None:
    client = await aiohttp_client(build_app(quick_settings))
    body, content_type = await form_bytes(tf1_model)
    head = upload_head(content_type, len(body))
    answer = asyncio.create_task(raw_request(client.server.port, head, body[: len(body) // 2]))
    await wait_until(lambda: staged_entries(quick_settings), timeout_s=5)  # the stall holds a staging dir
    response = await answer
    assert response.status == 408, response.body
    assert response.json() == {
        "error": "the client sent nothing for 1.0 s (server.read_timeout_s) before the request body was "
        "complete; send the whole body without pausing",
        "code": "request_timeout",
    }
    assert await staged_entries(quick_settings) == []
    page = await (await client.get("/v0.7/networks")).json()
    assert page["count"] == 0


async def test_stalled_json_body_gets_408(aiohttp_client: Any, quick_settings: Settings) -> None:
    client = await aiohttp_client(build_app(quick_settings))
    head = (
        b"PATCH /v0.7/networks/1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100"
    )
    response = await raw_request(client.server.port, head, b'{"name": ')
    assert response.status == 408, response.body
    assert response.json()["code"] == "request_timeout"


@pytest.mark.parametrize(
    ("method", "path"), [("PATCH", "/v0.7/networks/1"), ("POST", "/chain/x"), ("PUT", "/v0.7/chains/x")]
)
async def test_json_route_refuses_a_huge_content_length_before_reading(
    client: TestClient, method: str, path: str
) -> None:
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {10**12}"
    )
    response = await raw_request(client.server.port, head.encode(), b"{", timeout_s=5)
    assert response.status == 413, response.body
    body = response.json()
    assert body["code"] == "payload_too_large"
    assert body["error"].startswith(
        f"the request body ({10**12} bytes) is larger than server.json_max_bytes={64 * 1024**2}"
    )


@pytest.mark.slow
async def test_client_that_leaves_mid_upload_is_one_info_line(tmp_path: Path, tf1_model: ModelFiles) -> None:
    # A real daemon: aiohttp's TestServer cancels handlers on disconnect, `streamd serve` does not.
    daemon = Daemon(tmp_path / "data")
    await asyncio.to_thread(daemon.start)
    settings = await asyncio.to_thread(make_settings, daemon.data_dir)
    body, content_type = await form_bytes(tf1_model)
    boundary = content_type.partition("boundary=")[2].strip('"').encode()
    second_part = body.index(b"--" + boundary, 10)  # cut between two parts, as well as inside a file
    try:
        for count, cut in enumerate((len(body) // 2, second_part), start=1):
            _reader, writer = await asyncio.open_connection("127.0.0.1", daemon.port)
            writer.write(upload_head(content_type, len(body)) + b"\r\n\r\n" + body[:cut])
            await writer.drain()
            await wait_until(lambda: staged_entries(settings), timeout_s=5)
            writer.close()
            await writer.wait_closed()

            async def logged(count: int = count) -> list[str] | None:
                log = await asyncio.to_thread(daemon.log)
                lines = [line for line in log.splitlines() if "/v0.7/networks" in line]
                return lines if len(lines) >= count else None

            lines = await wait_until(logged, timeout_s=10)
            assert await wait_until(lambda: _empty(settings), timeout_s=5)
    finally:
        await asyncio.to_thread(daemon.stop)
    assert len(lines) == 2, lines
    for line in lines:
        assert " INFO streamd.access: POST /v0.7/networks 499 " in line
    log = await asyncio.to_thread(daemon.log)
    assert "Traceback" not in log
    assert " ERROR " not in log


async def _empty(settings: Settings) -> bool:
    return await staged_entries(settings) == []


async def test_slow_but_steady_field_is_not_timed_out(
    aiohttp_client: Any, tmp_path: Path, tf1_model: ModelFiles
) -> None:
    """The timeout is per read: a field arriving in pieces, each within it, may take longer in total."""
    settings = await asyncio.to_thread(make_settings, tmp_path / "data", server={"read_timeout_s": 0.5})
    client = await aiohttp_client(build_app(settings))
    writer = network_form(None, fields={"description": "x" * 9_000}, files=dict(tf1_model.contents))
    writer.add_field("preprocessing", orjson.dumps(preprocessing_for(tf1_model)).decode())
    payload = writer()
    data = bytearray()

    class Sink:
        async def write(self, chunk: bytes) -> None:
            data.extend(chunk)

    await payload.write(Sink())
    start = bytes(data).index(b"x" * 100)
    reader, stream = await asyncio.open_connection("127.0.0.1", client.server.port)
    stream.write(upload_head(payload.content_type, len(data)) + b"\r\n\r\n" + bytes(data[:start]))
    for offset in range(start, start + 9_000, 1_500):  # 6 pieces, 0.2 s apart: 1.2 s in all
        await asyncio.sleep(0.2)
        stream.write(bytes(data[offset : offset + 1_500]))
        await stream.drain()
    stream.write(bytes(data[start + 9_000 :]))
    await stream.drain()
    status_line = await asyncio.wait_for(reader.readline(), 10)
    stream.close()
    assert status_line.startswith(b"HTTP/1.1 201 "), status_line
