"""Stored chains: validated chain definitions by name. Coroutines; SQL on the database thread."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa

from streamd.errors import NotFoundError
from streamd.store.db import Database, dialect_insert, utc_now_iso
from streamd.store.schema import chains


@dataclass(frozen=True, slots=True)
class ChainRecord:
    """A stored chain: its name and the definition as the client sent it."""

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


def _record(row: sa.RowMapping) -> ChainRecord:
    return ChainRecord(row["name"], orjson.loads(row["definition"]), row["create_date"], row["update_date"])


class ChainRepository:
    """Stored chains (`PUT /chains/{name}`), by name; coroutines, the SQL runs on the database thread."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def put(self, name: str, definition: dict[str, Any]) -> tuple[ChainRecord, bool]:
        """Create or replace; returns the record and whether it is new."""

        def upsert(conn: sa.Connection) -> bool:
            now = utc_now_iso()
            text = orjson.dumps(definition).decode()
            # Insert unless the name exists, then update: another node may store the same name at the
            # same moment, and neither must fail on the primary key.
            # Whether a row was inserted comes from RETURNING: psycopg reports rowcount -1 here.
            inserted = conn.execute(
                dialect_insert(conn)(chains)
                .values(name=name, definition=text, create_date=now, update_date=now)
                .on_conflict_do_nothing(index_elements=["name"])
                .returning(chains.c.name)
            ).first()
            if inserted is not None:
                return True
            conn.execute(
                chains.update().where(chains.c.name == name).values(definition=text, update_date=now)
            )
            return False

        created = await self._db.run(upsert)
        return await self.get(name), created

    async def get(self, name: str) -> ChainRecord:
        row = await self._db.run(
            lambda conn: conn.execute(chains.select().where(chains.c.name == name)).mappings().first()
        )
        if row is None:
            raise NotFoundError(
                f"chain {name!r} does not exist; PUT /v0.7/chains/{name} stores it", code="chain_not_found"
            )
        return _record(row)

    async def page(self, offset: int, limit: int) -> tuple[int, list[ChainRecord]]:
        count, rows = await self._db.page(chains.select().order_by(chains.c.name), offset=offset, limit=limit)
        return count, [_record(row) for row in rows]

    async def delete(self, name: str) -> None:
        deleted = await self._db.run(
            lambda conn: conn.execute(chains.delete().where(chains.c.name == name)).rowcount
        )
        if deleted == 0:
            raise NotFoundError(f"chain {name!r} does not exist", code="chain_not_found")
