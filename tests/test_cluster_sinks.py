"""Sinks in cluster mode, on a real PostgreSQL. Webhook spools as rows: records kept in order, counted in
bytes, bounded, deleted once delivered; fenced by the stream's epoch, so a node that lost the stream can
neither add nor delete a record, and the node that took it over delivers the rest before its own (also
with two daemons and a kill -9). JSONL sinks only under a shared results root."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient

from streamd.app import build_app
from streamd.cluster.leases import NodeInfo, Round, tick
from streamd.settings import Settings
from streamd.sinks.db_spool import DatabaseSpool
from streamd.sinks.spool import SpoolWriteError
from streamd.sinks.webhook import WebhookSink
from streamd.store import spools
from streamd.store.db import Database
from streamd.store.schema import sink_spool
from streamd.store.spools import SpoolFencedError, SpoolKey
from streamd.store.streams import StreamRepository
from tests.conftest import make_settings, wait_until
from tests.factories.daemon import Daemon
from tests.factories.models import ModelFiles
from tests.factories.postgres import PostgresServer
from tests.factories.videos import encode_h264
from tests.test_streams import Receiver, read_jsonl, setup_chain, wait_state


@pytest.fixture
async def db(postgres: PostgresServer, tmp_path: Path) -> AsyncIterator[Database]:
    with postgres.database() as url:
        database = Database(tmp_path / "unused", url)
        await database.open()
        yield database
        await database.close()


async def _leased_stream(db: Database, ttl_s: float = 60.0) -> int:
    """A stream held by node "a" at epoch 1, as a POST to node a creates it."""
    return await StreamRepository(db).create("s", {"name": "s"}, lease=("a", ttl_s))


async def _claim_by_b(db: Database, ttl_s: float) -> Round:
    """Node b's rounds until it has claimed the stream (once a's lease expired, by the database's clock)."""
    node = NodeInfo("b", "http://b/", 10, ttl_s)

    async def claimed() -> Round | None:
        result = await db.run(functools.partial(tick, node=node, held={}, statuses={}))
        return result if result.claimed else None

    result: Round = await wait_until(claimed, 10)
    return result


async def _rows(db: Database, stream_id: int) -> list[tuple[int, int, int, bytes]]:
    query = (
        sa.select(sink_spool.c.sink_index, sink_spool.c.seq, sink_spool.c.epoch, sink_spool.c.record)
        .where(sink_spool.c.stream_id == stream_id)
        .order_by(sink_spool.c.sink_index, sink_spool.c.seq)
    )
    rows = await db.run(lambda conn: conn.execute(query).all())
    return [(index, seq, epoch, bytes(record)) for index, seq, epoch, record in rows]


def _record(n: int) -> bytes:
    return orjson.dumps({"stream_id": 1, "frame_index": n, "pad": "x" * n})


async def test_records_are_read_in_order_counted_in_bytes_and_deleted_once_consumed(db: Database) -> None:
    stream_id = await _leased_stream(db)
    first = DatabaseSpool(db, SpoolKey(stream_id, 0), epoch=1, max_bytes=10_000)
    other_sink = DatabaseSpool(db, SpoolKey(stream_id, 1), epoch=1, max_bytes=10_000)
    await first.open()
    await other_sink.open()
    records = [_record(n) for n in range(5)]
    assert await first.append(records[:3]) == 3
    assert await other_sink.append([b'{"other":1}']) == 1
    assert await first.append(records[3:]) == 2
    assert (first.pending, first.pending_bytes) == (5, sum(map(len, records)))
    assert await first.peek(2) == records[:2]
    await first.consume(2)
    assert (first.pending, first.pending_bytes) == (3, sum(map(len, records[2:])))
    # A node that opens the spool later (a restart, or the stream's next owner) finds the same.
    reopened = DatabaseSpool(db, SpoolKey(stream_id, 0), epoch=1, max_bytes=10_000)
    await reopened.open()
    assert (reopened.pending, reopened.pending_bytes) == (3, sum(map(len, records[2:])))
    assert await reopened.peek(10) == records[2:]
    assert [(index, seq, epoch) for index, seq, epoch, _ in await _rows(db, stream_id)] == [
        (0, 3, 1),
        (0, 4, 1),
        (0, 5, 1),
        (1, 1, 1),
    ]
    await reopened.consume(3)
    assert (reopened.pending, reopened.pending_bytes) == (0, 0)
    assert [row[0] for row in await _rows(db, stream_id)] == [1]  # only the other sink's record is left


