"""Network files in PostgreSQL (cluster mode), so that a network registered on any node runs on every node.

Content-addressed: a file's content is a blob named by its sha256 (`blobs`), held in 1 MiB chunks
(`blob_chunks`); `network_files` maps each path of a network's directory to its blob, so two networks
with an identical file share one blob. The flow (docs/design.md, Cluster, says why):

- **Store** (`BlobStore.store_tree`, the node that received the upload): each staged file is hashed,
  then stored unless its blob exists, in one transaction per blob, read and sent a chunk at a time.
- **Link** (`link_files`, inside NetworkRepository.create's transaction on the registry connection):
  the network row and its `network_files` rows commit together, after checking under a share lock that
  every blob still exists, so a network row is never visible without its files.
- **Fetch** (`BlobStore.materialize`, any node, when a network's directory is missing or incomplete):
  each file is streamed into a staging directory, its size and sha256 checked, then the directory is
  renamed into place; a mismatch is a CorruptDataError and leaves nothing behind.
- **Remove** (`drop_blobs`, in the network delete's transaction): blobs no other network refers to go
  with their last network; `BlobStore.sweep` removes blobs an interrupted upload stored but never
  linked, once they are an hour old.

Blob transfers run on their own "streamd-blobs" thread and connection, so a large upload or fetch
never queues the registry's statements behind it. The SQL is PostgreSQL's; SQLite mode never comes here.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from streamd.errors import CorruptDataError, NotFoundError, UnavailableError
from streamd.store.db import Database
from streamd.store.schema import blob_chunks, blobs, network_files, networks

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
# Rows a fetch's server-side cursor holds at once: a fetch keeps at most this many chunks in memory.
_FETCH_BATCH_CHUNKS = 4
# An unreferenced blob younger than this may belong to an upload about to link it: the sweep spares it.
ORPHAN_GRACE = timedelta(hours=1)

_UNREFERENCED = ~sa.exists().where(network_files.c.sha256 == blobs.c.sha256)


@dataclass(frozen=True, slots=True)
class StoredFile:
    """One file of a network: its path inside the network directory and the blob that holds it."""

    path: str  # relative, with "/" separators
    sha256: str  # hex
    size_bytes: int


class BlobsGoneError(Exception):
    """Blobs an upload found already stored were removed (their last network deleted) before the new
    network referred to them: store them again and retry."""


def file_digest(path: Path) -> tuple[str, int]:
    """(sha256 hex, size in bytes) of a file, read a chunk at a time. Blocking."""
    hasher, size = hashlib.sha256(), 0
    with path.open("rb") as source:
        while data := source.read(CHUNK_BYTES):
            hasher.update(data)
            size += len(data)
    return hasher.hexdigest(), size


def tree_files(directory: Path) -> list[str]:
    """The files under `directory`, as sorted relative POSIX paths. Blocking."""
    return sorted(path.relative_to(directory).as_posix() for path in directory.rglob("*") if path.is_file())


def store_file(conn: sa.Connection, directory: Path, path: str, stopping: threading.Event) -> StoredFile:
    """Store one file as a blob unless a blob with its content exists (one transaction: the caller's)."""
    source_path = directory / path
    sha256, size = file_digest(source_path)
    stored = StoredFile(path, sha256, size)
    # Two nodes storing the same content at once: the second waits for the first's commit, then finds
    # the row and does nothing (or stores it, should the first roll back).
    inserted = conn.execute(
        pg_insert(blobs)
        .values(sha256=sha256, size_bytes=size)
        .on_conflict_do_nothing()
        .returning(blobs.c.sha256)  # a row back: ours to fill (the driver's rowcount says -1 here)
    ).first()
    if inserted is None:
        return stored
    hasher, index = hashlib.sha256(), 0
    with source_path.open("rb") as source:
        while data := source.read(CHUNK_BYTES):
            if stopping.is_set():
                raise UnavailableError("streamd is stopping; the upload was not stored")
            hasher.update(data)
            conn.execute(blob_chunks.insert().values(sha256=sha256, chunk_index=index, data=data))
            index += 1
    if hasher.hexdigest() != sha256:  # what was sent is what the blob is named after, or nothing
        raise CorruptDataError(f"{path} changed while it was being stored; upload the network again")
    return stored


def link_files(conn: sa.Connection, network_id: int, files: Iterable[StoredFile]) -> None:
    """Record a network's files, inside the transaction that inserts its row (BlobsGoneError if a blob
    went meanwhile). The share lock keeps a concurrent delete from removing the blobs until we commit."""
    files = list(files)
    wanted = sorted({stored.sha256 for stored in files})
    present = set(
        conn.execute(
            sa.select(blobs.c.sha256)
            .where(blobs.c.sha256.in_(wanted))
            .order_by(blobs.c.sha256)
            .with_for_update(read=True, key_share=True)
        ).scalars()
    )
    if present != set(wanted):
        raise BlobsGoneError(f"{len(set(wanted) - present)} blob(s) were removed before use")
    if files:
        conn.execute(
            network_files.insert(),
            [{"network_id": network_id, "path": s.path, "sha256": s.sha256} for s in files],
        )


def network_blobs(conn: sa.Connection, network_id: int) -> list[str]:
    """The blobs a network refers to, to pass to `drop_blobs` once its row is deleted."""
    query = sa.select(network_files.c.sha256).where(network_files.c.network_id == network_id).distinct()
    return list(conn.execute(query).scalars())


def drop_blobs(conn: sa.Connection, candidates: list[str]) -> int:
    """Delete those of `candidates` that no network refers to any more (after the caller deleted its
    network rows, in the same transaction); returns how many went.

    The blobs are locked first (in one order: no deadlock between two deletes), and the references are
    counted by a later statement, which sees what a concurrent create committed while we waited."""
    if not candidates:
        return 0
    locked = list(
        conn.execute(
            sa.select(blobs.c.sha256)
            .where(blobs.c.sha256.in_(sorted(candidates)))
            .order_by(blobs.c.sha256)
            .with_for_update()
        ).scalars()
    )
    if not locked:
        return 0
    return conn.execute(blobs.delete().where(blobs.c.sha256.in_(locked), _UNREFERENCED)).rowcount


def drop_orphans(conn: sa.Connection) -> int:
    """Delete blobs no network refers to that are older than ORPHAN_GRACE (left by an upload that failed
    or crashed between storing its blobs and inserting its row); those in use by a transaction are
    skipped, not waited for."""
    old = blobs.c.created_at < sa.func.now() - sa.bindparam("grace", ORPHAN_GRACE, type_=sa.Interval)
    locked = list(
        conn.execute(
            sa.select(blobs.c.sha256)
            .where(old, _UNREFERENCED)
            .order_by(blobs.c.sha256)
            .with_for_update(skip_locked=True)
        ).scalars()
    )
    if not locked:
        return 0
    return conn.execute(blobs.delete().where(blobs.c.sha256.in_(locked), _UNREFERENCED)).rowcount


def stored_files(conn: sa.Connection, network_id: int) -> list[StoredFile]:
    """A network's files as the database records them (empty for a network stored before revision 0003)."""
    rows = conn.execute(
        sa.select(network_files.c.path, network_files.c.sha256, blobs.c.size_bytes)
        .join(blobs, blobs.c.sha256 == network_files.c.sha256)
        .where(network_files.c.network_id == network_id)
        .order_by(network_files.c.path)
    ).all()
    return [StoredFile(path, sha256, size) for path, sha256, size in rows]


def is_complete(directory: Path, files: Iterable[StoredFile]) -> bool:
    """Every file present with its size (a cached copy was verified when it was fetched). Blocking."""
    for stored in files:
        path = directory / stored.path
        if not path.is_file() or path.stat().st_size != stored.size_bytes:
            return False
    return True


def _fetch_file(
    conn: sa.Connection, network_id: int, stored: StoredFile, target: Path, stopping: threading.Event
) -> None:
    """Stream one blob into `target`, then check its size and sha256 (CorruptDataError if they differ)."""
    hasher, size, expected = hashlib.sha256(), 0, 0
    query = (
        sa.select(blob_chunks.c.chunk_index, blob_chunks.c.data)
        .where(blob_chunks.c.sha256 == stored.sha256)
        .order_by(blob_chunks.c.chunk_index)
        .execution_options(stream_results=True, yield_per=_FETCH_BATCH_CHUNKS)
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("wb") as out, conn.execute(query) as chunks:
        for index, data in chunks:
            if stopping.is_set():
                raise UnavailableError("streamd is stopping; the network's files were not fetched")
            if index != expected:
                break  # a missing chunk: the size or the hash below says so
            hasher.update(data)
            out.write(data)
            size += len(data)
            expected += 1
    digest = hasher.hexdigest()
    if size == stored.size_bytes and digest == stored.sha256:
        return
    if conn.execute(sa.select(networks.c.id).where(networks.c.id == network_id)).first() is None:
        raise NotFoundError(f"network {network_id} was deleted while its files were fetched")
    raise CorruptDataError(
        f"network {network_id}: file {stored.path} read from the database is corrupt ({size} bytes with "
        f"sha256 {digest}, expected {stored.size_bytes} bytes with sha256 {stored.sha256}); it was not "
        "used. Restore the database from a backup, or delete the network and register it again"
    )


def materialize(
    conn: sa.Connection,
    network_id: int,
    target: Path,
    staging_root: Path,
    stopping: threading.Event,
) -> int:
    """Make `target` hold the network's files, fetching them when missing or incomplete; returns the
    bytes fetched (0: the copy on disk was complete). Blocking: runs on the blob thread."""
    files = stored_files(conn, network_id)
    if not files:
        if conn.execute(sa.select(networks.c.id).where(networks.c.id == network_id)).first() is None:
            raise NotFoundError(f"network {network_id} does not exist", code="network_not_found")
        if target.is_dir():
            return 0  # registered before revision 0003 stored files in the database: the disk is all
        raise UnavailableError(
            f"network {network_id}'s files are on another node only (it was registered before streamd "
            f"stored network files in the database): copy that node's data_dir/networks/{network_id} to "
            "this node, or delete the network and register it again",
            code="network_files_missing",
        )
    if is_complete(target, files):
        return 0
    staging_root.mkdir(parents=True, exist_ok=True)
    staging = staging_root / f"fetch-{network_id}-{uuid.uuid4().hex}"
    try:
        for stored in files:
            _fetch_file(conn, network_id, stored, staging / stored.path, stopping)
        if target.exists():  # incomplete: set it aside, then put the verified copy in its place
            stale = staging_root / f"stale-{network_id}-{uuid.uuid4().hex}"
            os.rename(target, stale)
            os.rename(staging, target)
            shutil.rmtree(stale, ignore_errors=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already after a successful rename
    return sum(stored.size_bytes for stored in files)


class BlobStore:
    """The blob side of cluster mode: its own connection and "streamd-blobs" thread. Coroutines run on
    the loop; transfers run on that thread, one at a time."""

    def __init__(self, database_url: str) -> None:
        self._db = Database(Path("."), database_url, thread_name="streamd-blobs", migrate=False)
        self._stopping = threading.Event()  # checked between chunks: a stop does not wait for a transfer
        self._fetching: dict[int, asyncio.Task[None]] = {}

    async def open(self) -> None:
        self._stopping.clear()
        await self._db.open()

    async def close(self) -> None:
        self._stopping.set()
        await asyncio.gather(*self._fetching.values(), return_exceptions=True)
        await self._db.close()

    async def store_tree(self, directory: Path) -> list[StoredFile]:
        """Store every file under `directory` (a staged upload) as a blob; blobs that exist are reused."""
        started = time.monotonic()
        paths = await asyncio.to_thread(tree_files, directory)
        stored = []
        for path in paths:
            # One transaction per file: a large network never holds one transaction for all its files.
            store = functools.partial(store_file, directory=directory, path=path, stopping=self._stopping)
            stored.append(await self._db.run(store))
        total = sum(item.size_bytes for item in stored)
        logger.info(
            "stored %d file(s), %d bytes, in the database in %.2f s",
            len(stored),
            total,
            time.monotonic() - started,
        )
        return stored

    async def materialize(self, network_id: int, target: Path, staging_root: Path) -> None:
        """Make sure `target` holds the network's verified files; callers asking at once share one fetch."""
        task = self._fetching.get(network_id)
        if task is None:
            task = asyncio.create_task(
                self._materialize(network_id, target, staging_root), name=f"fetch-network-{network_id}"
            )
            self._fetching[network_id] = task
            task.add_done_callback(lambda _t: self._fetching.pop(network_id, None))
        await asyncio.shield(task)

    async def _materialize(self, network_id: int, target: Path, staging_root: Path) -> None:
        started = time.monotonic()
        fetched = await self._db.run(
            lambda conn: materialize(conn, network_id, target, staging_root, self._stopping)
        )
        if fetched:
            logger.info(
                "network %d: fetched %d bytes of files from the database in %.2f s",
                network_id,
                fetched,
                time.monotonic() - started,
            )

    async def sweep(self) -> int:
        """Remove blobs that no network refers to and that no upload in progress can still link."""
        return await self._db.run(drop_orphans)
