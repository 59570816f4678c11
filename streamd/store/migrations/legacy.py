"""SQLite files from before Alembic (`PRAGMA user_version` 1 to 5): brought to version 5 exactly as the
hand-written migrations did, then rebuilt as revision 0001 creates its tables, rows and id sequences
copied. Frozen: nothing here changes again; new schema changes are Alembic revisions. Runs on the
database thread, inside the migration's transaction, with foreign keys off.

Why rebuild rather than only stamp: the old DDL declared its foreign keys inline, which SQLAlchemy's
SQLite reflection reads without their ON DELETE actions; a later Alembic batch migration (which copies a
table through reflection) would then silently drop the cascades of adopted files only.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa

LAST_VERSION = 5  # the last user_version the hand-written migrations wrote
# Version 5's tables and their columns, parents first (as revision 0001 creates them).
TABLES = {
    "tasks": "id, kind, subject_id, status, error, data, date_created, date_updated",
    "networks": "id, name, description, metadata, framework, preprocessing, postprocessings, files, "
    "task_id, deployed, create_date, update_date",
    "recognition_specs": "id, name, description, metadata, outputs, current_version_id, create_date, "
    "update_date",
    "recognition_versions": "id, spec_id, network_id, post_processings, create_date, update_date",
    "streams": "id, name, definition, desired, run, checkpoint, create_date, update_date",
    "health": "id, checked",
    "chains": "name, definition, create_date, update_date",
}

SCHEMA_V5 = """
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


def upgrade_to_v5(conn: sa.Connection, version: int) -> None:
    """Create the tables a file of `version` lacks and add the columns added since (one transaction)."""
    for statement in SCHEMA_V5.split(";"):  # sqlite3's executescript would commit the transaction
        if statement.strip():
            conn.exec_driver_sql(statement)
    columns = {row[1] for row in conn.exec_driver_sql("PRAGMA table_info(streams)")}
    if version < 5 and "run" not in columns:  # 5: a stream's run counter and resume checkpoint
        conn.exec_driver_sql("ALTER TABLE streams ADD COLUMN run INTEGER NOT NULL DEFAULT 0")
        conn.exec_driver_sql("ALTER TABLE streams ADD COLUMN checkpoint TEXT")


def rebuild_as_baseline(conn: sa.Connection, create_baseline: Callable[[], None]) -> None:
    """Move version 5's tables aside, let `create_baseline` create revision 0001's, copy the rows and the
    AUTOINCREMENT sequences (ids of deleted rows stay unused), drop the old tables. Foreign keys must be
    off (a dropped parent would otherwise cascade into its children's rows)."""
    assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 0
    # Renaming must not rewrite the references of other tables to the renamed one.
    conn.exec_driver_sql("PRAGMA legacy_alter_table = ON")
    conn.exec_driver_sql("DROP INDEX IF EXISTS recognition_versions_network")
    conn.exec_driver_sql("DROP INDEX IF EXISTS recognition_versions_spec")
    for table in TABLES:
        conn.exec_driver_sql(f"ALTER TABLE {table} RENAME TO legacy_{table}")
    conn.exec_driver_sql("PRAGMA legacy_alter_table = OFF")
    create_baseline()
    for table, columns in TABLES.items():
        conn.exec_driver_sql(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM legacy_{table}")
        conn.exec_driver_sql("DELETE FROM sqlite_sequence WHERE name = ?", (table,))
        conn.exec_driver_sql(
            "INSERT INTO sqlite_sequence (name, seq) SELECT ?, seq FROM sqlite_sequence WHERE name = ?",
            (table, f"legacy_{table}"),
        )
        conn.exec_driver_sql("DELETE FROM sqlite_sequence WHERE name = ?", (f"legacy_{table}",))
        conn.exec_driver_sql(f"DROP TABLE legacy_{table}")
