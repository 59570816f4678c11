"""Network files in PostgreSQL (cluster mode) against a real server: stored content-addressed with the row,
fetched and verified by a node without them, refused when a chunk is corrupt, shared between networks
with an identical file, removed with their last network, and never written on SQLite."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from streamd.errors import CorruptDataError, NotFoundError
from streamd.inference.deployment import local_files
from streamd.networks.spec import NetworkSpec
from streamd.store.blobs import CHUNK_BYTES, BlobsGoneError, BlobStore, link_files
from streamd.store.db import Database
from streamd.store.networks import NetworkRecord, NetworkRepository
from streamd.store.schema import blob_chunks, blobs, network_files, nodes, tasks
from tests.factories.postgres import PostgresServer

# A SavedModel's shape, with made-up bytes: the store never looks inside. The variables shard spans
# three chunks, the last one partial.
WEIGHTS = os.urandom(2 * CHUNK_BYTES + 12345)
FILES = {
    "saved_model.pb": b"graph" * 100,
    "variables/variables.index": b"index" * 10,
    "variables/variables.data-00000-of-00001": WEIGHTS,
}
SPEC = NetworkSpec.model_validate(
    {
        "name": "n",
        "framework": "tensorflow-1.x",
        "preprocessing": {"inputs": [{"tensor_name": "input:0", "image": {"target_size": "8x8"}}]},
    }
)


@dataclass
class Node:
    """One daemon's view: its own data_dir and blob connection, the shared registry."""

    networks: NetworkRepository
    blobs: BlobStore
    data_dir: Path


@pytest.fixture
async def cluster(postgres: PostgresServer, tmp_path: Path) -> AsyncIterator[tuple[Database, Node, Node]]:
    with postgres.database() as url:
        db = Database(tmp_path / "unused", url)
        await db.open()
        made = []
        for name in ("a", "b"):
            store = BlobStore(url)
            await store.open()
            data_dir = tmp_path / name
            made.append(Node(NetworkRepository(db, data_dir, blobs=store, node_id=name), store, data_dir))
        try:
            yield db, made[0], made[1]
        finally:
            for node in made:
                await node.blobs.close()
            await db.close()


def write_files(directory: Path, files: dict[str, bytes]) -> list[str]:
    for path, content in files.items():
        (directory / path).parent.mkdir(parents=True, exist_ok=True)
        (directory / path).write_bytes(content)
    return [path.rsplit("/", 1)[-1] for path in files]


def read_files(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in directory.rglob("*") if p.is_file()}


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []


async def register(node: Node, files: dict[str, bytes] = FILES) -> NetworkRecord:
    staged = await asyncio.to_thread(node.networks.new_staging_dir)
    names = await asyncio.to_thread(write_files, staged, files)
    return await node.networks.create(SPEC, names, staged)


async def counts(db: Database) -> tuple[int, int, int]:
    def count(conn: sa.Connection) -> tuple[int, int, int]:
        return tuple(  # type: ignore[return-value]
            conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
            for table in (blobs, blob_chunks, network_files)
        )

    return await db.run(count)


async def test_a_node_without_the_files_fetches_them_verified_and_once(
    cluster: tuple[Database, Node, Node], caplog: pytest.LogCaptureFixture
) -> None:
    db, a, b = cluster
    record = await register(a)
    assert await counts(db) == (3, 1 + 1 + 3, 3)
    # The uploading node keeps its copy: nothing to fetch there.
    assert await a.networks.local_dir(record.network_id) == a.networks.network_dir(record.network_id)

    caplog.set_level(logging.INFO, logger="streamd.store.blobs")
    first, second = await asyncio.gather(
        b.networks.local_dir(record.network_id), b.networks.local_dir(record.network_id)
    )
    assert first == second == b.networks.network_dir(record.network_id)
    assert await asyncio.to_thread(read_files, first) == FILES
    [fetched] = [r.getMessage() for r in caplog.records if "fetched" in r.getMessage()]  # one fetch
    assert f"network {record.network_id}: fetched {sum(map(len, FILES.values()))} bytes" in fetched
    assert await asyncio.to_thread(listing, b.networks.staging_root) == []

    # An incomplete copy (a file gone, another cut short) is fetched again; a complete one is not.
    weights = first / "variables/variables.data-00000-of-00001"
    await asyncio.to_thread((first / "saved_model.pb").unlink)
    await asyncio.to_thread(weights.write_bytes, WEIGHTS[:100])
    await b.networks.local_dir(record.network_id)
    assert await asyncio.to_thread(read_files, first) == FILES
    caplog.clear()
    await b.networks.local_dir(record.network_id)
    assert not [r for r in caplog.records if "fetched" in r.getMessage()]
    assert await asyncio.to_thread(listing, b.networks.staging_root) == []


