"""Durability on a real full disk (a tmpfs the tests fill), damaged databases, and supervised tasks."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from streamd.app import build_app
from streamd.errors import DatabaseUnusableError, InsufficientStorageError
from streamd.health import supervise
from streamd.settings import Settings
from streamd.store.db import RESERVE_BYTES, Database
from streamd.store.schema import chains
from streamd.store.streams import StreamRepository
from tests.conftest import make_settings, wait_until
from tests.factories.disk import SmallDisk, small_disk
from tests.factories.models import ModelFiles
from tests.factories.videos import encode_h264
from tests.test_streams import Receiver, create_stream, setup_chain


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[SmallDisk]:
    with small_disk(tmp_path / "disk", 8 * 1024**2) as mounted:
        yield mounted


@pytest.fixture
def disk_settings(tmp_path: Path, disk: SmallDisk) -> Settings:
    media = tmp_path / "media"
    encode_h264(media / "long.mp4", frames=90, fps=30)
    return make_settings(
        disk.path / "data",
        storage={"media_roots": [str(media)]},
        streams={"webhook_queue_records": 10, "checkpoint_interval_s": 0.2},
    )


LOOPING = {"uri": "long.mp4", "options": {"loop": True, "realtime": True}}


async def stream_status(client: TestClient, stream_id: int) -> dict[str, Any]:
    return await (await client.get(f"/v0.7/streams/{stream_id}")).json()


async def until(client: TestClient, stream_id: int, check: Any, timeout_s: float = 30) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        status = await stream_status(client, stream_id)
        return status if check(status) else None

    return await wait_until(reached, timeout_s)


def whole_lines(path: Path) -> list[dict[str, Any]]:
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), "a torn last line"
    return [orjson.loads(line) for line in data.splitlines()]


async def test_a_jsonl_sink_on_a_full_disk_drops_whole_records_counted_once_and_recovers(
    aiohttp_client: Any, disk_settings: Settings, disk: SmallDisk, tf1_model: ModelFiles
) -> None:
    client = await aiohttp_client(build_app(disk_settings))
    await setup_chain(client, tf1_model)
    stream = await create_stream(client, disk_settings, source=LOOPING, fps=10)
    sid = stream["id"]
    await until(client, sid, lambda s: s["sinks"][0]["delivered"] >= 5)
    await asyncio.to_thread(disk.fill)
    failing = await until(client, sid, lambda s: s["sinks"][0]["dropped"].get("write_error", 0) >= 3)
    assert failing["degraded"] is True and failing["sinks"][0]["error_active"] is True
    assert "No space left on device" in failing["sinks"][0]["last_error"]
    assert failing["state"] == "running" and failing["error_active"] is False  # the stream itself is fine
    path = disk_settings.storage.data_dir / "results" / "cam.jsonl"
    await asyncio.to_thread(whole_lines, path)
    await asyncio.to_thread(disk.free)
    healed = await until(client, sid, lambda s: not s["sinks"][0]["error_active"])
    assert healed["degraded"] is False and healed["sinks"][0]["last_error_at"]
    assert (await client.post(f"/v0.7/streams/{sid}/pause")).status == 200
    sink = (
        await until(
            client,
            sid,
            lambda s: (
                s["sinks"][0]["delivered"] + s["sinks"][0]["dropped"]["write_error"]
                == s["sinks"][0]["emitted"]
            ),
        )
    )["sinks"][0]
    records = await asyncio.to_thread(whole_lines, path)
    indices = [record["frame_index"] for record in records]
    assert len(records) == sink["delivered"]  # what was counted as dropped never reached the file
    assert indices == sorted(set(indices))
    assert (indices[-1] - indices[0]) // 3 + 1 == sink["delivered"] + sink["dropped"]["write_error"]


async def test_a_webhook_spool_on_a_full_disk_bounds_memory_counts_drops_and_recovers_in_order(
    aiohttp_client: Any, aiohttp_server: Any, disk_settings: Settings, disk: SmallDisk, tf1_model: ModelFiles
) -> None:
    receiver = Receiver()
    receiver.down = True
    hook = {"type": "webhook", "url": await receiver.serve(aiohttp_server)}
    client = await aiohttp_client(build_app(disk_settings))
    await setup_chain(client, tf1_model)
    stream = await create_stream(client, disk_settings, source=LOOPING, fps=10, sinks=[hook])
    sid = stream["id"]
    await until(client, sid, lambda s: s["sinks"][0]["spooled"] >= 5)
    await asyncio.to_thread(disk.fill)
    full = await until(client, sid, lambda s: s["sinks"][0]["dropped"].get("disk_full", 0) >= 3)
    assert "cannot write the spool" in full["sinks"][0]["last_error"] and full["degraded"] is True
    spool = disk_settings.storage.data_dir / "spool" / f"stream-{sid}-sink-0" / "spool.jsonl"
    await asyncio.to_thread(whole_lines, spool)
    await asyncio.to_thread(disk.free)
    await until(client, sid, lambda s: "cannot write the spool" not in (s["sinks"][0]["last_error"] or ""))
    receiver.down = False
    await until(client, sid, lambda s: not s["degraded"])
    assert (await client.post(f"/v0.7/streams/{sid}/pause")).status == 200

    def settled(status: dict[str, Any]) -> bool:
        sink = status["sinks"][0]
        return sink["delivered"] + sink["dropped"].get("disk_full", 0) == sink["emitted"]

    sink = (await until(client, sid, settled))["sinks"][0]
    indices = [record["frame_index"] for record in receiver.records]
    assert len(indices) == sink["delivered"] and indices == sorted(set(indices))  # in order, no copies
    assert sink["dropped"]["disk_full"] >= 3 and set(sink["dropped"]) == {"disk_full"}


async def test_delete_always_deletes_even_on_a_full_disk(
    aiohttp_client: Any, aiohttp_server: Any, disk_settings: Settings, disk: SmallDisk, tf1_model: ModelFiles
) -> None:
    async def down(request: web.Request) -> web.Response:
        return web.Response(status=503)

    app = web.Application()
    app.router.add_post("/hook", down)
    server = await aiohttp_server(app)
    first = await aiohttp_client(build_app(disk_settings))
    await setup_chain(first, tf1_model)
    hook = {"type": "webhook", "url": str(server.make_url("/hook"))}
    stream = await create_stream(first, disk_settings, source=LOOPING, fps=10, sinks=[hook])
    await until(first, stream["id"], lambda s: s["sinks"][0]["spooled"] >= 5)
    await asyncio.to_thread(disk.fill)
    await until(first, stream["id"], lambda s: s["sinks"][0]["dropped"].get("disk_full", 0) >= 1)
    assert (await first.delete(f"/v0.7/streams/{stream['id']}")).status == 204
    assert not await asyncio.to_thread(
        (disk_settings.storage.data_dir / "spool" / f"stream-{stream['id']}-sink-0").exists
    )
    await first.close()
    await asyncio.to_thread(disk.free)
    second = await aiohttp_client(build_app(disk_settings))
    assert (await (await second.get("/v0.7/streams")).json())["count"] == 0


def _truncate_wal(path: Path) -> None:
    """Empty the write-ahead log (its next write must grow it), from a connection of the test's own."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


