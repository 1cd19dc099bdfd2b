"""Alembic environment shared by every service; run through services.runtime.storage.migrations."""

from __future__ import annotations

from alembic import context

config = context.config
connection = config.attributes["connection"]

context.configure(
    connection=connection,
    target_metadata=None,
    version_table=config.attributes["version_table"],
    render_as_batch=connection.dialect.name == "sqlite",
    transaction_per_migration=True,
)

with context.begin_transaction():
    context.run_migrations()