async def test_a_full_spool_takes_whole_records_up_to_its_bound(db: Database) -> None:
    stream_id = await _leased_stream(db)
    records = [_record(n) for n in range(4)]
    bound = len(records[0]) + len(records[1]) + len(records[2]) - 1  # the third does not fit
    spool = DatabaseSpool(db, SpoolKey(stream_id, 0), epoch=1, max_bytes=bound)
    await spool.open()
    assert await spool.append(records) == 2
    assert await spool.append(records[2:]) == 0
    assert (spool.pending, spool.pending_bytes) == (2, len(records[0]) + len(records[1]))
    assert [row[3] for row in await _rows(db, stream_id)] == records[:2]


async def test_a_stale_epoch_can_neither_write_nor_read_nor_delete(db: Database) -> None:
    stream_id = await _leased_stream(db, ttl_s=0.5)
    stale = DatabaseSpool(db, SpoolKey(stream_id, 0), epoch=1, max_bytes=10_000)
    await stale.open()
    assert await stale.append([_record(0), _record(1)]) == 2
    assert await stale.peek(1) == [_record(0)]
    claim = await _claim_by_b(db, ttl_s=60)
    assert [(lease.stream_id, lease.epoch) for lease in claim.claimed] == [(stream_id, 2)]
    with pytest.raises(SpoolFencedError, match="no longer held at epoch 1"):
        await stale.append([_record(2)])
    with pytest.raises(SpoolFencedError):
        await stale.consume(1)
    with pytest.raises(SpoolFencedError):
        await stale.peek(1)
    # The new owner finds the old one's records untouched and adds its own after them.
    owner = DatabaseSpool(db, SpoolKey(stream_id, 0), epoch=2, max_bytes=10_000)
    await owner.open()
    assert owner.pending == 2
    assert await owner.append([_record(9)]) == 1
    assert [(seq, epoch, record) for _, seq, epoch, record in await _rows(db, stream_id)] == [
        (1, 1, _record(0)),
        (2, 1, _record(1)),
        (3, 2, _record(9)),
    ]
    # A deleted stream takes its spool with it, and nobody writes to it any more.
    await StreamRepository(db).delete(stream_id)
    assert await _rows(db, stream_id) == []
    with pytest.raises(SpoolFencedError):
        await owner.append([_record(10)])


@pytest.mark.parametrize(("write", "left"), [("append", [0, 1]), ("consume", [])])
async def test_a_claim_waits_for_a_write_in_progress_so_none_lands_after_it(
    db: Database, write: str, left: list[int]
) -> None:
    """The old owner's append or delete holds the stream's row in share mode until it commits: a claim in
    that moment skips the stream (FOR UPDATE SKIP LOCKED), the next round takes it, and finds the write
    done. (A delete takes no foreign-key lock on the row: without the share lock it would commit after
    the claim.)"""
    stream_id = await _leased_stream(db, ttl_s=0.5)
    key = SpoolKey(stream_id, 0)
    await db.run(functools.partial(spools.append, key=key, epoch=1, records=[_record(0)]))
    writer = Database(Path("unused"), db.where, thread_name="old-owner", migrate=False)
    await writer.open()
    written, release = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()

    def slow_write(conn: sa.Connection) -> None:
        if write == "append":
            spools.append(conn, key, 1, [_record(1)])
        else:
            spools.consume(conn, key, 1, through_seq=1)
        loop.call_soon_threadsafe(written.set)
        asyncio.run_coroutine_threadsafe(release.wait(), loop).result(10)  # commit only when told

    node = NodeInfo("b", "http://b/", 10, 60.0)
    try:
        await asyncio.sleep(0.6)  # a's lease expires (database clock), as it does for a node that died
        pending = asyncio.ensure_future(writer.run(slow_write))
        await written.wait()
        during = await db.run(functools.partial(tick, node=node, held={}, statuses={}))
        release.set()
        await pending
    finally:
        release.set()
        await writer.close()
    assert during.claimed == ()
    after = await db.run(functools.partial(tick, node=node, held={}, statuses={}))
    assert [(lease.stream_id, lease.epoch) for lease in after.claimed] == [(stream_id, 2)]
    owner = DatabaseSpool(db, key, epoch=2, max_bytes=10_000)
    await owner.open()
    assert await owner.peek(5) == [_record(n) for n in left]


