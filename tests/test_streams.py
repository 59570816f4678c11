"""Streams end to end: real H.264 files, the real chain and TF model, JSONL files and HTTP receivers."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from streamd.app import build_app
from streamd.settings import Settings
from tests.conftest import (
    ON_BOTH_DATABASES,
    create_network,
    make_settings,
    network_form,
    preprocessing_for,
    wait_task,
    wait_until,
)
from tests.factories.models import ModelFiles
from tests.factories.videos import COLOUR_SPEC, NAMES, colour_version, encode_h264

pytestmark = ON_BOTH_DATABASES


async def setup_chain(client: TestClient, model: ModelFiles) -> None:
    network = await create_network(
        client, network_form(model, preprocessing=preprocessing_for(model, pixel_scaling=1.0))
    )
    assert (await wait_task(client, network["task_id"]))["status"] == "success"
    spec = await (await client.post("/v0.7/recognition/specs", json=COLOUR_SPEC)).json()
    response = await client.post("/v0.7/recognition/versions", json=colour_version(spec["id"], network["id"]))
    assert response.status == 201
    response = await client.put("/v0.7/chains/whole", json={"calls": [{"service": "colours"}]})
    assert response.status == 201, await response.json()


async def create_stream(client: TestClient, settings: Settings, **fields: Any) -> dict[str, Any]:
    body = {
        "name": "cam",
        "source": {"uri": str(settings.media_roots[0] / "colours.mp4")},
        "chain": "whole",
        "sinks": [{"type": "jsonl", "path": "cam.jsonl"}],
        **fields,
    }
    response = await client.post("/v0.7/streams", json=body)
    created = await response.json()
    assert response.status == 201, created
    return created


async def wait_state(client: TestClient, stream_id: int, state: str, timeout_s: float = 60) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        status = await (await client.get(f"/v0.7/streams/{stream_id}")).json()
        return status if status["state"] == state else None

    return await wait_until(reached, timeout_s)


async def read_jsonl(path: Path) -> list[dict[str, Any]]:
    text = await asyncio.to_thread(path.read_bytes)
    return [orjson.loads(line) for line in text.splitlines()]


async def test_a_file_stream_emits_one_record_per_frame_in_order(
    app_client: TestClient, media_settings: Settings, tf1_model: ModelFiles
) -> None:
    await setup_chain(app_client, tf1_model)
    stream = await create_stream(app_client, media_settings)
    assert stream["state"] in ("starting", "running") and stream["chain"] == "whole"
    status = await wait_state(app_client, stream["id"], "finished")
    assert status["frames"]["decoded"] == status["frames"]["processed"] == 30
    assert status["frames"]["dropped"] == {}
    assert status["sinks"][0]["delivered"] == 30
    records = await read_jsonl(media_settings.storage.data_dir / "results" / "cam.jsonl")
    assert [r["frame_index"] for r in records] == list(range(30))
    assert [r["pts_s"] for r in records] == pytest.approx([i / 30 for i in range(30)], abs=1e-6)
    for index, record in enumerate(records):
        assert (record["stream_id"], record["stream_name"], record["chain"]) == (stream["id"], "cam", "whole")
        assert (record["width"], record["height"]) == (160, 96)
        assert record["latency_s"] >= 0 and record["captured_ts"] > 1.7e9
        [prediction] = record["predictions"]
        assert [c["cat"] for c in prediction["classes"]] == [NAMES[index % 3]]


async def test_fps_cap_picks_frames_by_timestamp(
    app_client: TestClient, media_settings: Settings, tf1_model: ModelFiles
) -> None:
    await setup_chain(app_client, tf1_model)
    stream = await create_stream(app_client, media_settings, fps=5)
    status = await wait_state(app_client, stream["id"], "finished")
    records = await read_jsonl(media_settings.storage.data_dir / "results" / "cam.jsonl")
    assert [r["frame_index"] for r in records] == [0, 6, 12, 18, 24]
    assert [r["pts_s"] for r in records] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8], abs=1e-6)
    assert status["frames"]["dropped"] == {"fps_cap": 25}
    assert (status["frames"]["decoded"], status["frames"]["processed"]) == (30, 5)


@pytest.mark.parametrize(
    ("fields", "status", "fragment"),
    [
        ({"source": {"uri": "/nowhere/cam.mp4"}}, 400, "is outside the media roots"),
        ({"source": {"uri": "missing.mp4"}}, 400, "does not exist"),
        ({"source": {"uri": "notes.txt"}}, 400, "is not a readable video"),
        ({"source": {"uri": "still.png"}}, 400, "is a still image (png_pipe), not a video"),
        ({"chain": "nope"}, 400, "chain 'nope' does not exist"),
        ({"sinks": [{"type": "jsonl", "path": "../../etc/x.jsonl"}]}, 400, "must be relative"),
        ({"sinks": [{"type": "webhook", "url": "ftp://x"}]}, 400, "sinks"),
        ({"fps": 0}, 400, "fps"),
    ],
)
async def test_bad_streams_get_a_clear_400(
    app_client: TestClient,
    media_settings: Settings,
    tf1_model: ModelFiles,
    fields: dict[str, Any],
    status: int,
    fragment: str,
) -> None:
    await setup_chain(app_client, tf1_model)
    body = {
        "name": "cam",
        "source": {"uri": "colours.mp4"},
        "chain": "whole",
        "sinks": [{"type": "jsonl", "path": "cam.jsonl"}],
        **fields,
    }
    response = await app_client.post("/v0.7/streams", json=body)
    error = await response.json()
    assert response.status == status, error
    assert fragment in error["error"]
    assert (await (await app_client.get("/v0.7/streams")).json())["count"] == 0


async def test_pause_resume_delete_and_chain_in_use(
    app_client: TestClient, media_settings: Settings, tf1_model: ModelFiles
) -> None:
    await setup_chain(app_client, tf1_model)
    stream = await create_stream(
        app_client, media_settings, source={"uri": "long.mp4", "options": {"loop": True, "realtime": True}}
    )
    sid = stream["id"]
    await wait_state(app_client, sid, "running")
    paused = await (await app_client.post(f"/v0.7/streams/{sid}/pause")).json()
    assert paused["state"] == "paused"
    response = await app_client.post(f"/v0.7/streams/{sid}/pause")
    body = await response.json()
    assert response.status == 409 and "while it is paused" in body["error"]
    resumed = await (await app_client.post(f"/v0.7/streams/{sid}/resume")).json()
    assert resumed["state"] == "running"
    response = await app_client.delete("/v0.7/chains/whole")
    assert response.status == 409 and (await response.json())["code"] == "chain_in_use"
    assert (await app_client.delete(f"/v0.7/streams/{sid}")).status == 204
    assert (await app_client.get(f"/v0.7/streams/{sid}")).status == 404
    assert (await app_client.delete("/v0.7/chains/whole")).status == 204


async def test_quick_pauses_and_resumes_are_never_undone_by_a_lease_round(
    app_client: TestClient, media_settings: Settings, tf1_model: ModelFiles
) -> None:
    # Cluster mode: each change notifies, so a lease round runs while the next call is on its way; a
    # round that read the row before a change must not apply what it read over it.
    await setup_chain(app_client, tf1_model)
    stream = await create_stream(
        app_client, media_settings, source={"uri": "long.mp4", "options": {"loop": True, "realtime": True}}
    )
    sid = stream["id"]
    await wait_state(app_client, sid, "running")
    seen = []
    for _ in range(15):
        for verb in ("pause", "resume"):
            response = await app_client.post(f"/v0.7/streams/{sid}/{verb}")
            seen.append((verb, response.status, (await response.json()).get("state")))
            await asyncio.sleep(0.02)
    assert seen == [
        (verb, 200, state) for _ in range(15) for verb, state in (("pause", "paused"), ("resume", "running"))
    ]
    await asyncio.sleep(0.5)  # a round or more later
    assert (await (await app_client.get(f"/v0.7/streams/{sid}")).json())["state"] == "running"


class Receiver:
    """A real HTTP receiver on 127.0.0.1 that records bodies and fails on demand."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.fail_next = 0
        self.down = False

    async def handle(self, request: web.Request) -> web.Response:
        if self.down:
            return web.Response(status=503)
        if self.fail_next > 0:
            self.fail_next -= 1
            return web.Response(status=500)
        body = orjson.loads(await request.read())
        self.records.extend(body if isinstance(body, list) else [body])
        return web.Response(status=204)

    async def serve(self, aiohttp_server: Any, path: str = "/hook") -> str:
        """Listen on 127.0.0.1 (a free port) and return the URL that reaches `handle`."""
        app = web.Application()
        app.router.add_post(path, self.handle)
        server = await aiohttp_server(app)
        return str(server.make_url(path))


