"""Alembic's environment: migrations run on the connection :mod:`sparcs.controller.migrate` hands over.

Alembic runs this module for each command; imported any other way (a walk over the package) it does nothing.
"""

from __future__ import annotations

from alembic import context

from sparcs.controller.store import metadata


def run_migrations() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations with `sparcs db upgrade` / `sparcs db downgrade`, not the alembic command")
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


try:
    context.config  # noqa: B018 - set only while Alembic runs a command
except AttributeError:
    pass
else:
    run_migrations()