async def test_a_database_outage_fails_reads_and_deletes_retryably_and_loses_nothing(
    own_postgres: tuple[PostgresServer, str], tmp_path: Path
) -> None:
    server, url = own_postgres
    db = Database(tmp_path / "unused", url)
    await db.open()
    try:
        stream_id = await _leased_stream(db)
        spool = DatabaseSpool(db, SpoolKey(stream_id, 0), epoch=1, max_bytes=10_000)
        await spool.open()
        records = [_record(n) for n in range(5)]
        assert await spool.append(records) == 5
        assert await spool.peek(2) == records[:2]  # "sent"; then the database goes away
        await asyncio.to_thread(server.halt)
        # What the delivery loop retries (SpoolWriteError), not a crash; nothing changed meanwhile.
        with pytest.raises(SpoolWriteError):
            await spool.consume(2)
        with pytest.raises(SpoolWriteError):
            await spool.peek(2)
        with pytest.raises(SpoolWriteError):
            await spool.append([_record(9)])
        assert (spool.pending, spool.pending_bytes) == (5, sum(map(len, records)))
        await asyncio.to_thread(server.launch)
        await spool.consume(2)  # the retry forgets exactly the batch that was sent, once
        assert (spool.pending, spool.pending_bytes) == (3, sum(map(len, records[2:])))
        assert [record for *_, record in await _rows(db, stream_id)] == records[2:]
        assert await spool.peek(5) == records[2:]
    finally:
        await db.close()


def _webhook(url: str, spool: DatabaseSpool) -> WebhookSink:
    return WebhookSink(
        url,
        headers={},
        timeout_s=2.0,
        batch_size=2,
        queue_max=10,
        spool=spool,
        display_url=url,
    )


async def test_the_next_owner_delivers_the_old_owners_spool_first_and_the_old_owner_stops(
    db: Database, aiohttp_server: Any
) -> None:
    receiver = Receiver()
    receiver.down = True
    url = await receiver.serve(aiohttp_server)
    stream_id = await _leased_stream(db, ttl_s=0.5)
    old = _webhook(url, DatabaseSpool(db, SpoolKey(stream_id, 0), epoch=1, max_bytes=1 << 20))
    new = _webhook(url, DatabaseSpool(db, SpoolKey(stream_id, 0), epoch=2, max_bytes=1 << 20))
    await old.start()
    try:
        for n in range(6):
            old.emit(_record(n))

        async def all_spooled() -> bool:
            return old.stats.spooled == 6

        await wait_until(all_spooled, 10)
        assert old.spool_bytes == sum(len(_record(n)) for n in range(6))
        await _claim_by_b(db, ttl_s=60)
        old.emit(_record(6))  # after the claim: refused by the spool, lost to this node, counted

        async def fenced() -> bool:
            return old.stats.dropped.get("lease_lost") == 1

        await wait_until(fenced, 10)
        receiver.down = False
        await new.start()
        assert new.spool_bytes == old.spool_bytes
        for n in range(100, 103):  # its own records, emitted while the old spool is still there
            new.emit(_record(n))

        async def delivered() -> bool:
            return len(receiver.records) >= 9 and new.spool_bytes == 0

        await wait_until(delivered, 20)
    finally:
        await new.close()
        await old.close()
    assert [r["frame_index"] for r in receiver.records] == [0, 1, 2, 3, 4, 5, 100, 101, 102]
    assert old.stats.delivered == 0 and old.stats.dropped == {"lease_lost": 1}
    assert (new.stats.emitted, new.stats.spooled, new.stats.delivered) == (3, 3, 9)
    assert await _rows(db, stream_id) == []


