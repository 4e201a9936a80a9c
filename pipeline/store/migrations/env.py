"""Alembic environment: always run with a connection handed in by pipeline.store.migrate."""

from __future__ import annotations

from alembic import context

from pipeline.store.rows import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `paperpost db upgrade`, not the alembic CLI")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    version_table_schema=context.config.attributes.get("schema"),
)
with context.begin_transaction():
    context.run_migrations()
