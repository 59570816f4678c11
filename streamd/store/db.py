"""The SQLite database: one connection owned by one dedicated thread, reached from the loop through `run()`.

Every statement runs on the "streamd-db" thread, so the event loop never waits on disk and the
connection is never shared between threads. WAL mode keeps readers cheap; `with conn:` gives each
callable one transaction.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

SCHEMA_VERSION = 5

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    subject_id INTEGER,
    status TEXT NOT NULL CHECK (status IN ('pending', 'success', 'error')),
    error TEXT,
    data TEXT,
    date_created TEXT NOT NULL,
    date_updated TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS networks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    metadata TEXT NOT NULL,
    framework TEXT NOT NULL,
    preprocessing TEXT NOT NULL,
    postprocessings TEXT NOT NULL,
    files TEXT NOT NULL,
    task_id INTEGER NOT NULL REFERENCES tasks(id),
    deployed INTEGER NOT NULL DEFAULT 0,
    create_date TEXT NOT NULL,
    update_date TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS recognition_specs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    metadata TEXT NOT NULL,
    outputs TEXT NOT NULL,
    current_version_id INTEGER REFERENCES recognition_versions(id) ON DELETE SET NULL,
    create_date TEXT NOT NULL,
    update_date TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS recognition_versions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    spec_id INTEGER NOT NULL REFERENCES recognition_specs(id) ON DELETE CASCADE,
    network_id INTEGER NOT NULL REFERENCES networks(id) ON DELETE CASCADE,
    post_processings TEXT NOT NULL,
    create_date TEXT NOT NULL,
    update_date TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS recognition_versions_network ON recognition_versions(network_id);
CREATE INDEX IF NOT EXISTS recognition_versions_spec ON recognition_versions(spec_id);
CREATE TABLE IF NOT EXISTS streams (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    definition TEXT NOT NULL,
    desired TEXT NOT NULL,
    run INTEGER NOT NULL DEFAULT 0,
    checkpoint TEXT,
    create_date TEXT NOT NULL,
    update_date TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS chains (
    name TEXT PRIMARY KEY,
    definition TEXT NOT NULL,
    create_date TEXT NOT NULL,
    update_date TEXT NOT NULL
);
"""


def _migrate(conn: sqlite3.Connection, version: int) -> None:
    """Bring a database written by an older streamd up to SCHEMA_VERSION (tables it lacks were just
    created by the schema script; columns added since are added here)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(streams)")}
    if version < 5 and "run" not in columns:  # 5: a stream's run counter and resume checkpoint
        conn.execute("ALTER TABLE streams ADD COLUMN run INTEGER NOT NULL DEFAULT 0")
        conn.execute("ALTER TABLE streams ADD COLUMN checkpoint TEXT")


def utc_now_iso() -> str:
    """ISO 8601 with microseconds and `Z`, as the Deepomatic API writes dates."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Database:
    """Owns the SQLite connection and the one thread allowed to touch it."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    async def open(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="streamd-db")
        await self._submit(self._connect)
        logger.info("database open at %s", self._path)

    async def close(self) -> None:
        if self._executor is None:
            return
        await self._submit(self._disconnect)
        # The thread is idle now; joining it would block the loop for nothing.
        self._executor.shutdown(wait=False)
        self._executor = None

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(conn)` on the database thread inside one transaction."""

        def transaction() -> T:
            assert self._conn is not None
            with self._conn:
                return fn(self._conn)

        return await self._submit(transaction)

    async def page(
        self,
        table: str,
        *,
        offset: int,
        limit: int,
        select: str | None = None,
        where: str = "",
        args: tuple[object, ...] = (),
        order: str = "id",
    ) -> tuple[int, list[sqlite3.Row]]:
        """One page of rows and the total count, read in one transaction (`table` may carry an alias)."""

        def query(conn: sqlite3.Connection) -> tuple[int, list[sqlite3.Row]]:
            count = conn.execute(f"SELECT COUNT(*) FROM {table} {where}", args).fetchone()[0]
            rows = conn.execute(
                f"{select or f'SELECT * FROM {table}'} {where} ORDER BY {order} LIMIT ? OFFSET ?",
                (*args, limit, offset),
            ).fetchall()
            return count, rows

        return await self.run(query)

    async def _submit(self, fn: Callable[[], T]) -> T:
        if self._executor is None:
            raise RuntimeError("database is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def _connect(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self._path, isolation_level="DEFERRED")
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            conn.close()
            raise RuntimeError(
                f"database {self._path} has schema version {version}, newer than this streamd "
                f"({SCHEMA_VERSION}); upgrade streamd or point storage.data_dir elsewhere"
            )
        with conn:
            conn.executescript(_SCHEMA)
            _migrate(conn, version)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        self._conn = conn

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