async def test_a_corrupt_chunk_is_refused_and_nothing_is_left_in_place(
    cluster: tuple[Database, Node, Node],
) -> None:
    db, a, b = cluster
    record = await register(a)
    digest = await db.run(
        lambda conn: conn.execute(
            sa.select(network_files.c.sha256).where(network_files.c.path.like("%data-00000%"))
        ).scalar_one()
    )
    flipped = bytes(byte ^ 0xFF for byte in WEIGHTS[CHUNK_BYTES : CHUNK_BYTES + 16])
    await db.run(
        lambda conn: conn.execute(
            blob_chunks.update()
            .where(blob_chunks.c.sha256 == digest, blob_chunks.c.chunk_index == 1)
            .values(data=flipped + WEIGHTS[CHUNK_BYTES + 16 : 2 * CHUNK_BYTES])
        )
    )
    with pytest.raises(CorruptDataError) as raised:
        await b.networks.local_dir(record.network_id)
    message = raised.value.message
    assert message.startswith(
        f"network {record.network_id}: file variables/variables.data-00000-of-00001 read from the "
        f"database is corrupt ({len(WEIGHTS)} bytes with sha256 "
    )
    assert f"expected {len(WEIGHTS)} bytes with sha256 {digest}); it was not used" in message
    assert not await asyncio.to_thread(b.networks.network_dir(record.network_id).exists)
    assert await asyncio.to_thread(listing, b.networks.staging_root) == []
    # A chunk missing altogether is caught by the size.
    await db.run(lambda conn: conn.execute(blob_chunks.delete().where(blob_chunks.c.chunk_index == 2)))
    with pytest.raises(CorruptDataError, match=f"corrupt \\({2 * CHUNK_BYTES} bytes with sha256"):
        await b.networks.local_dir(record.network_id)
    assert not await asyncio.to_thread(b.networks.network_dir(record.network_id).exists)


async def test_identical_files_share_a_blob_that_goes_with_its_last_network(
    cluster: tuple[Database, Node, Node],
) -> None:
    db, a, b = cluster
    first = await register(a)
    second = await register(b, {**FILES, "variables/variables.index": b"other index"})
    assert await counts(db) == (4, 5 + 1, 6)  # one blob more: the second index
    await a.networks.delete(first.network_id)
    assert await counts(db) == (3, 5, 3)  # the first index went; the shared blobs stay
    with pytest.raises(NotFoundError):
        await b.networks.local_dir(first.network_id)
    await b.networks.delete(second.network_id)
    assert await counts(db) == (0, 0, 0)


async def test_an_upload_reusing_blobs_a_delete_removed_stores_them_again(
    cluster: tuple[Database, Node, Node],
) -> None:
    db, a, b = cluster
    first = await register(a)
    staged = await asyncio.to_thread(b.networks.new_staging_dir)
    await asyncio.to_thread(write_files, staged, FILES)
    found = await b.blobs.store_tree(staged)  # all three exist: nothing sent
    await a.networks.delete(first.network_id)  # ...and now they are gone
    with pytest.raises(BlobsGoneError):
        await db.run(lambda conn: link_files(conn, 999, found))
    second = await register(b)  # create() stores them again and links them
    assert await counts(db) == (3, 5, 3)
    assert await asyncio.to_thread(read_files, await a.networks.local_dir(second.network_id)) == FILES


