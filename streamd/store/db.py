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

from streamd.errors import DatabaseUnusableError, InsufficientStorageError

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
CREATE TABLE IF NOT EXISTS health (
    id INTEGER PRIMARY KEY,
    checked TEXT NOT NULL
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


def _is_storage_failure(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "disk is full" in text or "readonly" in text or "disk i/o error" in text


def _unusable(path: Path, exc: BaseException) -> str:
    """One line: which file, what is wrong, what to do."""
    reason = " ".join(str(exc).split())  # quick_check lists problems on several lines
    return (
        f"database {path} cannot be used ({type(exc).__name__}: {reason}). Restore it from a backup, or "
        f"move it aside (with its -wal and -shm files) to start with an empty one; if it is read-only, "
        "make it and its directory writable"
    )


def utc_now_iso() -> str:
    """ISO 8601 with microseconds and `Z`, as the Deepomatic API writes dates."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Database:
    """Owns the SQLite connection and the one thread allowed to touch it."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self.write_error: str | None = None  # set while writes fail (read-only file, full disk)

    async def open(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="streamd-db")
        try:
            await self._submit(self._connect)
        except (sqlite3.Error, OSError) as exc:
            await self.close()
            raise DatabaseUnusableError(_unusable(self._path, exc)) from None
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
            try:
                with self._conn:
                    result = fn(self._conn)
            except sqlite3.OperationalError as exc:
                if _is_storage_failure(exc):
                    self.write_error = f"{type(exc).__name__}: {exc}"
                    raise InsufficientStorageError(
                        f"the database cannot be written ({exc}): free space on the disk holding "
                        f"{self._path.parent}"
                    ) from None
                raise
            self.write_error = None
            return result

        return await self._submit(transaction)

    async def probe_write(self) -> str | None:
        """A tiny write, for readiness: None when the database takes writes, else why not."""

        def touch(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT OR REPLACE INTO health (id, checked) VALUES (1, ?)", (utc_now_iso(),))

        try:
            await self.run(touch)
        except (InsufficientStorageError, sqlite3.Error) as exc:
            return self.write_error or f"{type(exc).__name__}: {exc}"
        return None

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
            raise DatabaseUnusableError(
                f"database {self._path} has schema version {version}, newer than this streamd "
                f"({SCHEMA_VERSION}); upgrade streamd or point storage.data_dir elsewhere"
            )
        # Garbage in the middle of the file would otherwise pass as a database that serves reads and
        # fails every write: check the pages before trusting it.
        problem = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
        if problem != "ok":
            conn.close()
            raise sqlite3.DatabaseError(f"quick_check: {problem}")
        with conn:
            conn.executescript(_SCHEMA)
            _migrate(conn, version)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        self._conn = conn

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
