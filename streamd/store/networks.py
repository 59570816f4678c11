"""Networks: rows in the database, files under `<data_dir>/networks/<id>/`, consistent with each other.

Uploads land in `<data_dir>/tmp/`; `create()` inserts the row and renames the staged directory into
place inside one transaction, so a crash leaves either both or (after `sweep()`) neither.
SQL and file operations run on the database thread; methods are coroutines.

In cluster mode (PostgreSQL, a BlobStore given) the files are also stored in the database, linked in the
row's transaction, and the directory is a per-node cache that `local_dir()` fetches when it is missing
or incomplete (streamd/store/blobs.py).
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from streamd.errors import NotFoundError, UnavailableError
from streamd.networks.spec import NetworkPatch, NetworkSpec, Preprocessing
from streamd.store.blobs import BlobsGoneError, BlobStore, StoredFile, drop_blobs, link_files, network_blobs
from streamd.store.db import Database, inserted_id, utc_now_iso
from streamd.store.schema import networks, nodes, tasks
from streamd.store.tasks import insert_task

logger = logging.getLogger(__name__)

DEPLOY_TASK = "network_deployment"
# Times an upload stores its files again when a concurrent delete removed blobs it was about to reuse.
_LINK_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class NetworkRecord:
    """One row of `networks`, with its JSON columns decoded."""

    network_id: int
    name: str
    description: str
    metadata: dict[str, Any]
    framework: str
    preprocessing: Preprocessing  # parsed once, when the row is read
    postprocessings: list[dict[str, Any]]
    files: list[str]
    task_id: int
    deployed: bool
    create_date: str
    update_date: str

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.network_id,
            "name": self.name,
            "description": self.description,
            "metadata": self.metadata,
            "framework": self.framework,
            "preprocessing": self.preprocessing.model_dump(mode="json"),
            "postprocessings": self.postprocessings,
            "task_id": self.task_id,
            "create_date": self.create_date,
            "update_date": self.update_date,
        }


def _record(row: sa.RowMapping) -> NetworkRecord:
    return NetworkRecord(
        network_id=row["id"],
        name=row["name"],
        description=row["description"],
        metadata=orjson.loads(row["metadata"]),
        framework=row["framework"],
        preprocessing=Preprocessing.model_validate(orjson.loads(row["preprocessing"])),
        postprocessings=orjson.loads(row["postprocessings"]),
        files=orjson.loads(row["files"]),
        task_id=row["task_id"],
        deployed=bool(row["deployed"]),
        create_date=row["create_date"],
        update_date=row["update_date"],
    )


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


class NetworkRepository:
    """Private networks: their rows, and their files under `<data_dir>/networks/<id>/`.

    Cluster mode: `blobs` stores the files in PostgreSQL too, and `node_id` marks the deployment tasks
    this node creates and takes over."""

    def __init__(
        self, db: Database, data_dir: Path, *, blobs: BlobStore | None = None, node_id: str | None = None
    ) -> None:
        self._db = db
        self._blobs = blobs
        self._node_id = node_id
        self.root = data_dir / "networks"
        self.staging_root = data_dir / "tmp"

    def network_dir(self, network_id: int) -> Path:
        """Where the network's files are on this node (in cluster mode, maybe not yet: see local_dir)."""
        return self.root / str(network_id)

    async def local_dir(self, network_id: int) -> Path:
        """The network's directory, complete: in cluster mode fetched (and verified) from the database
        first if it is missing or incomplete on this node. NotFoundError if the network does not exist."""
        directory = self.network_dir(network_id)
        if self._blobs is not None:
            await self._blobs.materialize(network_id, directory, self.staging_root)
        return directory

    def new_staging_dir(self) -> Path:
        """Create an empty upload directory (blocking: call from a worker thread)."""
        path = self.staging_root / f"upload-{uuid.uuid4().hex}"
        path.mkdir(parents=True)
        return path

    async def create(self, spec: NetworkSpec, files: list[str], staged: Path) -> NetworkRecord:
        """Insert the network and its pending deployment task, and move the staged files into place
        (cluster mode: store them in the database first, and link them in the row's transaction)."""

        def insert(conn: sa.Connection, stored: list[StoredFile] | None) -> int:
            now = utc_now_iso()
            task_id = insert_task(conn, DEPLOY_TASK, node=self._node_id)
            result = conn.execute(
                networks.insert().values(
                    name=spec.name,
                    description=spec.description,
                    metadata=_dumps(spec.metadata),
                    framework=spec.framework,
                    preprocessing=_dumps(spec.preprocessing.model_dump()),
                    postprocessings=_dumps(list(spec.postprocessings)),
                    files=_dumps(sorted(files)),
                    task_id=task_id,
                    create_date=now,
                    update_date=now,
                )
            )
            network_id = inserted_id(result)
            conn.execute(tasks.update().where(tasks.c.id == task_id).values(subject_id=network_id))
            if stored is not None:
                link_files(conn, network_id, stored)
            self.root.mkdir(parents=True, exist_ok=True)
            # The rename is the commit point on disk. Should the commit fail after it, the directory
            # has no row and sweep() removes it at the next start.
            os.rename(staged, self.network_dir(network_id))
            return network_id

        if self._blobs is None:
            return await self.get(await self._db.run(functools.partial(insert, stored=None)))
        for _attempt in range(_LINK_ATTEMPTS):
            stored = await self._blobs.store_tree(staged)
            try:
                return await self.get(await self._db.run(functools.partial(insert, stored=stored)))
            except BlobsGoneError as exc:
                logger.info("storing the upload again: %s (a network sharing its files was deleted)", exc)
        raise UnavailableError(
            "the network's files were removed from the database while it was registered (another network "
            "with the same files was being deleted, repeatedly); register it again",
            code="network_files_missing",
        )

    async def get(self, network_id: int) -> NetworkRecord:
        row = await self._db.run(
            lambda conn: conn.execute(networks.select().where(networks.c.id == network_id)).mappings().first()
        )
        if row is None:
            raise NotFoundError(f"network {network_id} does not exist", code="network_not_found")
        return _record(row)

    async def page(self, offset: int, limit: int) -> tuple[int, list[NetworkRecord]]:
        count, rows = await self._db.page(
            networks.select().order_by(networks.c.id), offset=offset, limit=limit
        )
        return count, [_record(row) for row in rows]

    async def update(self, network_id: int, patch: NetworkPatch) -> NetworkRecord:
        changes = patch.model_dump(exclude_unset=True)

        def apply(conn: sa.Connection) -> int:
            columns = {key: _dumps(value) if key == "metadata" else value for key, value in changes.items()}
            columns["update_date"] = utc_now_iso()
            return conn.execute(networks.update().where(networks.c.id == network_id).values(columns)).rowcount

        if await self._db.run(apply) == 0:
            raise NotFoundError(f"network {network_id} does not exist", code="network_not_found")
        return await self.get(network_id)

    async def delete(self, network_id: int) -> None:
        """Remove the row, then the files; a crash in between leaves an orphan directory for sweep()."""

        def remove(conn: sa.Connection) -> int:
            shared = [] if self._blobs is None else network_blobs(conn, network_id)
            removed = conn.execute(networks.delete().where(networks.c.id == network_id)).rowcount
            drop_blobs(conn, shared)  # the blobs no other network uses (its file rows went by cascade)
            return removed

        if await self._db.run(remove) == 0:
            raise NotFoundError(f"network {network_id} does not exist", code="network_not_found")
        await self._db.run(lambda _conn: shutil.rmtree(self.network_dir(network_id), ignore_errors=True))

    async def mark_deployed(self, network_id: int) -> bool:
        """False when the network no longer exists (deleted while it deployed)."""
        updated = await self._db.run(
            lambda conn: (
                conn.execute(
                    networks.update().where(networks.c.id == network_id).values(deployed=True)
                ).rowcount
            )
        )
        return updated == 1

    async def undeployed(self) -> list[NetworkRecord]:
        """Networks whose deployment has not succeeded yet (interrupted by a stop), oldest first."""
        rows = await self._db.run(
            lambda conn: (
                conn.execute(networks.select().where(sa.not_(networks.c.deployed)).order_by(networks.c.id))
                .mappings()
                .all()
            )
        )
        return [_record(row) for row in rows]

    async def claim_undeployed(self, live_ttl_s: float) -> list[NetworkRecord]:
        """Cluster mode: the undeployed networks whose deployment this node runs now, oldest first: those
        whose task it created, or that were created before tasks named a node, or whose node has not
        heartbeated for `live_ttl_s` (it died or left mid-deployment). The task names this node after."""
        assert self._node_id is not None
        me = self._node_id

        def claim(conn: sa.Connection) -> list[sa.RowMapping]:
            ttl = sa.bindparam("ttl", timedelta(seconds=live_ttl_s), type_=sa.Interval)
            live = sa.select(nodes.c.id).where(nodes.c.heartbeat_at > sa.func.now() - ttl, nodes.c.id != me)
            taken = conn.execute(
                tasks.update()
                .where(
                    tasks.c.id.in_(sa.select(networks.c.task_id).where(sa.not_(networks.c.deployed))),
                    tasks.c.status == "pending",
                    sa.or_(tasks.c.node.is_(None), tasks.c.node.not_in(live)),
                )
                .values(node=me)
                .returning(tasks.c.id)
            ).scalars()
            query = networks.select().where(networks.c.task_id.in_(list(taken))).order_by(networks.c.id)
            return list(conn.execute(query).mappings())

        return [_record(row) for row in await self._db.run(claim)]

    async def count(self) -> int:
        return await self._db.run(
            lambda conn: conn.execute(sa.select(sa.func.count()).select_from(networks)).scalar_one()
        )

    async def sweep(self) -> None:
        """Remove what an interrupted upload or delete left on disk (staged uploads, orphan directories)
        and, in cluster mode, in the database (blobs no network refers to)."""

        def sweep(conn: sa.Connection) -> None:
            known = {str(network_id) for network_id in conn.execute(sa.select(networks.c.id)).scalars()}
            shutil.rmtree(self.staging_root, ignore_errors=True)
            if not self.root.is_dir():
                return
            for entry in self.root.iterdir():
                if entry.name not in known:
                    logger.warning("removing %s: no network row refers to it", entry)
                    shutil.rmtree(entry, ignore_errors=True)

        await self._db.run(sweep)
        if self._blobs is not None:
            removed = await self._blobs.sweep()
            if removed:
                logger.warning("removed %d stored file(s) that no network refers to", removed)

    def discard_staged(self, staged: Path) -> None:
        """Remove an upload that will not become a network (blocking: call from a worker thread)."""
        shutil.rmtree(staged, ignore_errors=True)