async def test_a_delete_on_a_full_disk_is_written_in_the_reserves_room(disk: SmallDisk) -> None:
    path = disk.path / "data" / "streamd.sqlite3"
    db = Database(path)
    await db.open()
    try:
        store = StreamRepository(db)
        first, second = [await store.create(f"s{n}", {"name": f"s{n}"}) for n in range(2)]
        reserve = db.reserve_path
        assert reserve is not None and (await asyncio.to_thread(reserve.stat)).st_size == RESERVE_BYTES
        await asyncio.to_thread(_truncate_wal, path)
        await asyncio.to_thread(disk.fill)
        await store.delete(first)  # refused by the full disk, then written where the reserve was
        assert not await asyncio.to_thread(reserve.exists)
        await asyncio.to_thread(_truncate_wal, path)
        await asyncio.to_thread(disk.fill)  # the reserve's room taken too: nothing left to give
        with pytest.raises(InsufficientStorageError):
            await store.delete(second)
        await asyncio.to_thread(disk.free)
        await store.delete(second)
        assert await store.all() == []
    finally:
        await db.close()
    reopened = Database(path)
    await reopened.open()  # the next start makes the reserve again
    assert (await asyncio.to_thread(reserve.stat)).st_size == RESERVE_BYTES
    await reopened.close()


