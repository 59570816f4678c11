"""Recognition specs and versions in the database. Versions cascade away with their spec or their network;
a spec whose current version goes keeps `current_version_id = NULL`. Coroutines; SQL on the db thread."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa

from streamd.errors import NotFoundError
from streamd.networks.recognition import (
    PostProcessing,
    RecognitionSpecCreate,
    RecognitionVersionCreate,
    SpecOutput,
)
from streamd.store.db import Database, inserted_id, utc_now_iso
from streamd.store.schema import networks, recognition_specs, recognition_versions


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


@dataclass(frozen=True, slots=True)
class SpecRecord:
    """A stored recognition spec (outputs, current version)."""

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
    """A stored recognition version: a spec's network and post-processings."""

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


def _spec(row: sa.RowMapping) -> SpecRecord:
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


def _version(row: sa.RowMapping) -> VersionRecord:
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
    sa.select(
        recognition_versions,
        recognition_specs.c.name.label("spec_name"),
        networks.c.name.label("network_name"),
    )
    .join(recognition_specs, recognition_specs.c.id == recognition_versions.c.spec_id)
    .join(networks, networks.c.id == recognition_versions.c.network_id)
)
_specs, _versions = recognition_specs, recognition_versions


class RecognitionRepository:
    """Recognition specs and their versions; coroutines, the SQL runs on the database thread."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create_spec(self, spec: RecognitionSpecCreate) -> SpecRecord:
        def insert(conn: sa.Connection) -> int:
            now = utc_now_iso()
            result = conn.execute(
                _specs.insert().values(
                    name=spec.name,
                    description=spec.description,
                    metadata=_dumps(spec.metadata),
                    outputs=_dumps([o.model_dump() for o in spec.outputs]),
                    create_date=now,
                    update_date=now,
                )
            )
            return inserted_id(result)

        return await self.spec(await self._db.run(insert))

    async def spec(self, spec_id: int) -> SpecRecord:
        row = await self._db.run(
            lambda conn: conn.execute(_specs.select().where(_specs.c.id == spec_id)).mappings().first()
        )
        if row is None:
            raise NotFoundError(f"recognition spec {spec_id} does not exist", code="spec_not_found")
        return _spec(row)

    async def specs_named(self, name: str) -> list[SpecRecord]:
        """Every spec with this name (names are not unique), oldest first."""
        query = _specs.select().where(_specs.c.name == name).order_by(_specs.c.id)
        rows = await self._db.run(lambda conn: conn.execute(query).mappings().all())
        return [_spec(row) for row in rows]

    async def specs(self, offset: int, limit: int) -> tuple[int, list[SpecRecord]]:
        count, rows = await self._db.page(_specs.select().order_by(_specs.c.id), offset=offset, limit=limit)
        return count, [_spec(row) for row in rows]

    async def update_spec(self, spec_id: int, changes: dict[str, Any]) -> SpecRecord:
        def apply(conn: sa.Connection) -> int:
            columns = {k: _dumps(v) if k == "metadata" else v for k, v in changes.items()}
            columns["update_date"] = utc_now_iso()
            return conn.execute(_specs.update().where(_specs.c.id == spec_id).values(columns)).rowcount

        if await self._db.run(apply) == 0:
            raise NotFoundError(f"recognition spec {spec_id} does not exist", code="spec_not_found")
        return await self.spec(spec_id)

    async def delete_spec(self, spec_id: int) -> None:
        deleted = await self._db.run(
            lambda conn: conn.execute(_specs.delete().where(_specs.c.id == spec_id)).rowcount
        )
        if deleted == 0:
            raise NotFoundError(f"recognition spec {spec_id} does not exist", code="spec_not_found")

    async def create_version(self, version: RecognitionVersionCreate) -> VersionRecord:
        """Insert; the spec's first version (or the first since its current one went) becomes current."""

        def insert(conn: sa.Connection) -> int:
            now = utc_now_iso()
            result = conn.execute(
                _versions.insert().values(
                    spec_id=version.spec_id,
                    network_id=version.network_id,
                    post_processings=_dumps(
                        [p.model_dump(exclude_none=True) for p in version.post_processings]
                    ),
                    create_date=now,
                    update_date=now,
                )
            )
            version_id = inserted_id(result)
            conn.execute(
                _specs.update()
                .where(_specs.c.id == version.spec_id, _specs.c.current_version_id.is_(None))
                .values(current_version_id=version_id, update_date=now)
            )
            return version_id

        return await self.version(await self._db.run(insert))

    async def version(self, version_id: int) -> VersionRecord:
        query = _VERSION_SELECT.where(_versions.c.id == version_id)
        row = await self._db.run(lambda conn: conn.execute(query).mappings().first())
        if row is None:
            raise NotFoundError(f"recognition version {version_id} does not exist", code="version_not_found")
        return _version(row)

    async def version_or_none(self, version_id: int) -> VersionRecord | None:
        try:
            return await self.version(version_id)
        except NotFoundError:
            return None

    async def versions(self, spec_id: int | None, offset: int, limit: int) -> tuple[int, list[VersionRecord]]:
        query = _VERSION_SELECT.order_by(_versions.c.id)
        if spec_id is not None:
            query = query.where(_versions.c.spec_id == spec_id)
        count, rows = await self._db.page(query, offset=offset, limit=limit)
        return count, [_version(row) for row in rows]

    async def delete_version(self, version_id: int) -> None:
        deleted = await self._db.run(
            lambda conn: conn.execute(_versions.delete().where(_versions.c.id == version_id)).rowcount
        )
        if deleted == 0:
            raise NotFoundError(f"recognition version {version_id} does not exist", code="version_not_found")