# -- JSONL sinks ----------------------------------------------------------------------------------------


def _cluster_settings(tmp_path: Path, url: str, result_roots: list[Path]) -> Settings:
    media = tmp_path / "media"
    encode_h264(media / "colours.mp4", frames=30, fps=30)
    storage = {"media_roots": [str(media)], "database_url": url, "result_roots": result_roots}
    return make_settings(tmp_path / "data", storage=storage)


@pytest.fixture
def unshared(tmp_path: Path, postgres: PostgresServer) -> Iterator[Settings]:
    """Cluster mode with no result root configured."""
    with postgres.database() as url:
        yield _cluster_settings(tmp_path, url, [])


@pytest.fixture
def shared(tmp_path: Path, postgres: PostgresServer) -> Iterator[Settings]:
    """Cluster mode with one result root, standing for a volume every node mounts."""
    with postgres.database() as url:
        yield _cluster_settings(tmp_path, url, [tmp_path / "shared"])


async def _post_jsonl(client: TestClient, path: str) -> tuple[int, dict[str, Any]]:
    body = {
        "name": "cam",
        "source": {"uri": "colours.mp4"},
        "chain": "whole",
        "sinks": [{"type": "jsonl", "path": path}],
    }
    response = await client.post("/v0.7/streams", json=body)
    return response.status, await response.json()


async def test_cluster_mode_refuses_jsonl_sinks_without_a_shared_results_root(
    unshared: Settings, aiohttp_client: Any, tf1_model: ModelFiles
) -> None:
    client = await aiohttp_client(build_app(unshared))
    await setup_chain(client, tf1_model)
    for path in ("cam.jsonl", str(unshared.storage.data_dir / "results" / "cam.jsonl")):
        status, body = await _post_jsonl(client, path)
        assert (status, body["code"]) == (400, "invalid_sink"), body
        assert body["error"].startswith(
            f"jsonl path {path!r} cannot be written in cluster mode: no shared results root is configured"
        )
        assert "set storage.result_roots" in body["error"]
    assert (await (await client.get("/v0.7/streams")).json())["count"] == 0


async def test_cluster_mode_writes_jsonl_only_under_the_configured_results_root(
    shared: Settings, aiohttp_client: Any, tf1_model: ModelFiles
) -> None:
    client = await aiohttp_client(build_app(shared))
    await setup_chain(client, tf1_model)
    [root] = shared.storage.result_roots
    local = shared.storage.data_dir / "results" / "cam.jsonl"  # the node's own disk: refused
    status, body = await _post_jsonl(client, str(local))
    assert (status, body["code"]) == (400, "invalid_sink"), body
    assert f"must be relative (under {root})" in body["error"]
    assert "not <data_dir>/results (this node's own disk" in body["error"]
    status, created = await _post_jsonl(client, "cam.jsonl")  # relative: under the shared root
    assert status == 201, created
    finished = await wait_state(client, created["id"], "finished")
    records = await read_jsonl(root / "cam.jsonl")
    assert [r["frame_index"] for r in records] == list(range(30))
    assert {(r["epoch"], r["node"]) for r in records} == {(1, finished["node"])}
    assert not await asyncio.to_thread(local.exists)
    # Stored anchored: a node listing its roots in another order still writes this very file.
    assert finished["sinks_config"][0]["path"] == str(root / "cam.jsonl"), finished["sinks_config"]


# -- two daemons ----------------------------------------------------------------------------------------

TTL_S = 3.0  # one stream, no graceful handover to time: a short lease keeps the test short


