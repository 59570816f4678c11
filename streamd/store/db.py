"""The database, SQLite (a file under data_dir, the default) or PostgreSQL (`storage.database_url`),
reached from the loop only through `run()`: every statement runs on the one "streamd-db" thread.

Each callable handed to `run()` is one transaction on a SQLAlchemy Core connection, so the event loop
never waits on the database, the connection is never shared between threads, and callables run in the
order they were submitted. SQLite keeps WAL mode; PostgreSQL goes through psycopg 3 (docs/design.md,
Storage, says why one thread there too).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event

from streamd.errors import DatabaseUnusableError, InsufficientStorageError
from streamd.store import migrations
from streamd.store.schema import health

logger = logging.getLogger(__name__)

T = TypeVar("T")

# PostgreSQL error classes that mean "cannot be written" rather than "bad query": 53100 disk_full,
# 25006 read_only_sql_transaction (a standby, or default_transaction_read_only).
_PG_WRITE_FAILURES = frozenset({"53100", "25006"})
_PG_CONNECT_TIMEOUT_S = 10
RESERVE_BYTES = 1024 * 1024  # SQLite: room for a few deletes' worth of pages on a full disk


def _write_failure(exc: sa.exc.DBAPIError) -> bool:
    if isinstance(exc.orig, sqlite3.OperationalError):
        text = str(exc.orig).lower()
        return "disk is full" in text or "readonly" in text or "disk i/o error" in text
    return getattr(exc.orig, "sqlstate", None) in _PG_WRITE_FAILURES


def _cause(exc: BaseException) -> BaseException:
    """The driver's exception under SQLAlchemy's wrapper: its type and text are what a person can act on."""
    return exc.orig if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None else exc


def postgres_url(url: str) -> sa.URL:
    """`postgresql://` and `postgres://` as psycopg 3 URLs (SQLAlchemy's default driver is psycopg2)."""
    parsed = sa.make_url(url)
    return (
        parsed.set(drivername="postgresql+psycopg")
        if parsed.drivername in ("postgresql", "postgres")
        else parsed
    )


def utc_now_iso() -> str:
    """ISO 8601 with microseconds and `Z`, as the Deepomatic API writes dates."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Database:
    """Owns the engine (one connection) and the one thread allowed to use it.

    `url` None means the SQLite file at `path`; otherwise a PostgreSQL URL.
    """

    def __init__(
        self, path: Path, url: str | None = None, *, thread_name: str = "streamd-db", migrate: bool = True
    ) -> None:
        self._path = path
        self._thread_name = thread_name
        self._migrate = migrate  # False: a second connection (cluster leases) to a database already migrated
        self.connect_timeout_s: float = _PG_CONNECT_TIMEOUT_S
        self.statement_timeout_s: float | None = None
        self._url = None if url is None else postgres_url(url)
        self.dialect = "sqlite" if url is None else "postgresql"
        # How logs and errors name the database: never with its password.
        self.where = str(path) if url is None else sa.make_url(url).render_as_string(hide_password=True)
        self._executor: ThreadPoolExecutor | None = None
        self._engine: sa.Engine | None = None
        self.migration: migrations.MigrationResult | None = None
        self.write_error: str | None = None  # set while writes fail (read-only file, full disk)

    async def open(self) -> None:
        """Connect, check, and migrate to the schema this streamd knows (DatabaseUnusableError if not)."""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self._thread_name)
        try:
            await self._submit(self._connect)
        except DatabaseUnusableError:
            await self.close()
            raise
        except (sa.exc.SQLAlchemyError, sqlite3.Error, OSError) as exc:
            await self.close()
            raise DatabaseUnusableError(self._unusable(_cause(exc))) from None
        logger.info("database open at %s", self.where)

    async def close(self) -> None:
        if self._executor is None:
            return
        await self._submit(self._disconnect)
        # The thread is idle now; joining it would block the loop for nothing.
        self._executor.shutdown(wait=False)
        self._executor = None

    async def run(self, fn: Callable[[sa.Connection], T]) -> T:
        """Run `fn(conn)` on the database thread inside one transaction."""

        def transaction() -> T:
            assert self._engine is not None
            try:
                with self._engine.begin() as conn:
                    result = fn(conn)
            except sa.exc.DBAPIError as exc:
                if _write_failure(exc):
                    cause = _cause(exc)
                    self.write_error = f"{type(cause).__name__}: {cause}"
                    raise InsufficientStorageError(
                        f"the database cannot be written ({' '.join(str(cause).split())}): {self._remedy}"
                    ) from None
                raise
            self.write_error = None
            return result

        return await self._submit(transaction)

    async def probe_write(self) -> str | None:
        """A tiny write, for readiness: None when the database takes writes, else why not."""

        def touch(conn: sa.Connection) -> None:
            insert = dialect_insert(conn)(health).values(id=1, checked=utc_now_iso())
            conn.execute(
                insert.on_conflict_do_update(index_elements=["id"], set_={"checked": insert.excluded.checked})
            )

        try:
            await self.run(touch)
        except (InsufficientStorageError, sa.exc.SQLAlchemyError) as exc:
            return self.write_error or f"{type(_cause(exc)).__name__}: {_cause(exc)}"
        return None

    async def page(
        self, query: sa.Select[Any], *, offset: int, limit: int
    ) -> tuple[int, list[sa.RowMapping]]:
        """One page of `query`'s rows (it carries its order) and their total count, in one transaction."""

        def read(conn: sa.Connection) -> tuple[int, list[sa.RowMapping]]:
            counted = sa.select(sa.func.count()).select_from(query.order_by(None).subquery())
            count = conn.execute(counted).scalar_one()
            rows = conn.execute(query.limit(limit).offset(offset)).mappings().all()
            return count, list(rows)

        return await self.run(read)

    @property
    def _remedy(self) -> str:
        if self._url is None:
            return f"free space on the disk holding {self._path.parent}"
        return "free space on the PostgreSQL server's disk, or point storage.database_url at its primary"

    def _unusable(self, exc: BaseException) -> str:
        """One line: which database, what is wrong, what to do."""
        reason = " ".join(str(exc).split())  # quick_check and libpq list problems on several lines
        if self._url is not None:
            return (
                f"database {self.where} cannot be used ({type(exc).__name__}: {reason}). Check that the "
                "server is running and reachable, and that storage.database_url names an existing database "
                "its user may create tables in"
            )
        return (
            f"database {self.where} cannot be used ({type(exc).__name__}: {reason}). Restore it from a "
            "backup, or move it aside (with its -wal and -shm files) to start with an empty one; if it is "
            "read-only, make it and its directory writable"
        )

    async def _submit(self, fn: Callable[[], T]) -> T:
        if self._executor is None:
            raise RuntimeError("database is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def _connect(self) -> None:
        self._engine = (
            self._sqlite_engine()
            if self._url is None
            else self._postgres_engine(self._url, self.connect_timeout_s, self.statement_timeout_s)
        )
        self._make_reserve()
        with self._engine.connect() as conn:
            if not self._migrate:
                conn.exec_driver_sql("SELECT 1")
            elif self._url is None:
                self._migrate_sqlite(conn)
            else:
                with conn.begin():
                    self.migration = migrations.upgrade(conn, self.where)

    def _migrate_sqlite(self, conn: sa.Connection) -> None:
        raw = conn.connection.driver_connection
        assert isinstance(raw, sqlite3.Connection)
        raw.execute("PRAGMA foreign_keys=OFF")  # see migrations.upgrade; only outside a transaction
        try:
            with conn.begin():
                # Garbage in the middle of the file would otherwise pass as a database that serves reads
                # and fails every write: check the pages before trusting it.
                problem = conn.exec_driver_sql("PRAGMA quick_check(1)").scalar_one()
                if problem != "ok":
                    raise sqlite3.DatabaseError(f"quick_check: {problem}")
                self.migration = migrations.upgrade(conn, self.where)
                broken = conn.exec_driver_sql("PRAGMA foreign_key_check").first()
                if broken is not None:
                    raise sqlite3.DatabaseError(f"foreign_key_check after migrating: {tuple(broken)}")
        finally:
            raw.execute("PRAGMA foreign_keys=ON")

    def _sqlite_engine(self) -> sa.Engine:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        # One connection, kept for the life of the engine (StaticPool), used only on this thread.
        engine = sa.create_engine(sa.URL.create("sqlite", database=str(self._path)), poolclass=sa.StaticPool)

        @event.listens_for(engine, "connect")
        def configure(dbapi_conn: sqlite3.Connection, _record: object) -> None:
            # The driver's own transaction handling begins only before DML; SQLAlchemy's "begin" below
            # makes every callable one real transaction, reads and DDL (migrations) included.
            dbapi_conn.isolation_level = None
            for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON"):
                dbapi_conn.execute(f"PRAGMA {pragma}")

        @event.listens_for(engine, "begin")
        def begin(conn: sa.Connection) -> None:
            conn.exec_driver_sql("BEGIN")

        return engine

    @staticmethod
    def _postgres_engine(
        url: sa.URL, connect_timeout_s: float, statement_timeout_s: float | None
    ) -> sa.Engine:
        connect_args: dict[str, Any] = {"application_name": "streamd"}
        if "connect_timeout" not in url.query:
            connect_args["connect_timeout"] = max(1, round(connect_timeout_s))
        if statement_timeout_s is not None:
            connect_args["options"] = f"-c statement_timeout={round(statement_timeout_s * 1000)}"
        # A connection that died with the server or the network is noticed before use (pre-ping) and
        # replaced; keepalives bound how long a statement waits on a peer that vanished.
        connect_args.update(keepalives=1, keepalives_idle=10, keepalives_interval=5, keepalives_count=3)
        return sa.create_engine(
            url, pool_size=1, max_overflow=0, pool_pre_ping=True, connect_args=connect_args
        )

    @property
    def reserve_path(self) -> Path | None:
        """SQLite: a small file of zeros beside the database, given up so that a delete can still be
        written on a full disk (a delete frees space only once it is written). None on PostgreSQL."""
        return None if self._url is not None else self._path.with_name(self._path.name + ".reserve")

    def _make_reserve(self) -> None:
        path = self.reserve_path
        if path is None or path.exists():
            return
        try:
            with path.open("wb") as handle:
                handle.write(b"\0" * RESERVE_BYTES)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:  # a disk already full: no reserve until a later start
            path.unlink(missing_ok=True)
            logger.warning("no space for the database's reserve file %s: %s", path, exc)

    async def free_reserve(self) -> bool:
        """Give up the reserve (a full disk refused a write that frees space); False if there is none.
        Made again at the next start."""
        path = self.reserve_path
        if path is None or not await asyncio.to_thread(path.exists):
            return False
        await asyncio.to_thread(path.unlink, True)
        logger.warning("the disk is full: %s given up so that a delete can be written", path)
        return True

    def _disconnect(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


def inserted_id(result: sa.CursorResult[Any]) -> int:
    """The id an INSERT of one row gave it (None from SQLAlchemy only for an executemany)."""
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def dialect_insert(conn: sa.Connection) -> Callable[[sa.Table], Any]:
    """The dialect's INSERT, which has ON CONFLICT on both SQLite and PostgreSQL."""
    if conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert
    from sqlalchemy.dialects.postgresql import insert as postgresql_insert

    return postgresql_insert
