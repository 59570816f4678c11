"""Baseline: the tables of the hand-migrated SQLite schema (user_version 5), on both dialects.

SQLite files written before Alembic are stamped at this revision after their own upgrade to version 5
(`streamd.store.migrations.legacy`), so the two must stay the same tables.

Revision ID: 0001
Revises:
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_IDS = {"sqlite_autoincrement": True}


def _id() -> sa.Column[int]:
    return sa.Column("id", sa.Integer, sa.Identity(), primary_key=True)


def _text(name: str, *, nullable: bool = False) -> sa.Column[str]:
    return sa.Column(name, sa.Text, nullable=nullable)


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.create_table(
        "tasks",
        _id(),
        _text("kind"),
        sa.Column("subject_id", sa.Integer),
        _text("status"),
        _text("error", nullable=True),
        _text("data", nullable=True),
        _text("date_created"),
        _text("date_updated"),
        sa.CheckConstraint("status IN ('pending', 'success', 'error')", name="tasks_status"),
        **_IDS,
    )
    op.create_table(
        "networks",
        _id(),
        *(_text(name) for name in ("name", "description", "metadata", "framework", "preprocessing")),
        _text("postprocessings"),
        _text("files"),
        sa.Column("task_id", sa.Integer, sa.ForeignKey("tasks.id"), nullable=False),
        sa.Column("deployed", sa.Boolean, nullable=False, server_default=sa.false()),
        _text("create_date"),
        _text("update_date"),
        **_IDS,
    )
    # The recognition tables refer to each other. SQLite takes the forward reference inline (and cannot
    # add a key later); PostgreSQL gets it once both tables exist.
    current_version = sa.Column("current_version_id", sa.Integer)
    if sqlite:
        current_version = sa.Column(
            "current_version_id",
            sa.Integer,
            sa.ForeignKey(
                "recognition_versions.id",
                ondelete="SET NULL",
                name="recognition_specs_current_version_id_fkey",
            ),
        )
    op.create_table(
        "recognition_specs",
        _id(),
        *(_text(name) for name in ("name", "description", "metadata", "outputs")),
        current_version,
        _text("create_date"),
        _text("update_date"),
        **_IDS,
    )
    op.create_table(
        "recognition_versions",
        _id(),
        sa.Column(
            "spec_id", sa.Integer, sa.ForeignKey("recognition_specs.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("network_id", sa.Integer, sa.ForeignKey("networks.id", ondelete="CASCADE"), nullable=False),
        _text("post_processings"),
        _text("create_date"),
        _text("update_date"),
        **_IDS,
    )
    if not sqlite:
        op.create_foreign_key(
            "recognition_specs_current_version_id_fkey",
            "recognition_specs",
            "recognition_versions",
            ["current_version_id"],
            ["id"],
            ondelete="SET NULL",
        )
    op.create_index("recognition_versions_network", "recognition_versions", ["network_id"])
    op.create_index("recognition_versions_spec", "recognition_versions", ["spec_id"])
    op.create_table(
        "streams",
        _id(),
        _text("name"),
        _text("definition"),
        _text("desired"),
        sa.Column("run", sa.Integer, nullable=False, server_default=sa.text("0")),
        _text("checkpoint", nullable=True),
        _text("create_date"),
        _text("update_date"),
        **_IDS,
    )
    op.create_table(
        "health",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        _text("checked"),
    )
    op.create_table(
        "chains",
        sa.Column("name", sa.Text().with_variant(sa.Text(collation="C"), "postgresql"), primary_key=True),
        _text("definition"),
        _text("create_date"),
        _text("update_date"),
    )


def downgrade() -> None:
    for table in ("chains", "health", "streams"):
        op.drop_table(table)
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint("recognition_specs_current_version_id_fkey", "recognition_specs")
    for table in ("recognition_versions", "recognition_specs", "networks", "tasks"):
        op.drop_table(table)
