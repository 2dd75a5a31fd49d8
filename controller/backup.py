"""`sparcs backup DEST` and `sparcs restore SRC` (docs/storage.md "Backup and restore").

SQLite: SQLite's online backup API, page by page under the database's own locks, so a backup taken
while the controller writes is a consistent snapshot (WAL mode lets the controller go on writing).
PostgreSQL: ``pg_dump --format=custom`` (one consistent snapshot, taken in a repeatable-read
transaction) and ``pg_restore --clean``. A restore replaces the whole store; run it with the
controller stopped. A restored store older than this program is upgraded on the next start.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from pathlib import Path

from sqlalchemy import Engine

from sparcs.controller import migrate
from sparcs.controller.migrate import MigrationError

PG_BIN_DIRS = ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/17/bin")


class BackupError(Exception):
    """A backup or restore that could not be made; the message names the file or tool and what to do."""


def sqlite_backup(engine: Engine, dest: Path) -> None:
    """Copy the SQLite store of ``engine`` into the file ``dest`` (replaced) with the online backup API."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".partial")
    tmp.unlink(missing_ok=True)
    raw = engine.raw_connection()
    try:
        src = raw.driver_connection
        if not isinstance(src, sqlite3.Connection):
            raise BackupError("not a SQLite store")
        with sqlite3.connect(tmp) as out:
            src.backup(out, pages=1024)  # in steps, so the controller's writes interleave
        out.close()
    finally:
        raw.close()
    tmp.replace(dest)  # a backup is either whole or absent


def pg_tool(name: str) -> str:
    found = shutil.which(name) or next((f"{d}/{name}" for d in PG_BIN_DIRS if Path(f"{d}/{name}").exists()), None)
    if found is None:
        raise BackupError(f"{name} not found; install the PostgreSQL client (Debian: postgresql-client)")
    return found


def libpq_url(engine: Engine) -> str:
    """The store's URL as libpq takes it (no SQLAlchemy driver suffix)."""
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


def backup(engine: Engine, dest: Path) -> None:
    """Back the store up into ``dest``: a SQLite file, or a pg_dump archive for PostgreSQL."""
    if engine.dialect.name == "sqlite":
        try:
            sqlite_backup(engine, dest)
        except (sqlite3.Error, OSError) as exc:
            raise BackupError(f"backup to {dest} failed: {exc}") from None
        return
    tmp = dest.with_name(dest.name + ".partial")
    done = subprocess.run(
        [pg_tool("pg_dump"), "--format=custom", f"--file={tmp}", "--dbname", libpq_url(engine)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise BackupError(f"pg_dump into {dest} failed: {done.stderr.strip()}")
    tmp.replace(dest)


def restore(engine: Engine, src: Path) -> migrate.SchemaState:
    """Replace the store of ``engine`` with the backup ``src``; returns the restored schema state.

    A backup written by a newer release (a revision this program does not know) is refused.
    """
    if not src.is_file():
        raise BackupError(f"{src}: no such backup file")
    if engine.dialect.name == "sqlite":
        try:
            with sqlite3.connect(f"file:{src}?mode=ro", uri=True) as probe:
                check = probe.execute("PRAGMA integrity_check").fetchone()
                if check is None or check[0] != "ok":
                    raise BackupError(f"{src}: not a sound SQLite store ({check}); choose another backup")
            raw = engine.raw_connection()
            try:
                dst = raw.driver_connection
                assert isinstance(dst, sqlite3.Connection)
                with sqlite3.connect(f"file:{src}?mode=ro", uri=True) as source:
                    source.backup(dst)
            finally:
                raw.close()
        except sqlite3.DatabaseError as exc:
            raise BackupError(f"{src}: not a SQLite store backup: {exc}") from None
    else:
        done = subprocess.run(
            [
                pg_tool("pg_restore"),
                "--clean",
                "--if-exists",
                "--no-owner",
                "--single-transaction",
                "--dbname",
                libpq_url(engine),
                str(src),
            ],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise BackupError(f"pg_restore of {src} failed: {done.stderr.strip()}")
    state = migrate.state(engine)
    if not state.known:
        raise MigrationError(migrate.newer_message(state))
    return state
