"""Recognition specs and versions in SQLite. Versions cascade away with their spec or their network;
a spec whose current version goes keeps `current_version_id = NULL`. Coroutines; SQL on the db thread."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

import orjson

from streamd.errors import NotFoundError
from streamd.networks.recognition import (
    PostProcessing,
    RecognitionSpecCreate,
    RecognitionVersionCreate,
    SpecOutput,
)
from streamd.store.db import Database, utc_now_iso


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


@dataclass(frozen=True, slots=True)
class SpecRecord:
    spec_id: int
    name: str
    description: str
    metadata: dict[str, Any]
    outputs: list[dict[str, Any]]
    current_version_id: int | None
    create_date: str
    update_date: str

    @property
    def output_specs(self) -> tuple[SpecOutput, ...]:
        return tuple(SpecOutput.model_validate(output) for output in self.outputs)

    def to_api(self, *, with_outputs: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.spec_id,
            "name": self.name,
            "description": self.description,
            "metadata": self.metadata,
            "current_version_id": self.current_version_id,
            "create_date": self.create_date,
            "update_date": self.update_date,
        }
        if with_outputs:
            data["outputs"] = self.outputs
        return data


@dataclass(frozen=True, slots=True)
class VersionRecord:
    version_id: int
    spec_id: int
    spec_name: str
    network_id: int
    network_name: str
    post_processings: list[dict[str, Any]]
    create_date: str
    update_date: str

    @property
    def post_processing_specs(self) -> tuple[PostProcessing, ...]:
        return tuple(PostProcessing.model_validate(item) for item in self.post_processings)

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.version_id,
            "spec_id": self.spec_id,
            "spec_name": self.spec_name,
            "network_id": self.network_id,
            "network_name": self.network_name,
            "post_processings": self.post_processings,
            "create_date": self.create_date,
            "update_date": self.update_date,
        }


def _spec(row: sqlite3.Row) -> SpecRecord:
    return SpecRecord(
        spec_id=row["id"],
        name=row["name"],
        description=row["description"],
        metadata=orjson.loads(row["metadata"]),
        outputs=orjson.loads(row["outputs"]),
        current_version_id=row["current_version_id"],
        create_date=row["create_date"],
        update_date=row["update_date"],
    )


def _version(row: sqlite3.Row) -> VersionRecord:
    return VersionRecord(
        version_id=row["id"],
        spec_id=row["spec_id"],
        spec_name=row["spec_name"],
        network_id=row["network_id"],
        network_name=row["network_name"],
        post_processings=orjson.loads(row["post_processings"]),
        create_date=row["create_date"],
        update_date=row["update_date"],
    )


_VERSION_SELECT = (
    "SELECT v.*, s.name AS spec_name, n.name AS network_name FROM recognition_versions v "
    "JOIN recognition_specs s ON s.id = v.spec_id JOIN networks n ON n.id = v.network_id"
)


class RecognitionRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create_spec(self, spec: RecognitionSpecCreate) -> SpecRecord:
        def insert(conn: sqlite3.Connection) -> int:
            now = utc_now_iso()
            cursor = conn.execute(
                "INSERT INTO recognition_specs (name, description, metadata, outputs, create_date, "
                "update_date) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    spec.name,
                    spec.description,
                    _dumps(spec.metadata),
                    _dumps([o.model_dump() for o in spec.outputs]),
                    now,
                    now,
                ),
            )
            assert cursor.lastrowid is not None
            return cursor.lastrowid

        return await self.spec(await self._db.run(insert))

    async def spec(self, spec_id: int) -> SpecRecord:
        row = await self._db.run(
            lambda conn: conn.execute("SELECT * FROM recognition_specs WHERE id = ?", (spec_id,)).fetchone()
        )
        if row is None:
            raise NotFoundError(f"recognition spec {spec_id} does not exist", code="spec_not_found")
        return _spec(row)

    async def specs_named(self, name: str) -> list[SpecRecord]:
        rows = await self._db.run(
            lambda conn: conn.execute(
                "SELECT * FROM recognition_specs WHERE name = ? ORDER BY id", (name,)
            ).fetchall()
        )
        return [_spec(row) for row in rows]

    async def specs(self, offset: int, limit: int) -> tuple[int, list[SpecRecord]]:
        count, rows = await self._db.page("recognition_specs", offset=offset, limit=limit)
        return count, [_spec(row) for row in rows]

    async def update_spec(self, spec_id: int, changes: dict[str, Any]) -> SpecRecord:
        def apply(conn: sqlite3.Connection) -> int:
            columns = {k: _dumps(v) if k == "metadata" else v for k, v in changes.items()}
            columns["update_date"] = utc_now_iso()
            assignments = ", ".join(f"{column} = ?" for column in columns)
            return conn.execute(
                f"UPDATE recognition_specs SET {assignments} WHERE id = ?", (*columns.values(), spec_id)
            ).rowcount

        if await self._db.run(apply) == 0:
            raise NotFoundError(f"recognition spec {spec_id} does not exist", code="spec_not_found")
        return await self.spec(spec_id)

    async def delete_spec(self, spec_id: int) -> None:
        deleted = await self._db.run(
            lambda conn: conn.execute("DELETE FROM recognition_specs WHERE id = ?", (spec_id,)).rowcount
        )
        if deleted == 0:
            raise NotFoundError(f"recognition spec {spec_id} does not exist", code="spec_not_found")

    async def create_version(self, version: RecognitionVersionCreate) -> VersionRecord:
        """Insert; the spec's first version (or the first since its current one went) becomes current."""

        def insert(conn: sqlite3.Connection) -> int:
            now = utc_now_iso()
            cursor = conn.execute(
                "INSERT INTO recognition_versions (spec_id, network_id, post_processings, create_date, "
                "update_date) VALUES (?, ?, ?, ?, ?)",
                (
                    version.spec_id,
                    version.network_id,
                    _dumps([p.model_dump(exclude_none=True) for p in version.post_processings]),
                    now,
                    now,
                ),
            )
            version_id = cursor.lastrowid
            assert version_id is not None
            conn.execute(
                "UPDATE recognition_specs SET current_version_id = ?, update_date = ? "
                "WHERE id = ? AND current_version_id IS NULL",
                (version_id, now, version.spec_id),
            )
            return version_id

        return await self.version(await self._db.run(insert))

    async def version(self, version_id: int) -> VersionRecord:
        row = await self._db.run(
            lambda conn: conn.execute(f"{_VERSION_SELECT} WHERE v.id = ?", (version_id,)).fetchone()
        )
        if row is None:
            raise NotFoundError(f"recognition version {version_id} does not exist", code="version_not_found")
        return _version(row)

    async def version_or_none(self, version_id: int) -> VersionRecord | None:
        try:
            return await self.version(version_id)
        except NotFoundError:
            return None

    async def versions(self, spec_id: int | None, offset: int, limit: int) -> tuple[int, list[VersionRecord]]:
        where, args = ("WHERE v.spec_id = ?", (spec_id,)) if spec_id is not None else ("", ())
        count, rows = await self._db.page(
            "recognition_versions v",
            offset=offset,
            limit=limit,
            select=_VERSION_SELECT,
            where=where,
            args=args,
            order="v.id",
        )
        return count, [_version(row) for row in rows]

    async def delete_version(self, version_id: int) -> None:
        deleted = await self._db.run(
            lambda conn: conn.execute("DELETE FROM recognition_versions WHERE id = ?", (version_id,)).rowcount
        )
        if deleted == 0:
            raise NotFoundError(f"recognition version {version_id} does not exist", code="version_not_found")
