"""Alembic environment: seawall passes an open connection in ``config.attributes``."""

from __future__ import annotations

from alembic import context

from seawall.db._tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run seawall's migrations with `seawall migrate`, not the alembic CLI")

context.configure(
    connection=connection,
    target_metadata=metadata,
    # SQLite cannot ALTER most things; batch mode recreates tables when a revision needs it.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
