"""Streams as stored: the definition a user posted and the state to restore at the next start."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson
import sqlalchemy as sa

from streamd.entities import Position
from streamd.errors import InsufficientStorageError
from streamd.store.db import Database, inserted_id, utc_now_iso
from streamd.store.schema import streams


@dataclass(frozen=True, slots=True)
class StreamRecord:
    """A stored stream: its definition, what it should be doing after a restart, and where it stopped."""

    stream_id: int
    name: str
    definition: dict[str, Any]
    desired: str  # running | paused | finished | error
    create_date: str
    run: int  # how many times the stream was started; records carry it
    checkpoint: Position | None  # the last frame every sink had made durable
    # Cluster mode only (None / 0 on SQLite): the lease and the owner's last published status.
    owner: str | None = None
    epoch: int = 0
    status: dict[str, Any] | None = None
    status_age_s: float | None = None


@dataclass(frozen=True, slots=True)
class Fence:
    """Who may write a stream's row in cluster mode: its lease holder at this epoch, nobody else."""

    node_id: str
    epoch: int


def _fenced(statement: Any, fence: Fence | None) -> Any:
    if fence is None:
        return statement
    return statement.where(streams.c.owner == fence.node_id, streams.c.epoch == fence.epoch)


def _record(r: sa.RowMapping) -> StreamRecord:
    status = r.get("status")
    age = r.get("status_age_s")
    return StreamRecord(
        r["id"],
        r["name"],
        orjson.loads(r["definition"]),
        r["desired"],
        r["create_date"],
        r["run"],
        None if r["checkpoint"] is None else Position.from_json(orjson.loads(r["checkpoint"])),
        r.get("owner"),
        r.get("epoch") or 0,
        None if status is None else orjson.loads(status),
        None if age is None else round(float(age), 3),
    )


CHANGES_CHANNEL = "streamd_streams"  # NOTIFY'd with a stream id when its row changes through the API


def notify_change(conn: sa.Connection, stream_id: int) -> None:
    """PostgreSQL: tell listening nodes (ClusterNode) that this stream's row changed, delivered when this
    transaction commits; they run a lease round at once instead of at their next period."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_notify(CHANGES_CHANNEL, str(stream_id))))


class StreamRepository:
    """Stream definitions, desired states and checkpoints; coroutines, the SQL runs on the database thread."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(
        self, name: str, definition: dict[str, Any], *, lease: tuple[str, float] | None = None
    ) -> int:
        """Insert a stream; `lease` (node id, ttl) makes that node its owner at epoch 1 (cluster mode)."""

        def insert(conn: sa.Connection) -> int:
            now = utc_now_iso()
            owned: dict[str, Any] = {}
            if lease is not None:
                until = sa.func.now() + sa.literal(timedelta(seconds=lease[1]), sa.Interval)
                owned = {"owner": lease[0], "epoch": 1, "lease_until": until}
            result = conn.execute(
                streams.insert().values(
                    name=name,
                    definition=orjson.dumps(definition).decode(),
                    desired="running",
                    create_date=now,
                    update_date=now,
                    **owned,
                )
            )
            stream_id = inserted_id(result)
            if lease is None:  # unowned: a node with room may claim it now
                notify_change(conn, stream_id)
            return stream_id

        return await self._db.run(insert)

    async def set_desired(
        self, stream_id: int, desired: str, *, fence: Fence | None = None, release: bool = False
    ) -> bool:
        """Set what a restart (or the stream's owner) does with it; False when the fence refused it."""
        values: dict[str, Any] = {"desired": desired, "update_date": utc_now_iso()}
        if release:
            values.update(owner=None, lease_until=None)
        statement = _fenced(streams.update().where(streams.c.id == stream_id), fence).values(**values)

        def update(conn: sa.Connection) -> bool:
            changed = bool(conn.execute(statement).rowcount)
            if changed:
                notify_change(conn, stream_id)
            return changed

        return await self._db.run(update)

    async def start_run(self, stream_id: int) -> int:
        """Count one more start of the stream and return its number (1 for the first)."""

        def increment(conn: sa.Connection) -> int:
            run: int = conn.execute(
                streams.update()
                .where(streams.c.id == stream_id)
                .values(run=streams.c.run + 1)
                .returning(streams.c.run)
            ).scalar_one()
            return run

        return await self._db.run(increment)

    async def save_checkpoint(self, stream_id: int, position: Position, fence: Fence | None = None) -> None:
        """In cluster mode only the lease holder's checkpoint lands: a stale owner cannot move it back."""
        data = orjson.dumps(position.to_json()).decode()
        statement = _fenced(streams.update().where(streams.c.id == stream_id), fence).values(checkpoint=data)
        await self._db.run(lambda conn: conn.execute(statement))

    async def delete(self, stream_id: int) -> None:
        """Remove the row (its spool rows go with it); on a full disk with the database's reserve given
        up first, since a delete frees space only once it is written."""

        def remove(conn: sa.Connection) -> None:
            conn.execute(streams.delete().where(streams.c.id == stream_id))
            notify_change(conn, stream_id)

        try:
            await self._db.run(remove)
        except InsufficientStorageError:
            if not await self._db.free_reserve():
                raise
            await self._db.run(remove)

    async def all(self) -> list[StreamRecord]:
        rows = await self._db.run(
            lambda conn: conn.execute(streams.select().order_by(streams.c.id)).mappings().all()
        )
        return [_record(r) for r in rows]

    async def shared(self, stream_id: int | None = None) -> list[StreamRecord]:
        """Cluster mode: rows with their lease and status age (database clock); one row or all of them.
        A lease that expired shows no owner."""
        age = sa.func.extract("epoch", sa.func.now() - streams.c.status_at).label("status_age_s")
        owner = sa.case((streams.c.lease_until > sa.func.now(), streams.c.owner), else_=None).label("owner")
        columns = [c for c in streams.c if c.name != "owner"]
        query = sa.select(*columns, owner, age).order_by(streams.c.id)
        if stream_id is not None:
            query = query.where(streams.c.id == stream_id)
        rows = await self._db.run(lambda conn: conn.execute(query).mappings().all())
        return [_record(r) for r in rows]
