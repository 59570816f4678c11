"""Alembic's entry point: runs the migrations on the connection `streamd.store.migrations` hands over.

Only the online mode exists: streamd always migrates a live database from its database thread.
"""

from alembic import context

from streamd.store.schema import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    # SQLite alters most columns by copying the table; Alembic's batch mode does that.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():  # inside the caller's transaction: a no-op, its commit is ours
    context.run_migrations()
