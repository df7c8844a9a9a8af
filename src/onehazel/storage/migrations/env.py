"""Alembic environment: runs on the connection handed in by ``storage.migrate``."""

from alembic import context

from onehazel.storage.tables import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
context.run_migrations()