async def test_readyz_fails_while_the_database_cannot_be_written(
    aiohttp_client: Any, disk_settings: Settings, disk: SmallDisk
) -> None:
    client = await aiohttp_client(build_app(disk_settings))
    assert (await client.get("/readyz")).status == 200
    await asyncio.to_thread(disk.fill)
    response = await client.get("/readyz")
    body = await response.json()
    assert (response.status, body["code"]) == (503, "database_unwritable"), body
    assert "disk is full" in body["error"]
    assert (await client.get("/healthz")).status == 200  # alive, not ready
    await asyncio.to_thread(disk.free)
    assert (await client.get("/readyz")).status == 200


def damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncated":
        data = data[: len(data) // 3]
    elif how == "garbage header":
        data[:100] = b"\x5a" * 100
    else:  # garbage in the middle: a b-tree page of the streams table
        page = 4096
        data[2 * page : 3 * page] = b"\xa5" * page
    path.write_bytes(bytes(data))


async def make_database(path: Path) -> None:
    db = Database(path)
    await db.open()
    for index in range(200):
        await db.run(
            lambda conn, index=index: conn.execute(
                chains.insert().values(
                    name=f"chain-{index}", definition="x" * 200, create_date="", update_date=""
                )
            )
        )
    await db.close()


@pytest.mark.parametrize("how", ["truncated", "garbage header", "garbage in the middle"])
async def test_a_damaged_database_is_refused_at_start_with_one_clear_line(tmp_path: Path, how: str) -> None:
    path = tmp_path / "streamd.sqlite3"
    await make_database(path)
    await asyncio.to_thread(damage, path, how)
    with pytest.raises(DatabaseUnusableError) as raised:
        await Database(path).open()
    message = raised.value.message
    assert message.startswith(f"database {path} cannot be used (")
    assert "Restore it from a backup, or move it aside" in message and "\n" not in message


async def test_a_read_only_database_is_refused_at_start(tmp_path: Path, disk: SmallDisk) -> None:
    path = disk.path / "streamd.sqlite3"
    await make_database(path)
    await asyncio.to_thread(disk.remount, "ro")
    try:
        with pytest.raises(DatabaseUnusableError, match=r"cannot be used .*(readonly|read-only)"):
            await Database(path).open()
    finally:
        await asyncio.to_thread(disk.remount, "rw")


@pytest.mark.slow
def test_the_daemon_exits_3_with_one_line_on_a_damaged_database(tmp_path: Path) -> None:
    data = tmp_path / "data"
    asyncio.run(make_database(data / "streamd.sqlite3"))
    damage(data / "streamd.sqlite3", "garbage header")
    done = subprocess.run(
        [sys.executable, "-m", "streamd", "serve", "--port", "0", "--data-dir", str(data)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 3, done.stderr[-2000:]
    assert "Traceback" not in done.stderr + done.stdout
    [line] = [line for line in done.stderr.splitlines() if line.startswith("streamd: ")]
    assert f"database {data / 'streamd.sqlite3'} cannot be used" in line


async def test_a_supervised_task_that_crashes_is_logged_reported_and_restarted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs, crashes = [], []

    async def flaky() -> None:
        runs.append(1)
        if len(runs) == 1:
            raise ValueError("boom")

    task = supervise(flaky, "test-flaky", crashes.append, restart_s=0.01)
    await asyncio.wait_for(task, 5)
    assert len(runs) == 2 and [str(exc) for exc in crashes] == ["boom"]
    assert "test-flaky crashed; restarting in 0.0 s" in caplog.text and "ValueError: boom" in caplog.text


async def test_an_upload_on_a_full_disk_is_a_507_and_leaves_nothing(
    aiohttp_client: Any, disk_settings: Settings, disk: SmallDisk, tf1_model: ModelFiles
) -> None:
    from tests.conftest import network_form

    client = await aiohttp_client(build_app(disk_settings))
    await asyncio.to_thread(disk.fill)
    response = await client.post("/v0.7/networks", data=network_form(tf1_model))
    body = await response.json()
    assert (response.status, body["code"]) == (507, "insufficient_storage"), body
    assert body["error"].startswith("the disk is full (No space left on device)")
    await asyncio.to_thread(disk.free)
    assert (await (await client.get("/v0.7/networks")).json())["count"] == 0
    staging = disk_settings.storage.data_dir / "tmp"
    assert await asyncio.to_thread(lambda: not staging.exists() or not any(staging.iterdir()))


@pytest.mark.slow
def test_kill_9_loses_no_webhook_record_once_the_receiver_has_failed(
    tmp_path: Path, tf1_model: ModelFiles
) -> None:
    """A live camera (nothing is replayed after a restart), a receiver answering 500, kill -9 a few
    seconds after the failures began: every record the JSONL sink had written well before the kill
    reaches the receiver once the daemon is back."""
    import json
    import time

    import requests

    from tests.factories.daemon import Daemon, free_port, register_colour_chain
    from tests.factories.rtsp import RtspServer

    received: list[dict[str, Any]] = []
    failing = [True]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if failing[0]:
                self.send_response(500)
            else:
                received.extend(body if isinstance(body, list) else [body])
                self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    camera = RtspServer(free_port())
    camera.start()
    daemon = Daemon(tmp_path / "data").start()
    try:
        register_colour_chain(daemon, tf1_model)
        hook = f"http://127.0.0.1:{server.server_address[1]}/hook"
        stream = requests.post(
            f"{daemon.url}v0.7/streams",
            json={
                "name": "gate",
                "source": {"uri": camera.url},
                "chain": "whole",
                "fps": 10,
                "sinks": [{"type": "jsonl", "path": "gate.jsonl"}, {"type": "webhook", "url": hook}],
            },
            timeout=30,
        ).json()
        deadline = time.monotonic() + 60
        while daemon.get(f"/v0.7/streams/{stream['id']}")[1]["sinks"][1]["spooled"] < 30:
            assert time.monotonic() < deadline, daemon.log()[-3000:]
            time.sleep(0.1)
        time.sleep(2.5)  # inside the delivery task's backoff, where records used to wait in memory
        killed_at = time.time()
        daemon.kill()
        failing[0] = False
        lines = (tmp_path / "data" / "results" / "gate.jsonl").read_bytes().splitlines()
        written = [json.loads(line) for line in lines]
        settled = {r["frame_index"] for r in written if r["captured_ts"] < killed_at - 1.0}
        daemon.start()
        deadline = time.monotonic() + 60
        while not settled <= {r["frame_index"] for r in received if r["run"] == 1}:
            assert time.monotonic() < deadline, (
                len(settled - {r["frame_index"] for r in received}),
                daemon.log()[-3000:],
            )
            time.sleep(0.1)
        first_run = [r["frame_index"] for r in received if r["run"] == 1]
        assert first_run == sorted(set(first_run)) and len(settled) >= 40
    finally:
        daemon.stop()
        camera.close()
        server.shutdown()
        server.server_close()
