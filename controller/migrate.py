"""Schema migrations of the history store with Alembic (docs/storage.md "Migrations").

The revisions live in :mod:`sparcs.controller.migrations` (installed with the package). A store of the
0.1.0 release has no ``alembic_version`` table but ``schema_version`` 1: it is stamped revision 0001
(the schema that release created) before upgrading. An empty database is upgraded from nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text

SCRIPT_LOCATION = "sparcs.controller:migrations"
RELEASE_0_1_0 = "0001"
"""The revision of a store the 0.1.0 release wrote (its ``schema_version`` 1)."""


class MigrationError(Exception):
    """The store's schema cannot be used by this program as it is; the message says what to run."""


@dataclass(frozen=True)
class SchemaState:
    """Where a store stands: its revision (None: empty), the newest this program knows, and whether it
    is one this program knows at all."""

    current: str | None
    head: str
    known: bool

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


def _config(conn: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    if conn is not None:
        cfg.attributes["connection"] = conn
    return cfg


def script() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config())


def head_revision() -> str:
    head = script().get_current_head()
    if head is None:
        raise RuntimeError("the package holds no migrations")
    return head


def _legacy_revision(conn: Connection) -> str | None:
    """The revision of a store without Alembic's table: 0001 for the 0.1.0 release's, None for an empty one."""
    tables = set(inspect(conn).get_table_names())
    if "schema_version" not in tables:
        if tables:
            raise MigrationError(f"the database holds tables ({', '.join(sorted(tables))}) but no SPARCS schema")
        return None
    version = conn.execute(text("SELECT max(version) FROM schema_version")).scalar()
    if version == 1:
        return RELEASE_0_1_0
    raise MigrationError(f"the store has schema_version {version} but no migration record; restore a backup")


def state(engine: Engine) -> SchemaState:
    """The store's schema revision against this program's newest."""
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
        if current is None:
            current = _legacy_revision(conn)
    revisions = {r.revision for r in script().walk_revisions()}
    return SchemaState(current, head_revision(), current is None or current in revisions)


def upgrade(engine: Engine, target: str = "head") -> SchemaState:
    """Upgrade the store to ``target`` (default: this program's newest revision), in one transaction per step."""
    before = state(engine)
    if not before.known:
        raise MigrationError(newer_message(before))
    with engine.begin() as conn:
        cfg = _config(conn)
        if MigrationContext.configure(conn).get_current_revision() is None and before.current is not None:
            command.stamp(cfg, before.current)  # the 0.1.0 release's store: its schema is revision 0001
        command.upgrade(cfg, target)
    return state(engine)


def downgrade(engine: Engine, target: str = "-1") -> SchemaState:
    """Downgrade the store to ``target`` (default: one revision back), e.g. before running the previous release."""
    before = state(engine)
    if not before.known:
        raise MigrationError(newer_message(before))
    if before.current is None:
        raise MigrationError("the store is empty: nothing to downgrade")
    if before.current == RELEASE_0_1_0 or target == "base":
        raise MigrationError(
            f"the store is at revision {before.current}; going below {RELEASE_0_1_0} (the 0.1.0 release's schema) "
            "would delete every table: restore a backup instead (`sparcs restore`)"
        )
    with engine.begin() as conn:
        cfg = _config(conn)
        if MigrationContext.configure(conn).get_current_revision() is None:
            command.stamp(cfg, before.current)
        command.downgrade(cfg, target)
    return state(engine)


def newer_message(s: SchemaState) -> str:
    return (
        f"the store is at schema revision {s.current}, which this program does not know (its newest is {s.head}): "
        "it was written by a newer SPARCS; upgrade sparcs, or run `sparcs db downgrade` with the newer release"
    )
