"""Alembic environment: runs on the connection Custodes hands over (see custodes.store.migrate)."""

from alembic import context

from custodes.store.tables import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