class _Hook:
    """A receiver on 127.0.0.1 in a thread (the daemons are other processes): 503 while down."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from tests.factories.daemon import free_port

        self.down = True
        self.received: list[dict[str, Any]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = orjson.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if hook.down:
                    self.send_response(503)
                else:
                    hook.received.extend(body if isinstance(body, list) else [body])
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, name="hook", daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _daemon(tmp_path: Path, name: str, url: str) -> Daemon:
    """A node of the two-daemon tests (not started): media under tmp_path/media, the shared results
    root tmp_path/results, a short lease."""
    env = {
        "STREAMD_STORAGE__DATABASE_URL": url,
        "STREAMD_STORAGE__RESULT_ROOTS": str(tmp_path / "results"),
        "STREAMD_STORAGE__MEDIA_ROOTS": str(tmp_path / "media"),
        "STREAMD_CLUSTER__NODE_ID": name,
        "STREAMD_CLUSTER__LEASE_TTL_S": str(TTL_S),
        "STREAMD_CLUSTER__MAX_STREAMS": "4",
    }
    return Daemon(tmp_path / name, env=env)


@contextlib.contextmanager
def _two_nodes(
    tmp_path: Path, postgres: PostgresServer, clip: str
) -> Iterator[tuple[str, Daemon, Daemon, _Hook]]:
    """Nodes a and b (not started) on a database of their own, a 30-frame clip under tmp_path/media, the
    results root, and a receiver that is down; the daemons and the receiver stopped afterwards."""
    (tmp_path / "results").mkdir()
    encode_h264(tmp_path / "media" / clip, frames=30)
    hook = _Hook()
    try:
        with postgres.database() as url:
            a, b = (_daemon(tmp_path, name, url) for name in ("a", "b"))
            try:
                yield url, a, b, hook
            finally:
                for daemon in (a, b):
                    if daemon.process is not None and daemon.process.poll() is None:
                        daemon.stop()
    finally:
        hook.close()


def _spooled_rows(url: str, stream_id: int) -> list[dict[str, Any]]:
    import psycopg

    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT epoch, record FROM sink_spool WHERE stream_id = %s AND sink_index = 0 ORDER BY seq",
            (stream_id,),
        ).fetchall()
    records = [orjson.loads(record) for _, record in rows]
    assert [epoch for epoch, _ in rows] == [record["epoch"] for record in records]
    return records


@pytest.mark.slow
def test_a_webhook_spool_of_a_node_killed_for_good_is_delivered_by_the_next_owner(
    tmp_path: Path, postgres: PostgresServer, tf1_model: ModelFiles
) -> None:
    """Node a spools while the receiver is down and is killed (-9, never to return); node b takes the
    stream over and the receiver gets every record a had spooled, in order, before b's own; records seen
    twice (b replays from a's last checkpoint) differ by their epoch."""
    import shutil
    import time

    import requests

    from tests.factories.daemon import register_colour_chain

    with _two_nodes(tmp_path, postgres, "loop.mp4") as (url, a, b, hook):
        a.start()
        register_colour_chain(a, tf1_model)
        shutil.copytree(a.data_dir / "networks", b.data_dir / "networks")  # as a shared directory would
        b.start()
        response = requests.post(
            f"{a.url}v0.7/streams",
            json={
                "name": "gate",
                "source": {"uri": "loop.mp4", "options": {"loop": True, "realtime": True}},
                "chain": "whole",
                "fps": 5,
                "sinks": [{"type": "webhook", "url": hook.url, "batch_size": 2}],
            },
            timeout=30,
        )
        assert response.status_code == 201, response.text
        stream_id = response.json()["id"]
        deadline = time.monotonic() + 30
        while a.get(f"/v0.7/streams/{stream_id}")[1]["sinks"][0]["spooled"] < 15:
            assert time.monotonic() < deadline, a.log()[-3000:]
            time.sleep(0.05)
        a.kill()
        spooled = _spooled_rows(url, stream_id)  # what a had acknowledged into its spool, for good
        assert len(spooled) >= 15 and {(r["epoch"], r["node"]) for r in spooled} == {(1, "a")}
        indices = [r["frame_index"] for r in spooled]
        assert indices == list(range(indices[0], indices[0] + 6 * len(indices), 6))  # none missing
        hook.down = False

        def caught_up() -> bool:
            return len(hook.received) >= len(spooled) + 10

        deadline = time.monotonic() + TTL_S + TTL_S / 3 + 30
        while not caught_up():
            assert time.monotonic() < deadline, (len(hook.received), b.log()[-3000:])
            time.sleep(0.05)
        while _spooled_rows(url, stream_id):  # deleted as delivered; b's records then skip it
            assert time.monotonic() < deadline, b.log()[-3000:]
            time.sleep(0.1)
    received = hook.received
    # Every record a had spooled, in order, first; then b's own.
    assert received[: len(spooled)] == spooled
    rest = received[len(spooled) :]
    assert {(r["epoch"], r["node"]) for r in rest} == {(2, "b")}
    rest_indices = [r["frame_index"] for r in rest]
    assert rest_indices == list(range(rest_indices[0], rest_indices[0] + 6 * len(rest), 6))
    # b resumed from a's last checkpoint, which never passes a record a had not spooled: no gap, and
    # what b replays is told apart by its epoch only.
    assert rest_indices[0] <= indices[-1] + 6
    assert len({(r["epoch"], r["frame_index"]) for r in received}) == len(received)


@pytest.mark.slow
def test_what_a_finished_stream_spooled_is_delivered_by_another_node_when_its_node_dies(
    tmp_path: Path, postgres: PostgresServer, tf1_model: ModelFiles
) -> None:
    """A file stream finishes on node a while the receiver is down; a is killed (-9) holding the
    stream's lease for its spool; b claims the ended stream only to deliver that spool (nothing decoded
    again), then releases it."""
    import time

    import requests

    from tests.factories.daemon import register_colour_chain

    with _two_nodes(tmp_path, postgres, "clip.mp4") as (url, a, b, hook):
        a.start()
        register_colour_chain(a, tf1_model)
        response = requests.post(
            f"{a.url}v0.7/streams",
            json={
                "name": "clip",
                "source": {"uri": "clip.mp4"},
                "chain": "whole",
                "sinks": [{"type": "webhook", "url": hook.url, "batch_size": 4}],
            },
            timeout=30,
        )
        assert response.status_code == 201, response.text
        stream_id = response.json()["id"]
        deadline = time.monotonic() + 30
        while True:
            status = a.get(f"/v0.7/streams/{stream_id}")[1]
            if status["state"] == "finished" and status["sinks"][0]["spooled"] == 30:
                break
            assert time.monotonic() < deadline, a.log()[-3000:]
            time.sleep(0.05)
        owners = {n["node"]: n["streams"] for n in a.get("/v0.7/cluster")[1]["nodes"]}
        assert owners == {"a": [stream_id]}  # still held, for its spool
        a.kill()
        assert len(_spooled_rows(url, stream_id)) == 30
        hook.down = False
        b.start()  # fetches the network from PostgreSQL, claims the expired lease
        deadline = time.monotonic() + TTL_S + TTL_S / 3 + 30
        while len(hook.received) < 30 or _spooled_rows(url, stream_id):
            assert time.monotonic() < deadline, (len(hook.received), b.log()[-3000:])
            time.sleep(0.05)
        status = b.get(f"/v0.7/streams/{stream_id}")[1]
        assert "to deliver its spool" in b.log()
        while b.get("/v0.7/cluster")[1]["nodes"][-1]["streams"]:  # released once delivered
            assert time.monotonic() < deadline, b.log()[-3000:]
            time.sleep(0.1)
    assert [r["frame_index"] for r in hook.received] == list(range(30))  # a's records, in order, once
    assert {(r["epoch"], r["node"]) for r in hook.received} == {(1, "a")}
    assert status["state"] == "finished" and status["node"] == "b" and status["frames"]["processed"] == 0
    assert status["sinks"][0]["delivered"] == 30