async def test_blobs_of_an_upload_that_never_became_a_network_are_swept_after_an_hour(
    cluster: tuple[Database, Node, Node],
) -> None:
    db, a, _b = cluster
    staged = await asyncio.to_thread(a.networks.new_staging_dir)
    await asyncio.to_thread(write_files, staged, FILES)
    await a.blobs.store_tree(staged)
    await a.networks.sweep()
    assert await counts(db) == (3, 5, 0)  # may still be linked by the upload that stored them
    two_hours_ago = sa.func.now() - sa.literal(timedelta(hours=2), sa.Interval)
    await db.run(lambda conn: conn.execute(blobs.update().values(created_at=two_hours_ago)))
    await a.networks.sweep()
    assert await counts(db) == (0, 0, 0)


async def test_a_deployment_is_taken_over_only_from_a_node_that_is_not_alive(
    cluster: tuple[Database, Node, Node],
) -> None:
    db, a, b = cluster
    record = await register(a)

    async def heartbeat(node: str, age_s: float) -> None:
        def upsert(conn: sa.Connection) -> None:
            conn.execute(nodes.delete().where(nodes.c.id == node))
            at = sa.func.now() - sa.literal(timedelta(seconds=age_s), sa.Interval)
            conn.execute(
                nodes.insert().values(id=node, address="", started_at=at, heartbeat_at=at, max_streams=1)
            )

        await db.run(upsert)

    async def task_node() -> str | None:
        return await db.run(
            lambda conn: conn.execute(sa.select(tasks.c.node).where(tasks.c.id == record.task_id)).scalar()
        )

    assert await task_node() == "a"
    await heartbeat("a", 1.0)
    await heartbeat("b", 0.0)
    assert await b.networks.claim_undeployed(6.0) == []  # a is alive: its deployment is its own
    assert [r.network_id for r in await a.networks.claim_undeployed(6.0)] == [record.network_id]
    await heartbeat("a", 10.0)  # a died
    assert [r.network_id for r in await b.networks.claim_undeployed(6.0)] == [record.network_id]
    assert await task_node() == "b"
    assert await a.networks.claim_undeployed(6.0) == []  # b is alive now
    await a.networks.mark_deployed(record.network_id)
    assert await b.networks.claim_undeployed(6.0) == []


async def test_sqlite_keeps_network_files_on_disk_only(tmp_path: Path) -> None:
    db = Database(tmp_path / "streamd.sqlite3")
    await db.open()
    try:
        node = NetworkRepository(db, tmp_path)
        staged = await asyncio.to_thread(node.new_staging_dir)
        names = await asyncio.to_thread(write_files, staged, FILES)
        record = await node.create(SPEC, names, staged)
        assert await node.local_dir(record.network_id) == tmp_path / "networks" / str(record.network_id)
        assert await asyncio.to_thread(read_files, tmp_path / "networks" / str(record.network_id)) == FILES
        assert await counts(db) == (0, 0, 0)
        await node.delete(record.network_id)
    finally:
        await db.close()


async def test_a_fetch_the_database_interrupts_is_retried_and_the_network_kept(
    own_postgres: tuple[PostgresServer, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server, url = own_postgres
    db = Database(tmp_path / "unused", url)
    await db.open()
    a_blobs, b_blobs = BlobStore(url), BlobStore(url)
    await a_blobs.open()
    await b_blobs.open()
    try:
        a = NetworkRepository(db, tmp_path / "a", blobs=a_blobs, node_id="a")
        b = NetworkRepository(db, tmp_path / "b", blobs=b_blobs, node_id="b")
        staged = await asyncio.to_thread(a.new_staging_dir)
        record = await a.create(SPEC, await asyncio.to_thread(write_files, staged, FILES), staged)
        await asyncio.to_thread(server.halt)
        with caplog.at_level(logging.WARNING, logger="streamd.inference.deployment"):
            fetch = asyncio.create_task(local_files(b, record))
            for _ in range(200):
                if "could not be fetched" in caplog.text:
                    break
                await asyncio.sleep(0.05)
            assert "could not be fetched" in caplog.text and "retrying in 1 s" in caplog.text
            assert not fetch.done()  # not a failed deployment: the network's files are not at fault
            await asyncio.to_thread(server.launch)
            directory = await asyncio.wait_for(fetch, 30)
        assert directory == b.network_dir(record.network_id)
        assert await asyncio.to_thread(read_files, directory) == FILES
        assert (await b.get(record.network_id)).network_id == record.network_id
    finally:
        await a_blobs.close()
        await b_blobs.close()
        await db.close()
