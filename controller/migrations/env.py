"""Alembic's environment: migrations run on the connection :mod:`sparcs.controller.migrate` hands over."""

from __future__ import annotations

from alembic import context

from sparcs.controller.store import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `sparcs db upgrade` / `sparcs db downgrade`, not the alembic command")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
