"""Cluster mode: stream leases (owner, epoch, lease_until), the status an owner publishes, the nodes table,
and the node that created each task. Additive only: nodes of revision 0001 keep working beside it.

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("streams", sa.Column("owner", sa.Text, nullable=True))
    op.add_column("streams", sa.Column("epoch", sa.BigInteger, nullable=False, server_default=sa.text("0")))
    op.add_column("streams", sa.Column("lease_until", _STAMP, nullable=True))
    op.add_column("streams", sa.Column("status", sa.Text, nullable=True))
    op.add_column("streams", sa.Column("status_at", _STAMP, nullable=True))
    op.add_column("tasks", sa.Column("node", sa.Text, nullable=True))
    op.create_table(
        "nodes",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("address", sa.Text, nullable=False),
        sa.Column("started_at", _STAMP, nullable=False),
        sa.Column("heartbeat_at", _STAMP, nullable=False),
        sa.Column("max_streams", sa.Integer, nullable=False),
        sa.Column("streams", sa.Integer, nullable=False, server_default=sa.text("0")),
    )


def downgrade() -> None:
    op.drop_table("nodes")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("node")
    with op.batch_alter_table("streams") as batch:
        for column in ("status_at", "status", "lease_until", "epoch", "owner"):
            batch.drop_column(column)
