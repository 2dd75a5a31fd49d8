"""`sparcs db upgrade|downgrade|current`, `sparcs backup DEST`, `sparcs restore SRC`: the store's
maintenance, against the store `sparcs run` uses (``storage.url`` of ``--config``, else SQLite in
``--data-dir``). See docs/storage.md."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine

from sparcs.config.schema import load_config
from sparcs.controller import backup as backups
from sparcs.controller import migrate
from sparcs.controller.store import default_url, make_engine


def store_engine(data_dir: Path, config: Path | None) -> Engine:
    """The engine of the store, without any schema work."""
    url = load_config(config).storage.url if config is not None else None
    if url is None:
        data_dir.mkdir(parents=True, exist_ok=True)
        url = default_url(data_dir)
    return make_engine(url)


def _where(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def db_current(data_dir: Path, config: Path | None) -> str:
    engine = store_engine(data_dir, config)
    try:
        s = migrate.state(engine)
    finally:
        engine.dispose()
    if not s.known:
        return f"{_where(engine)}: {migrate.newer_message(s)}"
    status = "up to date" if s.up_to_date else f"behind: run `sparcs db upgrade` to reach {s.head}"
    return f"{_where(engine)}: revision {s.current or 'none (empty)'}, this program's newest {s.head} ({status})"


def db_upgrade(data_dir: Path, config: Path | None, target: str) -> str:
    engine = store_engine(data_dir, config)
    try:
        before = migrate.state(engine).current
        after = migrate.upgrade(engine, target).current
    finally:
        engine.dispose()
    return f"{_where(engine)}: revision {before or 'none'} -> {after}"


def db_downgrade(data_dir: Path, config: Path | None, target: str) -> str:
    engine = store_engine(data_dir, config)
    try:
        before = migrate.state(engine).current
        after = migrate.downgrade(engine, target).current
    finally:
        engine.dispose()
    return f"{_where(engine)}: revision {before} -> {after or 'none'}; run the release that matches it"


def backup(dest: Path, data_dir: Path, config: Path | None) -> str:
    engine = store_engine(data_dir, config)
    try:
        backups.backup(engine, dest)
    finally:
        engine.dispose()
    return f"backed up {_where(engine)} to {dest} ({dest.stat().st_size} bytes)"


def restore(src: Path, data_dir: Path, config: Path | None) -> str:
    engine = store_engine(data_dir, config)
    try:
        s = backups.restore(engine, src)
    finally:
        engine.dispose()
    note = "" if s.up_to_date else f"; `sparcs run` upgrades it to {s.head} (or `sparcs db upgrade`)"
    return f"restored {src} into {_where(engine)} (revision {s.current}){note}"
