"""One schema, one set of migrations (Alembic) for SQLite and PostgreSQL: SQLite files from before Alembic
are adopted with their rows, a database migrated by a newer streamd is refused, nodes starting together
migrate once, and a read-only PostgreSQL shows like a full disk."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from streamd.entities import Position
from streamd.errors import DatabaseUnusableError, InsufficientStorageError
from streamd.store.chains import ChainRepository
from streamd.store.db import Database
from streamd.store.migrations import ALEMBIC_USER_VERSION, head_revision
from streamd.store.networks import NetworkRepository
from streamd.store.recognition import RecognitionRepository
from streamd.store.schema import chains, metadata
from streamd.store.streams import StreamRepository
from streamd.store.tasks import TaskRepository
from tests.conftest import ON_BOTH_DATABASES
from tests.factories.daemon import free_port

REPO = Path(__file__).resolve().parents[1]
HEAD = head_revision()

# The schema exactly as streamd wrote it before Alembic (streamd/store/db.py at SCHEMA_VERSION 5), kept
# here verbatim so that this test does not depend on the adoption code it checks.
TODAY_DDL = """
CREATE TABLE IF NOT EXISTS tasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, subject_id INTEGER,
    status TEXT NOT NULL CHECK (status IN ('pending', 'success', 'error')), error TEXT, data TEXT,
    date_created TEXT NOT NULL, date_updated TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS networks (
    id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, description TEXT NOT NULL,
    metadata TEXT NOT NULL, framework TEXT NOT NULL, preprocessing TEXT NOT NULL,
    postprocessings TEXT NOT NULL, files TEXT NOT NULL, task_id INTEGER NOT NULL REFERENCES tasks(id),
    deployed INTEGER NOT NULL DEFAULT 0, create_date TEXT NOT NULL, update_date TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS recognition_specs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, description TEXT NOT NULL,
    metadata TEXT NOT NULL, outputs TEXT NOT NULL,
    current_version_id INTEGER REFERENCES recognition_versions(id) ON DELETE SET NULL,
    create_date TEXT NOT NULL, update_date TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS recognition_versions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    spec_id INTEGER NOT NULL REFERENCES recognition_specs(id) ON DELETE CASCADE,
    network_id INTEGER NOT NULL REFERENCES networks(id) ON DELETE CASCADE,
    post_processings TEXT NOT NULL, create_date TEXT NOT NULL, update_date TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS recognition_versions_network ON recognition_versions(network_id);
CREATE INDEX IF NOT EXISTS recognition_versions_spec ON recognition_versions(spec_id);
CREATE TABLE IF NOT EXISTS streams (
    id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, definition TEXT NOT NULL,
    desired TEXT NOT NULL, run INTEGER NOT NULL DEFAULT 0, checkpoint TEXT,
    create_date TEXT NOT NULL, update_date TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS health (id INTEGER PRIMARY KEY, checked TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chains (
    name TEXT PRIMARY KEY, definition TEXT NOT NULL, create_date TEXT NOT NULL, update_date TEXT NOT NULL);
"""
D1, D2 = "2024-05-01T10:00:00.000000Z", "2024-05-02T11:00:00.000000Z"
CHECKPOINT = '{"frame_index": 7, "pts_s": 0.25, "media_pts_s": 0.25}'
PREPROCESSING = '{"inputs":[{"tensor_name":"x:0","image":{"target_size":"8x8"}}],"batched_output":true}'


def make_todays_database(path: Path, *, version: int = 5) -> None:
    """A file as the pre-Alembic streamd left it, rows written with its SQL (version 4: no run/checkpoint)."""
    ddl = TODAY_DDL
    if version < 5:
        ddl = ddl.replace("run INTEGER NOT NULL DEFAULT 0, checkpoint TEXT,", "")
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as conn:
        conn.executescript(ddl)
        insert = "INSERT INTO tasks (kind, subject_id, status, data, date_created, date_updated) VALUES "
        conn.execute(insert + "('network_deployment', 1, 'success', '{\"network_id\": 1}', ?, ?)", (D1, D2))
        conn.execute(insert + "('inference', NULL, 'pending', NULL, ?, ?)", (D1, D1))
        conn.execute(insert + "('inference', NULL, 'error', NULL, ?, ?)", (D1, D1))
        conn.execute("DELETE FROM tasks WHERE id = 3")  # AUTOINCREMENT: id 3 must never come back
        conn.execute(
            "INSERT INTO networks (name, description, metadata, framework, preprocessing, postprocessings, "
            "files, task_id, deployed, create_date, update_date) VALUES "
            "('cats', 'd', '{\"a\": 1}', 'tensorflow-1.x', ?, '[]', '[\"saved_model.pb\"]', 1, 1, ?, ?)",
            (PREPROCESSING, D1, D2),
        )
        conn.execute(
            "INSERT INTO recognition_specs (name, description, metadata, outputs, create_date, update_date) "
            "VALUES ('colours', '', '{}', '[{\"labels\": {\"roi\": \"NONE\", \"labels\": []}}]', ?, ?)",
            (D1, D1),
        )
        conn.execute(
            "INSERT INTO recognition_versions (spec_id, network_id, post_processings, create_date, "
            "update_date) VALUES (1, 1, '[]', ?, ?)",
            (D1, D1),
        )
        conn.execute("UPDATE recognition_specs SET current_version_id = 1")
        if version >= 5:
            conn.execute(
                "INSERT INTO streams (name, definition, desired, run, checkpoint, create_date, update_date) "
                "VALUES ('cam', '{\"chain\": \"whole\"}', 'paused', 2, ?, ?, ?)",
                (CHECKPOINT, D1, D1),
            )
        else:
            conn.execute(
                "INSERT INTO streams (name, definition, desired, create_date, update_date) "
                "VALUES ('cam', '{\"chain\": \"whole\"}', 'paused', ?, ?)",
                (D1, D1),
            )
        conn.execute("INSERT INTO chains VALUES ('whole', '{\"calls\": []}', ?, ?)", (D1, D2))
        conn.execute(f"PRAGMA user_version = {version}")


def file_state(path: Path) -> tuple[int, list[tuple[Any, ...]]]:
    with sqlite3.connect(path) as conn:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        return version, conn.execute("SELECT version_num FROM alembic_version").fetchall()


async def test_a_database_made_before_alembic_is_adopted_with_every_row(tmp_path: Path) -> None:
    path = tmp_path / "data" / "streamd.sqlite3"
    await asyncio.to_thread(make_todays_database, path)
    db = Database(path)
    await db.open()
    try:
        assert db.migration is not None and (db.migration.before, db.migration.adopted) == ("0001", True)
        network = await NetworkRepository(db, tmp_path / "data").get(1)
        assert (network.name, network.metadata, network.deployed, network.files) == (
            "cats",
            {"a": 1},
            True,
            ["saved_model.pb"],
        )
        assert (network.task_id, network.create_date, network.update_date) == (1, D1, D2)
        tasks = TaskRepository(db)
        deployment = await tasks.get(1)
        assert (deployment.status, deployment.data, deployment.subject_id) == (
            "success",
            {"network_id": 1},
            1,
        )
        assert (await tasks.page(None, 0, 10))[0] == 2
        [stream] = await StreamRepository(db).all()
        assert (stream.stream_id, stream.name, stream.desired, stream.run) == (1, "cam", "paused", 2)
        assert stream.checkpoint == Position(7, 0.25, 0.25)
        assert (await ChainRepository(db).get("whole")).definition == {"calls": []}
        version = await RecognitionRepository(db).version(1)
        assert (version.spec_name, version.network_name) == ("colours", "cats")
        # New rows continue the old ids; a deleted id is not reused.
        assert await tasks.create("inference") == 4
        # Foreign keys still act: deleting the network takes its recognition version along.
        await NetworkRepository(db, tmp_path / "data").delete(1)
        assert await RecognitionRepository(db).version_or_none(1) is None
        assert (await RecognitionRepository(db).spec(1)).current_version_id is None
    finally:
        await db.close()
    assert await asyncio.to_thread(file_state, path) == (ALEMBIC_USER_VERSION, [(HEAD,)])


async def test_a_version_4_file_gets_the_stream_columns_before_adoption(tmp_path: Path) -> None:
    path = tmp_path / "streamd.sqlite3"
    await asyncio.to_thread(make_todays_database, path, version=4)
    db = Database(path)
    await db.open()
    try:
        [stream] = await StreamRepository(db).all()
        assert (stream.name, stream.run, stream.checkpoint) == ("cam", 0, None)
        assert await StreamRepository(db).start_run(stream.stream_id) == 1
    finally:
        await db.close()


def schema_differences(conn: sa.Connection) -> list[Any]:
    return compare_metadata(MigrationContext.configure(conn), metadata)


async def migrated(db: Database) -> list[Any]:
    await db.open()
    try:
        return await db.run(schema_differences)
    finally:
        await db.close()


@ON_BOTH_DATABASES
async def test_the_migrations_build_exactly_the_tables_streamd_queries(
    tmp_path: Path, database_url: str | None
) -> None:
    assert await migrated(Database(tmp_path / "streamd.sqlite3", database_url)) == []


async def test_an_adopted_file_has_the_very_tables_a_new_one_gets(tmp_path: Path) -> None:
    path = tmp_path / "streamd.sqlite3"
    await asyncio.to_thread(make_todays_database, path)
    assert await migrated(Database(path)) == []


async def set_revision(db: Database, revision: str) -> None:
    await db.open()
    await db.run(lambda conn: conn.exec_driver_sql(f"UPDATE alembic_version SET version_num = '{revision}'"))
    await db.close()


@ON_BOTH_DATABASES
async def test_a_database_migrated_by_a_newer_streamd_is_refused(
    tmp_path: Path, database_url: str | None
) -> None:
    path = tmp_path / "streamd.sqlite3"
    await set_revision(Database(path, database_url), "9999")
    with pytest.raises(DatabaseUnusableError) as raised:
        await Database(path, database_url).open()
    message = raised.value.message
    assert "has schema revision '9999', which this streamd does not know" in message
    assert f"(it knows up to '{HEAD}')" in message and "Upgrade streamd" in message


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamd", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )


@ON_BOTH_DATABASES
def test_streamd_migrate_says_what_it_did_and_exits_3_on_a_newer_schema(
    tmp_path: Path, database_url: str | None
) -> None:
    env = {"STREAMD_STORAGE__DATABASE_URL": database_url or ""}
    data = ["--data-dir", str(tmp_path)]
    first, again = run_cli("migrate", *data, env=env), run_cli("migrate", *data, env=env)
    assert first.returncode == 0 and again.returncode == 0, first.stderr + again.stderr
    where = str(tmp_path / "streamd.sqlite3") if database_url is None else database_url
    assert f"database {where}: migrated from (empty) to revision {HEAD}" in first.stderr
    assert f"database {where}: already at revision {HEAD}" in again.stderr
    asyncio.run(set_revision(Database(tmp_path / "streamd.sqlite3", database_url), "9999"))
    newer = run_cli("migrate", *data, env=env)
    assert newer.returncode == 3 and "Traceback" not in newer.stderr
    [line] = [line for line in newer.stderr.splitlines() if line.startswith("streamd: ")]
    assert "has schema revision '9999'" in line


async def test_an_unreachable_postgresql_is_refused_at_start_without_its_password() -> None:
    url = f"postgresql://streamd:s3cret@127.0.0.1:{free_port()}/streamd?connect_timeout=2"
    with pytest.raises(DatabaseUnusableError) as raised:
        await Database(Path("unused"), url).open()
    message = raised.value.message
    assert message.startswith(f"database postgresql://streamd:***@127.0.0.1:{url.split(':')[3]}")
    assert "cannot be used (OperationalError: connection failed" in message and "s3cret" not in message
    assert "\n" not in message


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_nodes_starting_together_migrate_once(tmp_path: Path, database_url: str) -> None:
    nodes = [Database(tmp_path / "unused", database_url) for _ in range(3)]
    await asyncio.gather(*(node.open() for node in nodes))
    try:
        results = [node.migration for node in nodes]
        assert sorted((r.before or "", r.after) for r in results if r) == [
            ("", HEAD),
            (HEAD, HEAD),
            (HEAD, HEAD),
        ]
        stamps = await nodes[0].run(lambda conn: conn.exec_driver_sql("SELECT * FROM alembic_version").all())
        assert stamps == [(HEAD,)]
    finally:
        await asyncio.gather(*(node.close() for node in nodes))


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_read_only_postgresql_is_a_storage_failure_until_it_takes_writes_again(
    tmp_path: Path, database_url: str
) -> None:
    db = Database(tmp_path / "unused", database_url)
    await db.open()
    try:
        # The session's next transactions are read-only, as on a standby.
        await db.run(lambda conn: conn.exec_driver_sql("SET SESSION default_transaction_read_only = on"))
        problem = await db.probe_write()
        assert problem is not None and "read-only transaction" in problem
        with pytest.raises(InsufficientStorageError, match=r"point storage\.database_url at its primary"):
            await db.run(
                lambda conn: conn.execute(
                    chains.insert().values(name="x", definition="{}", create_date="", update_date="")
                )
            )
        await db.run(lambda conn: conn.exec_driver_sql("SET SESSION default_transaction_read_only = off"))
        assert await db.probe_write() is None and db.write_error is None
    finally:
        await db.close()


def test_database_url_takes_postgresql_only_and_never_shows_its_password(tmp_path: Path) -> None:
    secret = {"STREAMD_STORAGE__DATABASE_URL": "postgresql://streamd:s3cret@db.example/streamd"}
    shown = run_cli("check-config", "--data-dir", str(tmp_path), env=secret)
    assert shown.returncode == 0 and "s3cret" not in shown.stdout + shown.stderr
    assert '"database_url": "**********"' in shown.stdout
    wrong = run_cli("check-config", env={"STREAMD_STORAGE__DATABASE_URL": "mysql://u:s3cret@db/x"})
    assert wrong.returncode == 2 and "s3cret" not in wrong.stderr
    assert "must be a postgresql:// URL (the scheme is 'mysql')" in wrong.stderr
    blank = run_cli("check-config", "--data-dir", str(tmp_path), env={"STREAMD_STORAGE__DATABASE_URL": " "})
    assert blank.returncode == 0 and '"database_url": null' in blank.stdout
