"""The tables, as SQLAlchemy Core objects: what the repositories query, on SQLite and PostgreSQL alike.

Migrations (`streamd/store/migrations/versions/`) create and change the tables; this module must
describe the schema their head leaves (tests/test_store_migrations.py compares the two). No I/O here.
"""

from __future__ import annotations

from typing import TypedDict

import sqlalchemy as sa

metadata = sa.MetaData()


class _TableOptions(TypedDict):
    sqlite_autoincrement: bool


# Ids: AUTOINCREMENT on SQLite (never reused, as before), identity columns on PostgreSQL.
_IDS: _TableOptions = {"sqlite_autoincrement": True}


def _id() -> sa.Column[int]:
    return sa.Column("id", sa.Integer, sa.Identity(), primary_key=True)


def _text(name: str, *, nullable: bool = False) -> sa.Column[str]:
    # JSON documents and ISO 8601 dates are TEXT on both dialects: the dates are fixed-width, so they
    # compare and sort as text (task retention relies on it).
    return sa.Column(name, sa.Text, nullable=nullable)


tasks = sa.Table(
    "tasks",
    metadata,
    _id(),
    _text("kind"),
    sa.Column("subject_id", sa.Integer),
    _text("status"),
    _text("error", nullable=True),
    _text("data", nullable=True),
    _text("date_created"),
    _text("date_updated"),
    _text("node", nullable=True),  # cluster mode: the node whose restart may fail it (revision 0002)
    sa.CheckConstraint("status IN ('pending', 'success', 'error')", name="tasks_status"),
    **_IDS,
)

networks = sa.Table(
    "networks",
    metadata,
    _id(),
    _text("name"),
    _text("description"),
    _text("metadata"),
    _text("framework"),
    _text("preprocessing"),
    _text("postprocessings"),
    _text("files"),
    sa.Column("task_id", sa.Integer, sa.ForeignKey("tasks.id"), nullable=False),
    sa.Column("deployed", sa.Boolean, nullable=False, server_default=sa.false()),
    _text("create_date"),
    _text("update_date"),
    **_IDS,
)

recognition_specs = sa.Table(
    "recognition_specs",
    metadata,
    _id(),
    _text("name"),
    _text("description"),
    _text("metadata"),
    _text("outputs"),
    sa.Column(
        "current_version_id",
        sa.Integer,
        # The two recognition tables refer to each other: PostgreSQL gets this key after both exist.
        sa.ForeignKey(
            "recognition_versions.id",
            ondelete="SET NULL",
            use_alter=True,
            name="recognition_specs_current_version_id_fkey",
        ),
    ),
    _text("create_date"),
    _text("update_date"),
    **_IDS,
)

recognition_versions = sa.Table(
    "recognition_versions",
    metadata,
    _id(),
    sa.Column(
        "spec_id", sa.Integer, sa.ForeignKey("recognition_specs.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("network_id", sa.Integer, sa.ForeignKey("networks.id", ondelete="CASCADE"), nullable=False),
    _text("post_processings"),
    _text("create_date"),
    _text("update_date"),
    sa.Index("recognition_versions_network", "network_id"),
    sa.Index("recognition_versions_spec", "spec_id"),
    **_IDS,
)

streams = sa.Table(
    "streams",
    metadata,
    _id(),
    _text("name"),
    _text("definition"),
    _text("desired"),
    sa.Column("run", sa.Integer, nullable=False, server_default=sa.text("0")),
    _text("checkpoint", nullable=True),
    _text("create_date"),
    _text("update_date"),
    # Cluster mode (revision 0002; unused on SQLite): the lease, by the database's clock. `epoch` grows
    # at each claim and fences the owner's writes; `status` is the owner's last published status (JSON).
    _text("owner", nullable=True),
    sa.Column("epoch", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
    _text("status", nullable=True),
    sa.Column("status_at", sa.DateTime(timezone=True), nullable=True),
    **_IDS,
)

# Cluster mode: one row per node, its heartbeat by the database's clock.
nodes = sa.Table(
    "nodes",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    _text("address"),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("max_streams", sa.Integer, nullable=False),
    sa.Column("streams", sa.Integer, nullable=False, server_default=sa.text("0")),
)

# Cluster mode (revision 0004; unused on SQLite): the spools of network sinks (webhook, MQTT), so that a
# stream's next owner delivers what a dead node had accepted. One row per record, in `seq` order per
# sink, deleted once delivered; `epoch` is the writer's lease. A stream's rows go with its row.
sink_spool = sa.Table(
    "sink_spool",
    metadata,
    sa.Column(
        "stream_id",
        sa.Integer,
        sa.ForeignKey("streams.id", ondelete="CASCADE"),
        primary_key=True,
        autoincrement=False,
    ),
    sa.Column("sink_index", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("epoch", sa.BigInteger, nullable=False),
    sa.Column("record", sa.LargeBinary, nullable=False),
)

# One row (id 1) that the readiness probe rewrites to prove the database takes writes.
health = sa.Table(
    "health",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    _text("checked"),
)

# Chains are listed by name: byte order on PostgreSQL too (collation "C"), as SQLite sorts them.
CHAIN_NAME = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")

chains = sa.Table(
    "chains",
    metadata,
    sa.Column("name", CHAIN_NAME, primary_key=True),
    _text("definition"),
    _text("create_date"),
    _text("update_date"),
)

# Cluster mode (revision 0003; empty on SQLite): network files in the database, content-addressed, so
# that a network registered on one node can be fetched by every other (streamd/store/blobs.py).
# A blob is one file's content, named by its sha256 (hex); its chunks hold it in order. A blob row
# and its chunks commit together, so a blob that exists is complete.
blobs = sa.Table(
    "blobs",
    metadata,
    sa.Column("sha256", sa.Text, primary_key=True),
    sa.Column("size_bytes", sa.BigInteger, nullable=False),
    # When it was stored (database clock): the sweep spares unreferenced blobs younger than an hour,
    # which an upload in progress is about to refer to.
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)

blob_chunks = sa.Table(
    "blob_chunks",
    metadata,
    sa.Column("sha256", sa.Text, sa.ForeignKey("blobs.sha256", ondelete="CASCADE"), primary_key=True),
    sa.Column("chunk_index", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
)

# The files of a network: path inside its directory → blob. A blob goes when its last reference does.
network_files = sa.Table(
    "network_files",
    metadata,
    sa.Column("network_id", sa.Integer, sa.ForeignKey("networks.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("path", sa.Text, primary_key=True),
    sa.Column("sha256", sa.Text, sa.ForeignKey("blobs.sha256"), nullable=False),
    sa.Index("network_files_sha256", "sha256"),
)
