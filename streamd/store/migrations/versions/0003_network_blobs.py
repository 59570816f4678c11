"""Cluster mode: network files in the database, content-addressed (blobs, their chunks, and which files
each network has), so that every node can fetch a network registered on any node. Additive only: the
tables stay empty on SQLite, and nodes of revision 0002 keep working beside them.

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "blobs",
        sa.Column("sha256", sa.Text, primary_key=True),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_table(
        "blob_chunks",
        sa.Column("sha256", sa.Text, sa.ForeignKey("blobs.sha256", ondelete="CASCADE"), primary_key=True),
        sa.Column("chunk_index", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )
    if op.get_bind().dialect.name == "postgresql":
        # Model weights hardly compress: store chunks out of line without trying (pglz would only
        # spend the server's CPU on them).
        op.execute("ALTER TABLE blob_chunks ALTER COLUMN data SET STORAGE EXTERNAL")
    op.create_table(
        "network_files",
        sa.Column(
            "network_id", sa.Integer, sa.ForeignKey("networks.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("path", sa.Text, primary_key=True),
        sa.Column("sha256", sa.Text, sa.ForeignKey("blobs.sha256"), nullable=False),
    )
    op.create_index("network_files_sha256", "network_files", ["sha256"])


def downgrade() -> None:
    for table in ("network_files", "blob_chunks", "blobs"):
        op.drop_table(table)
