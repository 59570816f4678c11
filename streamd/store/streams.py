"""Streams as stored: the definition a user posted and the state to restore at the next start."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa

from streamd.entities import Position
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


class StreamRepository:
    """Stream definitions, desired states and checkpoints; coroutines, the SQL runs on the database thread."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, name: str, definition: dict[str, Any]) -> int:
        def insert(conn: sa.Connection) -> int:
            now = utc_now_iso()
            result = conn.execute(
                streams.insert().values(
                    name=name,
                    definition=orjson.dumps(definition).decode(),
                    desired="running",
                    create_date=now,
                    update_date=now,
                )
            )
            return inserted_id(result)

        return await self._db.run(insert)

    async def set_desired(self, stream_id: int, desired: str) -> None:
        await self._db.run(
            lambda conn: conn.execute(
                streams.update()
                .where(streams.c.id == stream_id)
                .values(desired=desired, update_date=utc_now_iso())
            )
        )

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

    async def save_checkpoint(self, stream_id: int, position: Position) -> None:
        data = orjson.dumps(position.to_json()).decode()
        await self._db.run(
            lambda conn: conn.execute(
                streams.update().where(streams.c.id == stream_id).values(checkpoint=data)
            )
        )

    async def delete(self, stream_id: int) -> None:
        await self._db.run(lambda conn: conn.execute(streams.delete().where(streams.c.id == stream_id)))

    async def all(self) -> list[StreamRecord]:
        rows = await self._db.run(
            lambda conn: conn.execute(streams.select().order_by(streams.c.id)).mappings().all()
        )
        return [
            StreamRecord(
                r["id"],
                r["name"],
                orjson.loads(r["definition"]),
                r["desired"],
                r["create_date"],
                r["run"],
                None if r["checkpoint"] is None else Position.from_json(orjson.loads(r["checkpoint"])),
            )
            for r in rows
        ]
