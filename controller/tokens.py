"""The `sparcs token` commands: add (printed once), list, revoke, against the store `sparcs run` uses."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

from sparcs.config.schema import load_config
from sparcs.controller.auth import create_token
from sparcs.controller.store import Store


def open_store(data_dir: Path, config: Path | None = None) -> Store:
    """``storage.url`` of the fleet file when given, else SQLite in ``data_dir`` (as `sparcs run` does)."""
    url = load_config(config).storage.url if config is not None else None
    return Store(url, data_dir=data_dir)


def add_token(name: str, role: str, data_dir: Path, config: Path | None = None) -> str:
    store = open_store(data_dir, config)
    try:
        return create_token(store, name, role, time.time())
    finally:
        store.close()


def list_tokens(data_dir: Path, config: Path | None = None) -> list[str]:
    store = open_store(data_dir, config)
    try:
        return [
            f"{t.name}\t{t.role}\t{dt.datetime.fromtimestamp(t.created_at, dt.UTC).isoformat()}"
            for t in store.list_tokens()
        ]
    finally:
        store.close()


def revoke_token(name: str, data_dir: Path, config: Path | None = None) -> None:
    store = open_store(data_dir, config)
    try:
        if not store.revoke_token(name):
            raise ValueError(f"no token named '{name}'; `sparcs token list` shows them")
    finally:
        store.close()