async def test_webhook_retries_spools_and_delivers_in_order(
    app_client: TestClient, aiohttp_server: Any, media_settings: Settings, tf1_model: ModelFiles
) -> None:
    receiver = Receiver()
    receiver.down = True
    url = await receiver.serve(aiohttp_server)
    await setup_chain(app_client, tf1_model)
    stream = await create_stream(
        app_client,
        media_settings,
        sinks=[
            {
                "type": "webhook",
                "url": url,
                "max_retries": 1,
                "batch_size": 4,
                "headers": {"Authorization": "Bearer secret"},
            }
        ],
    )
    status = await wait_state(app_client, stream["id"], "finished")
    assert status["sinks_config"][0]["headers"] == {"Authorization": "***"}

    async def spooled() -> int:
        current = await (await app_client.get(f"/v0.7/streams/{stream['id']}")).json()
        return current["sinks"][0]["spooled"]

    assert await wait_until(spooled, 30)
    failing = (await (await app_client.get(f"/v0.7/streams/{stream['id']}")).json())["sinks"][0]
    assert (failing["last_error"], failing["error_active"]) == (
        f"HTTP 503 from {url}",
        True,
    )
    assert failing["last_error_at"].endswith("Z")
    receiver.down = False
    receiver.fail_next = 2

    async def delivered() -> bool:
        return len(receiver.records) == 30

    await wait_until(delivered, 60)
    assert [r["frame_index"] for r in receiver.records] == list(range(30))
    current = await (await app_client.get(f"/v0.7/streams/{stream['id']}")).json()
    sink = current["sinks"][0]
    assert sink["delivered"] == 30 and sink["dropped"] == {} and sink["retried"] >= 3
    # Healed: the error is kept for the record, dated, and no longer current.
    assert (sink["last_error"], sink["error_active"]) == (f"HTTP 500 from {url}", False)
    assert sink["last_error_at"] >= failing["last_error_at"]


