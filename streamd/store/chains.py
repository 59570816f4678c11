"""Stored chains: validated chain definitions by name. Coroutines; SQL on the database thread."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

import orjson

from streamd.errors import NotFoundError
from streamd.store.db import Database, utc_now_iso


@dataclass(frozen=True, slots=True)
class ChainRecord:
    name: str
    definition: dict[str, Any]
    create_date: str
    update_date: str

    def to_api(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "chain": self.definition,
            "create_date": self.create_date,
            "update_date": self.update_date,
        }


def _record(row: sqlite3.Row) -> ChainRecord:
    return ChainRecord(row["name"], orjson.loads(row["definition"]), row["create_date"], row["update_date"])


class ChainRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def put(self, name: str, definition: dict[str, Any]) -> tuple[ChainRecord, bool]:
        """Create or replace; returns the record and whether it is new."""

        def upsert(conn: sqlite3.Connection) -> bool:
            now = utc_now_iso()
            text = orjson.dumps(definition).decode()
            updated = conn.execute(
                "UPDATE chains SET definition = ?, update_date = ? WHERE name = ?", (text, now, name)
            ).rowcount
            if updated:
                return False
            conn.execute(
                "INSERT INTO chains (name, definition, create_date, update_date) VALUES (?, ?, ?, ?)",
                (name, text, now, now),
            )
            return True

        created = await self._db.run(upsert)
        return await self.get(name), created

    async def get(self, name: str) -> ChainRecord:
        row = await self._db.run(
            lambda conn: conn.execute("SELECT * FROM chains WHERE name = ?", (name,)).fetchone()
        )
        if row is None:
            raise NotFoundError(
                f"chain {name!r} does not exist; PUT /v0.7/chains/{name} stores it", code="chain_not_found"
            )
        return _record(row)

    async def page(self, offset: int, limit: int) -> tuple[int, list[ChainRecord]]:
        count, rows = await self._db.page("chains", offset=offset, limit=limit, order="name")
        return count, [_record(row) for row in rows]

    async def delete(self, name: str) -> None:
        deleted = await self._db.run(
            lambda conn: conn.execute("DELETE FROM chains WHERE name = ?", (name,)).rowcount
        )
        if deleted == 0:
            raise NotFoundError(f"chain {name!r} does not exist", code="chain_not_found")
