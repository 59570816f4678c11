"""Schema migrations with Alembic: bring a database to the head revision this streamd ships, adopt SQLite
files from before Alembic, and refuse a database migrated by a newer streamd. Runs on the database thread.

Revisions live in `versions/`; `env.py` runs them inside the caller's transaction, so on PostgreSQL a
migration and its version stamp commit together, under an advisory lock that makes a second node
starting at the same moment wait and then find nothing to do.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from streamd.errors import DatabaseUnusableError
from streamd.store.migrations import legacy

logger = logging.getLogger(__name__)


class _QuietContext(logging.Filter):
    """Alembic names its dialect each time it looks at a database; keep only its "Running upgrade" lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(("Context impl", "Will assume"))


logging.getLogger("alembic.runtime.migration").addFilter(_QuietContext())

SCRIPT_DIR = Path(__file__).parent
BASELINE = "0001"
# Written to an SQLite file's user_version once Alembic manages it: a streamd from before Alembic
# (which knows versions up to 5) then refuses the file instead of running on a schema it does not know.
ALEMBIC_USER_VERSION = 6
# pg_advisory_xact_lock key held while migrating ("streamd" in ASCII).
_MIGRATION_LOCK = 0x73747265616D64


@dataclass(frozen=True, slots=True)
class MigrationResult:
    before: str | None  # the revision found (None: an empty database)
    after: str
    adopted: bool  # an SQLite file from before Alembic was stamped


def _config(conn: sa.Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_DIR))
    config.attributes["connection"] = conn
    return config


def head_revision() -> str:
    head = ScriptDirectory(str(SCRIPT_DIR)).get_current_head()
    assert head is not None
    return head


def current_revision(conn: sa.Connection) -> str | None:
    heads = MigrationContext.configure(conn).get_current_heads()
    return heads[0] if heads else None


def upgrade(conn: sa.Connection, where: str) -> MigrationResult:
    """Migrate to head inside the caller's transaction; `where` names the database in errors.

    On SQLite the caller turns foreign keys off around the transaction (SQLite ignores the pragma inside
    one): migrations that copy a table (Alembic's batch mode, the adoption of old files) drop the old
    table, which would otherwise cascade into the rows of its children.
    """
    sqlite = conn.dialect.name == "sqlite"
    if not sqlite:
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATION_LOCK)))
    adopted = sqlite and _adopt_legacy_sqlite(conn, where)
    before = current_revision(conn)
    script = ScriptDirectory(str(SCRIPT_DIR))
    known = {revision.revision for revision in script.walk_revisions()}
    if before is not None and before not in known:
        raise DatabaseUnusableError(
            f"database {where} has schema revision {before!r}, which this streamd does not know (it "
            f"knows up to {script.get_current_head()!r}): a newer streamd migrated it. Upgrade streamd, "
            "or point it at another database"
        )
    command.upgrade(_config(conn), "head")
    after = current_revision(conn)
    assert after is not None
    if sqlite:
        conn.exec_driver_sql(f"PRAGMA user_version = {ALEMBIC_USER_VERSION}")
    if before != after:
        logger.info("database %s migrated from revision %s to %s", where, before or "(empty)", after)
    return MigrationResult(before, after, adopted)


def _adopt_legacy_sqlite(conn: sa.Connection, where: str) -> bool:
    """Bring a pre-Alembic file (user_version 1..5) to version 5 and stamp it at the baseline."""
    version = conn.exec_driver_sql("PRAGMA user_version").scalar_one()
    if version > ALEMBIC_USER_VERSION:
        raise DatabaseUnusableError(
            f"database {where} has schema version {version}, newer than this streamd "
            f"({ALEMBIC_USER_VERSION}); upgrade streamd or point storage.data_dir elsewhere"
        )
    if not 1 <= version <= legacy.LAST_VERSION or sa.inspect(conn).has_table("alembic_version"):
        return False
    legacy.upgrade_to_v5(conn, version)
    legacy.rebuild_as_baseline(conn, lambda: command.upgrade(_config(conn), BASELINE))
    logger.info(
        "database %s (schema version %d, before Alembic) adopted at revision %s", where, version, BASELINE
    )
    return True