async def test_running_streams_resume_after_a_restart(
    aiohttp_client: Any, media_settings: Settings, tf1_model: ModelFiles
) -> None:
    first = await aiohttp_client(build_app(media_settings))
    await setup_chain(first, tf1_model)
    looping = await create_stream(
        first, media_settings, source={"uri": "long.mp4", "options": {"loop": True}}
    )
    paused = await create_stream(
        first, media_settings, name="door", source={"uri": "long.mp4", "options": {"loop": True}}
    )
    await wait_state(first, looping["id"], "running")
    assert (await first.post(f"/v0.7/streams/{paused['id']}/pause")).status == 200
    await first.close()

    second = await aiohttp_client(build_app(media_settings))
    listed = await (await second.get("/v0.7/streams")).json()
    assert [(s["id"], s["name"]) for s in listed["results"]] == [
        (looping["id"], "cam"),
        (paused["id"], "door"),
    ]
    await wait_state(second, looping["id"], "running")
    assert (await (await second.get(f"/v0.7/streams/{paused['id']}")).json())["state"] == "paused"

    async def processing() -> bool:
        status = await (await second.get(f"/v0.7/streams/{looping['id']}")).json()
        return status["frames"]["processed"] > 10

    await wait_until(processing, 60)


async def test_a_truncated_video_is_refused_at_creation(
    app_client: TestClient, media_settings: Settings, tf1_model: ModelFiles
) -> None:
    await setup_chain(app_client, tf1_model)
    media = media_settings.media_roots[0]
    data = await asyncio.to_thread((media / "colours.mp4").read_bytes)
    await asyncio.to_thread((media / "cut.mp4").write_bytes, data[: len(data) // 2])
    response = await app_client.post(
        "/v0.7/streams",
        json={
            "name": "cut",
            "source": {"uri": "cut.mp4"},
            "chain": "whole",
            "sinks": [{"type": "jsonl", "path": "c.jsonl"}],
        },
    )
    body = await response.json()
    assert response.status == 400 and "is not a readable video" in body["error"]


async def test_a_hanging_webhook_slows_neither_its_stream_nor_others(
    app_client: TestClient, aiohttp_server: Any, media_settings: Settings, tf1_model: ModelFiles
) -> None:
    release = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hang)
    server = await aiohttp_server(app)
    await setup_chain(app_client, tf1_model)
    hooked = await create_stream(
        app_client,
        media_settings,
        name="hooked",
        sinks=[{"type": "webhook", "url": str(server.make_url("/hook")), "timeout_s": 0.5, "max_retries": 0}],
    )
    plain = await create_stream(
        app_client, media_settings, name="plain", sinks=[{"type": "jsonl", "path": "plain.jsonl"}]
    )
    for stream in (plain, hooked):
        status = await wait_state(app_client, stream["id"], "finished", 30)
        assert status["frames"]["processed"] == 30
    release.set()
    hooked_status = await (await app_client.get(f"/v0.7/streams/{hooked['id']}")).json()
    assert hooked_status["sinks"][0]["emitted"] == 30
    assert hooked_status["sinks"][0]["dropped"] == {}


def bounded_in_flight(tmp_path: Path, database_url: str | None, frames_in_flight: int) -> Settings:
    """The 30-frame colours video, few frames of a stream in flight, and a batcher that would wait
    50 ms for more items: batch sizes then show which frames were in the chain together."""
    media = tmp_path / "media"
    encode_h264(media / "colours.mp4", frames=30, fps=30)
    return make_settings(
        tmp_path / "data",
        storage={"media_roots": [str(media)], "database_url": database_url},
        streams={"frames_in_flight": frames_in_flight, "buffer_frames": 8},
        inference={"max_wait_s": 0.05},
    )


@pytest.fixture
def shared_settings(tmp_path: Path, database_url: str | None) -> Settings:
    return bounded_in_flight(tmp_path, database_url, 2)


async def test_frames_of_several_streams_meet_in_one_batch(
    aiohttp_client: Any, shared_settings: Settings, tf1_model: ModelFiles
) -> None:
    from streamd.api.context import SERVICES

    client = await aiohttp_client(build_app(shared_settings))
    await setup_chain(client, tf1_model)
    streams = [await create_stream(client, shared_settings, name=f"cam{i}") for i in range(3)]
    for stream in streams:
        await wait_state(client, stream["id"], "finished", 60)
    [loaded] = client.app[SERVICES].runtime.loaded.values()
    # Each stream has at most 2 frames in the chain at once: any batch above 2 mixes streams.
    assert loaded.batcher.stats.items == 90
    assert max(loaded.batcher.stats.batch_sizes) > 2


@pytest.fixture
def three_in_flight(tmp_path: Path, database_url: str | None) -> Settings:
    return bounded_in_flight(tmp_path, database_url, 3)  # the buffer holds more than may be in flight


async def test_frames_in_flight_bounds_the_frames_of_a_stream_in_the_chain(
    aiohttp_client: Any, three_in_flight: Settings, tf1_model: ModelFiles
) -> None:
    from streamd.api.context import SERVICES

    settings = three_in_flight
    client = await aiohttp_client(build_app(settings))
    await setup_chain(client, tf1_model)
    stream = await create_stream(client, settings)
    await wait_state(client, stream["id"], "finished", 60)
    [loaded] = client.app[SERVICES].runtime.loaded.values()
    assert loaded.batcher.stats.items == 30
    assert max(loaded.batcher.stats.batch_sizes) == 3
    records = await read_jsonl(settings.storage.data_dir / "results" / "cam.jsonl")
    assert [r["frame_index"] for r in records] == list(range(30))


async def test_ended_and_broken_streams_are_listed_after_a_restart(
    aiohttp_client: Any, media_settings: Settings, tf1_model: ModelFiles
) -> None:
    first = await aiohttp_client(build_app(media_settings))
    await setup_chain(first, tf1_model)
    finished = await create_stream(first, media_settings, name="done")
    await wait_state(first, finished["id"], "finished")
    doomed = await create_stream(
        first, media_settings, name="doomed", source={"uri": "long.mp4", "options": {"loop": True}}
    )
    await first.close()
    await asyncio.to_thread((media_settings.media_roots[0] / "long.mp4").unlink)

    second = await aiohttp_client(build_app(media_settings))
    done = await (await second.get(f"/v0.7/streams/{finished['id']}")).json()
    assert (done["state"], done["name"]) == ("finished", "done")
    broken = await (await second.get(f"/v0.7/streams/{doomed['id']}")).json()
    assert broken["state"] == "error" and "cannot resume" in broken["last_error"]
    assert "does not exist" in broken["last_error"]
    response = await second.post(f"/v0.7/streams/{finished['id']}/resume")
    assert response.status == 409
    assert (await second.delete(f"/v0.7/streams/{doomed['id']}")).status == 204
    assert (await (await second.get("/v0.7/streams")).json())["count"] == 1


@pytest.fixture
def video_bytes(media_settings: Settings) -> bytes:
    return (media_settings.media_roots[0] / "colours.mp4").read_bytes()


async def test_http_sources_are_live_and_reconnect_when_they_end(
    app_client: TestClient,
    aiohttp_server: Any,
    media_settings: Settings,
    tf1_model: ModelFiles,
    video_bytes: bytes,
) -> None:
    async def video(request: web.Request) -> web.Response:
        return web.Response(body=video_bytes, content_type="video/mp4")

    app = web.Application()
    app.router.add_get("/videos/colours.mp4", video)
    server = await aiohttp_server(app)
    await setup_chain(app_client, tf1_model)
    url = str(server.make_url("/videos/colours.mp4"))
    stream = await create_stream(app_client, media_settings, source={"uri": url})
    assert stream["drop_policy"] is None  # live default: drop_oldest

    async def replayed() -> dict[str, Any] | None:
        status = await (await app_client.get(f"/v0.7/streams/{stream['id']}")).json()
        healed = status["state"] == "running" and not status["error_active"]
        return status if status["reconnects"] >= 1 and status["frames"]["processed"] > 30 and healed else None

    status = await wait_until(replayed, 60)
    assert status["last_error"].startswith("the source ended; reconnecting in")
    assert (await app_client.delete(f"/v0.7/streams/{stream['id']}")).status == 204
    records = await read_jsonl(media_settings.storage.data_dir / "results" / "cam.jsonl")
    indices = [r["frame_index"] for r in records]
    assert indices == sorted(set(indices))  # in order; a live source may drop the oldest frames
    # frame_index keeps counting across the replay (30 frames a play, a multiple of 3 colours).
    assert all(r["predictions"][0]["classes"][0]["cat"] == NAMES[r["frame_index"] % 3] for r in records)


async def test_deleting_a_stream_removes_its_webhook_spool(
    app_client: TestClient, aiohttp_server: Any, media_settings: Settings, tf1_model: ModelFiles
) -> None:
    receiver = Receiver()
    receiver.down = True
    url = await receiver.serve(aiohttp_server)
    await setup_chain(app_client, tf1_model)
    stream = await create_stream(
        app_client, media_settings, sinks=[{"type": "webhook", "url": url, "max_retries": 0}]
    )
    await wait_state(app_client, stream["id"], "finished")
    spool = media_settings.storage.data_dir / "spool" / f"stream-{stream['id']}-sink-0"

    async def spooled() -> bool:
        current = await (await app_client.get(f"/v0.7/streams/{stream['id']}")).json()
        return current["sinks"][0]["spooled"] == 30

    await wait_until(spooled, 30)
    if media_settings.database_url is None:
        assert await asyncio.to_thread((spool / "spool.jsonl").is_file)
    else:  # cluster mode: the spool is rows in PostgreSQL, which go with the stream's row
        assert await spool_rows(app_client, stream["id"]) == 30
    assert (await app_client.delete(f"/v0.7/streams/{stream['id']}")).status == 204
    assert not await asyncio.to_thread(spool.exists)
    if media_settings.database_url is not None:
        assert await spool_rows(app_client, stream["id"]) == 0
    assert receiver.records == []


async def spool_rows(client: TestClient, stream_id: int) -> int:
    """Records in a stream's PostgreSQL spool (cluster mode), all its sinks together."""
    import sqlalchemy as sa

    from streamd.api.context import SERVICES
    from streamd.store.schema import sink_spool

    count = sa.select(sa.func.count()).select_from(sink_spool).where(sink_spool.c.stream_id == stream_id)
    return int(await client.app[SERVICES].db.run(lambda conn: conn.execute(count).scalar_one()))


async def test_a_fast_start_file_cut_short_ends_its_stream_in_error(
    app_client: TestClient, media_settings: Settings, tf1_model: ModelFiles
) -> None:
    await setup_chain(app_client, tf1_model)
    media = media_settings.media_roots[0]
    whole = await asyncio.to_thread(encode_h264, media / "whole.mp4", 90, 30, 320, 192, faststart=True)
    data = await asyncio.to_thread(whole.read_bytes)
    await asyncio.to_thread((media / "cut.mp4").write_bytes, data[: len(data) // 2])
    stream = await create_stream(app_client, media_settings, source={"uri": "cut.mp4"})
    status = await wait_state(app_client, stream["id"], "error")
    assert 0 < status["frames"]["processed"] < 90
    assert "but its container declares 3.000 s: it is truncated or damaged" in status["last_error"]
    assert status["error_active"] is True
