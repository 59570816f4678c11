"""Streams as stored: the definition a user posted and the state to restore at the next start."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

import orjson

from streamd.entities import Position
from streamd.store.db import Database, utc_now_iso


@dataclass(frozen=True, slots=True)
class StreamRecord:
    stream_id: int
    name: str
    definition: dict[str, Any]
    desired: str  # running | paused | finished | error
    create_date: str
    run: int  # how many times the stream was started; records carry it
    checkpoint: Position | None  # the last frame every sink had made durable


class StreamRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, name: str, definition: dict[str, Any]) -> int:
        def insert(conn: sqlite3.Connection) -> int:
            now = utc_now_iso()
            cursor = conn.execute(
                "INSERT INTO streams (name, definition, desired, create_date, update_date) "
                "VALUES (?, ?, ?, ?, ?)",
                (name, orjson.dumps(definition).decode(), "running", now, now),
            )
            assert cursor.lastrowid is not None
            return cursor.lastrowid

        return await self._db.run(insert)

    async def set_desired(self, stream_id: int, desired: str) -> None:
        await self._db.run(
            lambda conn: conn.execute(
                "UPDATE streams SET desired = ?, update_date = ? WHERE id = ?",
                (desired, utc_now_iso(), stream_id),
            )
        )

    async def start_run(self, stream_id: int) -> int:
        """Count one more start of the stream and return its number (1 for the first)."""

        def increment(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "UPDATE streams SET run = run + 1 WHERE id = ? RETURNING run", (stream_id,)
            ).fetchone()
            return int(row[0])

        return await self._db.run(increment)

    async def save_checkpoint(self, stream_id: int, position: Position) -> None:
        data = orjson.dumps(position.to_json()).decode()
        await self._db.run(
            lambda conn: conn.execute("UPDATE streams SET checkpoint = ? WHERE id = ?", (data, stream_id))
        )

    async def delete(self, stream_id: int) -> None:
        await self._db.run(lambda conn: conn.execute("DELETE FROM streams WHERE id = ?", (stream_id,)))

    async def all(self) -> list[StreamRecord]:
        rows = await self._db.run(lambda conn: conn.execute("SELECT * FROM streams ORDER BY id").fetchall())
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
