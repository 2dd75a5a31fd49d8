"""The `sparcs token` commands: add and rotate (printed once), list, revoke, against the store `sparcs run`
uses. Every change is audited like the API's, under the actor ``cli:<user>`` (the operating-system
user who ran the command)."""

from __future__ import annotations

import datetime as dt
import getpass
import re
import time
from pathlib import Path

from sparcs.config.schema import load_config
from sparcs.controller.auth import TokenBook
from sparcs.controller.store import Store

_DURATION = re.compile(r"^(\d{1,9})([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def parse_duration_s(text: str) -> int:
    """``90d``, ``12h``, ``30m`` or ``3600s`` → seconds; ValueError naming the expected form."""
    m = _DURATION.match(text.strip())
    if m is None:
        raise ValueError(f"--expires-in '{text}' must be a whole number with a unit s, m, h or d, e.g. 90d")
    return int(m.group(1)) * _UNIT_S[m.group(2)]


def cli_actor() -> str:
    """Who the audit log names for a command-line change: ``cli:<user>``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (e.g. a container without /etc/passwd entry)
        user = "unknown"
    return f"cli:{user}"[:64]


def open_store(data_dir: Path, config: Path | None = None) -> Store:
    """``storage.url`` of the fleet file when given, else SQLite in ``data_dir`` (as `sparcs run` does)."""
    url = load_config(config).storage.url if config is not None else None
    return Store(url, data_dir=data_dir)


def _iso(ts: float | None) -> str:
    return "never" if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC).isoformat()


def add_token(name: str, role: str, data_dir: Path, config: Path | None = None, expires_in: str | None = None) -> str:
    expires_in_s = None if expires_in is None else parse_duration_s(expires_in)
    store = open_store(data_dir, config)
    try:
        return TokenBook(store, time.time).add(name, role, cli_actor(), expires_in_s)  # type: ignore[arg-type]
    finally:
        store.close()


def rotate_token(name: str, data_dir: Path, config: Path | None = None, expires_in: str | None = None) -> str:
    expires_in_s = None if expires_in is None else parse_duration_s(expires_in)
    store = open_store(data_dir, config)
    try:
        token = TokenBook(store, time.time).rotate(name, cli_actor(), expires_in_s)
    finally:
        store.close()
    if token is None:
        raise ValueError(f"no token named '{name}'; `sparcs token list` shows them")
    return token


def list_tokens(data_dir: Path, config: Path | None = None) -> list[str]:
    """One line per token: name, role, created, expires (``never`` without expiry)."""
    store = open_store(data_dir, config)
    try:
        return [f"{t.name}\t{t.role}\t{_iso(t.created_at)}\t{_iso(t.expires_at)}" for t in store.list_tokens()]
    finally:
        store.close()


def revoke_token(name: str, data_dir: Path, config: Path | None = None) -> None:
    store = open_store(data_dir, config)
    try:
        if not TokenBook(store, time.time).revoke(name, cli_actor()):
            raise ValueError(f"no token named '{name}'; `sparcs token list` shows them")
    finally:
        store.close()
