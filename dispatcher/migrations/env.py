"""How Alembic runs our revisions: on the connection `dispatcher.migrations.config` hands over,
inside the caller's transaction (which holds the schema lock), in batch mode so that an ALTER
works on SQLite too (it copies the table)."""

from __future__ import annotations

from alembic import context

context.configure(
    connection=context.config.attributes["connection"],
    render_as_batch=True,
)
with context.begin_transaction():
    context.run_migrations()
