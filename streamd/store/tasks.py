"""Tasks: the asynchronous results of deployments and inferences, as Deepomatic's /tasks resource shows them.

Statuses are only `pending`, `success` and `error` (the official client polls while `pending`).
Repository methods are coroutines; their SQL runs on the database thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson
import sqlalchemy as sa

from streamd.errors import NotFoundError
from streamd.store.db import Database, inserted_id, utc_now_iso
from streamd.store.schema import networks, tasks

TaskStatus = Literal["pending", "success", "error"]


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """A task (a deployment, an inference request): its status, and its result or error."""

    task_id: int
    kind: str
    subject_id: int | None
    status: TaskStatus
    error: str | None
    data: Any
    date_created: str
    date_updated: str

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.task_id,
            "status": self.status,
            "error": self.error,
            "data": self.data,
            "subtasks": None,
            "date_created": self.date_created,
            "date_updated": self.date_updated,
        }


def insert_task(
    conn: sa.Connection, kind: str, subject_id: int | None = None, node: str | None = None
) -> int:
    """Insert a `pending` task inside the caller's transaction; returns its id."""
    now = utc_now_iso()
    result = conn.execute(
        tasks.insert().values(
            kind=kind, subject_id=subject_id, status="pending", date_created=now, date_updated=now, node=node
        )
    )
    return inserted_id(result)


def finish_task(
    conn: sa.Connection, task_id: int, status: TaskStatus, *, data: Any = None, error: str | None = None
) -> None:
    # A task leaves `pending` once: a late outcome (a deployment finishing after its network was
    # deleted) must not overwrite the first one.
    """End a pending task inside the caller's transaction (a finished task is left as it is)."""
    conn.execute(
        tasks.update()
        .where(tasks.c.id == task_id, tasks.c.status == "pending")
        .values(
            status=status,
            data=None if data is None else orjson.dumps(data).decode(),
            error=error,
            date_updated=utc_now_iso(),
        )
    )


def _record(row: sa.RowMapping) -> TaskRecord:
    return TaskRecord(
        task_id=row["id"],
        kind=row["kind"],
        subject_id=row["subject_id"],
        status=row["status"],
        error=row["error"],
        data=None if row["data"] is None else orjson.loads(row["data"]),
        date_created=row["date_created"],
        date_updated=row["date_updated"],
    )


class TaskRepository:
    """Tasks, as the `/tasks` API shows them; coroutines, the SQL runs on the database thread."""

    def __init__(self, db: Database, node: str | None = None) -> None:
        self._db = db
        self._node = node  # cluster mode: tasks are marked with the node that runs them

    async def create(self, kind: str, subject_id: int | None = None) -> int:
        return await self._db.run(lambda conn: insert_task(conn, kind, subject_id, self._node))

    async def finish(
        self, task_id: int, status: TaskStatus, *, data: Any = None, error: str | None = None
    ) -> None:
        await self._db.run(lambda conn: finish_task(conn, task_id, status, data=data, error=error))

    async def get(self, task_id: int) -> TaskRecord:
        row = await self._db.run(
            lambda conn: conn.execute(tasks.select().where(tasks.c.id == task_id)).mappings().first()
        )
        if row is None:
            raise NotFoundError(f"task {task_id} does not exist", code="task_not_found")
        return _record(row)

    async def page(self, task_ids: list[int] | None, offset: int, limit: int) -> tuple[int, list[TaskRecord]]:
        """Tasks in id order, restricted to `task_ids` when given; returns (total count, one page)."""
        query = tasks.select().order_by(tasks.c.id)
        if task_ids is not None:
            query = query.where(tasks.c.id.in_(task_ids))
        count, rows = await self._db.page(query, offset=offset, limit=limit)
        return count, [_record(row) for row in rows]

    async def fail_pending(self, kind: str, error: str) -> int:
        """Fail the pending tasks of `kind` that a stop interrupted: in cluster mode only this node's (a
        node's restart must not fail the inferences another node is running)."""
        mine = [] if self._node is None else [tasks.c.node == self._node]
        return await self._fail_pending(error, tasks.c.kind == kind, *mine)

    async def fail_unowned_deployments(self, kind: str, error: str) -> int:
        """Fail the pending deployment tasks (`kind`) that no network row names any more: a crash
        between a failed deployment's removal and the end of its task left them pending forever."""
        return await self._fail_pending(
            error, tasks.c.kind == kind, tasks.c.id.not_in(sa.select(networks.c.task_id))
        )

    async def _fail_pending(self, error: str, *where: sa.ColumnElement[bool]) -> int:
        query = tasks.update().where(tasks.c.status == "pending", *where)
        values = query.values(status="error", error=error, date_updated=utc_now_iso())
        return await self._db.run(lambda conn: conn.execute(values).rowcount)

    async def prune(self, older_than: str) -> int:
        """Delete finished tasks last updated before `older_than` (ISO, as stored: it sorts as text),
        except a network's deployment task, which its network row still names."""

        def prune(conn: sa.Connection) -> int:
            return conn.execute(
                tasks.delete().where(
                    tasks.c.status != "pending",
                    tasks.c.date_updated < older_than,
                    tasks.c.id.not_in(sa.select(networks.c.task_id)),
                )
            ).rowcount

        return await self._db.run(prune)

    async def count_pending(self) -> int:
        return await self._db.run(
            lambda conn: conn.execute(
                sa.select(sa.func.count()).select_from(tasks).where(tasks.c.status == "pending")
            ).scalar_one()
        )
