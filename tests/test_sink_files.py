"""A JSONL sink writes only files streamd created: under the result roots, never over a user's file."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from streamd.app import build_app
from streamd.errors import InvalidRequestError
from streamd.settings import Settings
from streamd.sinks.jsonl import JsonlSink
from tests.conftest import make_settings
from tests.factories.models import ModelFiles
from tests.test_streams import setup_chain, wait_state


def record(frame_index: int, pad: str = "") -> bytes:
    return orjson.dumps({"stream_id": 1, "frame_index": frame_index, "pad": pad})


async def test_jsonl_sink_cuts_a_torn_last_line_and_rotates_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    await asyncio.to_thread(path.write_bytes, record(0) + b"\n" + record(1)[:9])
    sink = JsonlSink(path, rotate_bytes=1024, keep_files=3)
    await sink.start()
    for index in range(1, 101):
        sink.emit(record(index, "x" * 40))
    await sink.close()

    def lines() -> list[int]:
        found = []
        for name in ("out.jsonl.3", "out.jsonl.2", "out.jsonl.1", "out.jsonl"):
            if (tmp_path / name).exists():
                found += [
                    orjson.loads(line)["frame_index"] for line in (tmp_path / name).read_bytes().splitlines()
                ]
        return found

    kept = await asyncio.to_thread(lines)
    assert kept == list(range(kept[0], 101))  # whole, in order; older files beyond keep_files are gone
    assert not await asyncio.to_thread((tmp_path / "out.jsonl.4").exists)
    assert sink.stats.delivered == 100 and sink.stats.dropped == {}


async def test_a_torn_first_record_is_cut_and_a_record_longer_than_a_chunk_is_recognised(
    tmp_path: Path,
) -> None:
    torn, long = tmp_path / "torn.jsonl", tmp_path / "long.jsonl"
    await asyncio.to_thread(torn.write_bytes, record(0)[:20])
    await asyncio.to_thread(long.write_bytes, record(0, "y" * 200_000) + b"\n" + b'{"stream_id": 1, "fr')
    for path in (torn, long):
        sink = JsonlSink(path, rotate_bytes=10**9)
        await sink.start()
        sink.emit(record(7))
        await sink.close()
    assert await asyncio.to_thread(torn.read_bytes) == record(7) + b"\n"
    assert await asyncio.to_thread(long.read_bytes) == record(0, "y" * 200_000) + b"\n" + record(7) + b"\n"


@pytest.mark.parametrize(
    "content",
    [
        b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 300,  # a video: no newline in its last 64 KiB
        b"my notes\nsecond line\n",
        b'{"frame_index": 3}\n',  # JSON, but not a streamd record
        b'{"stream_id": 1, "frame_index": 3}\nnot json at all\n',
    ],
)
async def test_a_file_streamd_did_not_write_is_refused_untouched(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "users.jsonl"
    await asyncio.to_thread(path.write_bytes, content)
    sink = JsonlSink(path, rotate_bytes=10**9)
    with pytest.raises(InvalidRequestError, match="is not a streamd results file"):
        await sink.start()
    assert await asyncio.to_thread(path.read_bytes) == content


def sink_body(path: str) -> dict[str, Any]:
    return {
        "name": "cam",
        "source": {"uri": "colours.mp4"},
        "chain": "whole",
        "sinks": [{"type": "jsonl", "path": path}],
    }


async def test_a_jsonl_sink_may_not_write_into_a_media_root_or_over_a_users_file(
    app_client: TestClient, media_settings: Settings, tf1_model: ModelFiles
) -> None:
    await setup_chain(app_client, tf1_model)
    media = media_settings.media_roots[0]
    video = media / "colours.mp4"
    before = await asyncio.to_thread(video.read_bytes)
    results = media_settings.storage.data_dir / "results"
    await asyncio.to_thread(results.mkdir, parents=True, exist_ok=True)
    await asyncio.to_thread((results / "mine.txt").write_bytes, b"a user's notes\n")
    await asyncio.to_thread(os.symlink, video, results / "link.jsonl")

    for path, fragment in [
        (str(video), "media roots are never written to"),
        (str(media / "new.jsonl"), "media roots are never written to"),
        ("link.jsonl", "media roots are never written to"),
        ("mine.txt", "is not a streamd results file"),
    ]:
        response = await app_client.post("/v0.7/streams", json=sink_body(path))
        error = await response.json()
        assert (response.status, error["code"]) == (400, "invalid_sink"), error
        assert fragment in error["error"]
    assert await asyncio.to_thread(video.read_bytes) == before
    assert await asyncio.to_thread((results / "mine.txt").read_bytes) == b"a user's notes\n"
    assert not await asyncio.to_thread((media / "new.jsonl").exists)
    assert (await (await app_client.get("/v0.7/streams")).json())["count"] == 0


@pytest.fixture
def exports_settings(tmp_path: Path, media_settings: Settings) -> Settings:
    return make_settings(
        media_settings.storage.data_dir,
        storage={
            "media_roots": [str(media_settings.media_roots[0])],
            "result_roots": [str(tmp_path / "exports")],
        },
    )


async def test_a_configured_result_root_takes_absolute_paths_and_appends_to_its_own_file(
    aiohttp_client: Any, tmp_path: Path, exports_settings: Settings, tf1_model: ModelFiles
) -> None:
    outside, settings = tmp_path / "exports", exports_settings
    client = await aiohttp_client(build_app(settings))
    await setup_chain(client, tf1_model)
    for _ in range(2):
        response = await client.post("/v0.7/streams", json=sink_body(str(outside / "cam.jsonl")))
        assert response.status == 201, await response.json()
        await wait_state(client, (await response.json())["id"], "finished")
    lines = (await asyncio.to_thread((outside / "cam.jsonl").read_bytes)).splitlines()
    assert [orjson.loads(line)["frame_index"] for line in lines] == list(range(30)) * 2


async def test_a_finished_stream_has_all_its_records_in_the_file(
    app_client: TestClient, media_settings: Settings, tf1_model: ModelFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slow disk (each write takes 50 ms, in the writer's thread) must not let `finished` show before
    the file holds every record: a consumer reads the file when the state says the stream is done."""
    import time

    write = JsonlSink._write

    def slow_write(self: JsonlSink, data: bytes) -> None:
        time.sleep(0.05)
        write(self, data)

    monkeypatch.setattr(JsonlSink, "_write", slow_write)
    await setup_chain(app_client, tf1_model)
    response = await app_client.post("/v0.7/streams", json=sink_body("slow.jsonl"))
    assert response.status == 201
    await wait_state(app_client, (await response.json())["id"], "finished")
    lines = (
        await asyncio.to_thread((media_settings.storage.data_dir / "results" / "slow.jsonl").read_bytes)
    ).splitlines()
    assert [orjson.loads(line)["frame_index"] for line in lines] == list(range(30))


async def test_a_sink_that_cannot_start_fails_the_create_with_a_503_and_leaves_no_stream(
    app_client: TestClient, media_settings: Settings, tf1_model: ModelFiles
) -> None:
    await setup_chain(app_client, tf1_model)
    # Where the first stream's webhook spool goes is taken by a file streamd did not create.
    blocker = media_settings.storage.data_dir / "spool" / "stream-1-sink-0"
    await asyncio.to_thread(blocker.parent.mkdir, parents=True, exist_ok=True)
    await asyncio.to_thread(blocker.write_bytes, b"not a directory")
    body = {
        "name": "cam",
        "source": {"uri": str(media_settings.media_roots[0] / "colours.mp4")},
        "chain": "whole",
        "sinks": [{"type": "webhook", "url": "http://127.0.0.1:9/hook"}],
    }
    response = await app_client.post("/v0.7/streams", json=body)
    answer = await response.json()
    assert response.status == 503, answer
    assert "its spool cannot be opened now" in answer["error"], answer
    assert (await (await app_client.get("/v0.7/streams")).json())["count"] == 0  # nothing half-made
    assert await asyncio.to_thread(blocker.read_bytes) == b"not a directory"  # untouched
