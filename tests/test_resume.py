"""File streams resume where they stopped: after a graceful restart nothing is replayed, after `kill -9`
at most what came after the last checkpoint, and every record says which run of the stream wrote it."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests

from streamd.app import build_app
from streamd.settings import Settings
from tests.conftest import ON_BOTH_DATABASES, wait_until
from tests.factories.daemon import Daemon, register_colour_chain
from tests.factories.models import ModelFiles
from tests.factories.videos import NAMES, encode_h264
from tests.test_streams import Receiver, create_stream, read_jsonl, setup_chain, wait_state


async def restart_midway(
    aiohttp_client: Any, settings: Settings, model: ModelFiles, processed: int, **fields: Any
) -> list[dict[str, Any]]:
    """A realtime file stream, the app stopped gracefully once `processed` frames are out, a new app on
    the same data: the records once the stream finishes."""
    first = await aiohttp_client(build_app(settings))
    await setup_chain(first, model)
    source = {"uri": "long.mp4", "options": {"realtime": True}}
    stream = await create_stream(first, settings, source=source, **fields)

    async def midway() -> bool:
        status = await (await first.get(f"/v0.7/streams/{stream['id']}")).json()
        return status["frames"]["processed"] >= processed

    await wait_until(midway, 30)
    await first.close()
    second = await aiohttp_client(build_app(settings))
    await wait_state(second, stream["id"], "finished", 30)
    return await read_jsonl(settings.storage.data_dir / "results" / "cam.jsonl")


@ON_BOTH_DATABASES
async def test_a_file_stream_resumes_after_a_graceful_restart_without_replaying(
    aiohttp_client: Any, media_settings: Settings, tf1_model: ModelFiles
) -> None:
    records = await restart_midway(aiohttp_client, media_settings, tf1_model, 15)
    assert [r["frame_index"] for r in records] == list(range(90))  # each frame once, in order
    assert [r["pts_s"] for r in records] == pytest.approx([i / 30 for i in range(90)], abs=1e-6)
    runs = [r["run"] for r in records]
    assert runs == sorted(runs) and set(runs) == {1, 2} and runs.count(1) >= 15
    assert all(r["predictions"][0]["classes"][0]["cat"] == NAMES[r["frame_index"] % 3] for r in records)


@ON_BOTH_DATABASES
async def test_a_resumed_file_stream_keeps_its_fps_grid(
    aiohttp_client: Any, media_settings: Settings, tf1_model: ModelFiles
) -> None:
    records = await restart_midway(aiohttp_client, media_settings, tf1_model, 5, fps=10)
    assert [r["frame_index"] for r in records] == list(range(0, 90, 3))
    assert {r["run"] for r in records} == {1, 2}


def _wait(daemon: Daemon, stream_id: int, done: Any, timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while not done(status := daemon.get(f"/v0.7/streams/{stream_id}")[1]):
        assert time.monotonic() < deadline, daemon.log()[-3000:]
        time.sleep(0.05)
    return status


@pytest.mark.slow
def test_kill_9_replays_only_what_followed_the_last_checkpoint(tmp_path: Path, tf1_model: ModelFiles) -> None:
    encode_h264(tmp_path / "data" / "media" / "clip.mp4", frames=150)
    encode_h264(tmp_path / "data" / "media" / "loop.mp4", frames=60)
    daemon = Daemon(tmp_path / "data").start()
    register_colour_chain(daemon, tf1_model)
    created = {}
    for name, uri, loop in (("clip", "clip.mp4", False), ("loop", "loop.mp4", True)):
        created[name] = requests.post(
            f"{daemon.url}v0.7/streams",
            json={
                "name": name,
                "source": {"uri": uri, "options": {"loop": loop, "realtime": True}},
                "chain": "whole",
                "sinks": [{"type": "jsonl", "path": f"{name}.jsonl"}],
            },
            timeout=30,
        ).json()["id"]
    _wait(daemon, created["clip"], lambda s: s["frames"]["processed"] >= 60)
    daemon.kill()
    daemon.start()
    try:
        _wait(daemon, created["clip"], lambda s: s["state"] == "finished")
        looped = _wait(daemon, created["loop"], lambda s: s["frames"]["processed"] >= 30)
        assert looped["state"] == "running"
    finally:
        assert daemon.stop() == 0

    def records(name: str) -> list[dict[str, Any]]:
        lines = (tmp_path / "data" / "results" / f"{name}.jsonl").read_bytes().splitlines()
        return [json.loads(line) for line in lines]

    clip = records("clip")
    indices = [r["frame_index"] for r in clip]
    assert set(indices) == set(range(150))  # nothing lost
    replayed = [index for index, count in Counter(indices).items() if count > 1]
    # At most one checkpoint interval (1 s = 30 frames) plus the frames in flight (24) come twice, and
    # only as run 2 repeating the end of run 1.
    assert len(replayed) <= 54, replayed
    first_run = [r["frame_index"] for r in clip if r["run"] == 1]
    second_run = [r["frame_index"] for r in clip if r["run"] == 2]
    assert first_run == list(range(len(first_run))) and len(first_run) >= 60
    assert second_run == list(range(second_run[0], 150)) and second_run[0] <= first_run[-1] + 1
    assert [r["pts_s"] for r in clip if r["run"] == 2] == pytest.approx(
        [i / 30 for i in second_run], abs=1e-6
    )

    loop = records("loop")
    first_loop = [r["frame_index"] for r in loop if r["run"] == 1]
    second_loop = [r["frame_index"] for r in loop if r["run"] == 2]
    assert first_loop == list(range(len(first_loop)))
    # The looping stream continues its count (and its clock) instead of starting over at frame 0.
    assert 0 < second_loop[0] <= first_loop[-1] + 1
    assert second_loop == list(range(second_loop[0], second_loop[0] + len(second_loop)))


@ON_BOTH_DATABASES
async def test_what_a_finished_stream_had_spooled_is_delivered_after_a_restart(
    aiohttp_client: Any, aiohttp_server: Any, media_settings: Settings, tf1_model: ModelFiles
) -> None:
    receiver = Receiver()
    receiver.down = True
    url = await receiver.serve(aiohttp_server)
    first = await aiohttp_client(build_app(media_settings))
    await setup_chain(first, tf1_model)
    stream = await create_stream(first, media_settings, sinks=[{"type": "webhook", "url": url}])
    path = f"/v0.7/streams/{stream['id']}"
    await wait_state(first, stream["id"], "finished")

    async def all_spooled() -> bool:
        return (await (await first.get(path)).json())["sinks"][0]["spooled"] == 30

    await wait_until(all_spooled, 30)
    await first.close()  # the file is done; its records wait in the spool for a receiver
    receiver.down = False
    second = await aiohttp_client(build_app(media_settings))

    async def delivered() -> dict[str, Any] | None:
        status = await (await second.get(path)).json()
        return status if len(receiver.records) >= 30 and status["sinks"][0]["delivered"] == 30 else None

    status = await wait_until(delivered, 30)
    assert status["state"] == "finished" and status["frames"]["processed"] == 0  # nothing decoded again
    assert [r["frame_index"] for r in receiver.records] == list(range(30))  # in order, once
    assert {r["run"] for r in receiver.records} == {1}
    if media_settings.database_url is not None:  # cluster mode: the lease goes once all is delivered

        async def released() -> bool:
            cluster = await (await second.get("/v0.7/cluster")).json()
            return all(stream["id"] not in node["streams"] for node in cluster["nodes"])

        await wait_until(released, 10)
