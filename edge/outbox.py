"""The edge's outbox: every message the central must get, kept in SQLite until the broker took it.

Telemetry and alarms are added here as they happen and sent oldest first; a message leaves the
outbox only when the broker acknowledged it (QoS 1 PUBACK). Each site's telemetry sequence number
is kept here too, so it goes on counting after an edge restart: the central stores each
(site, seq) once, so a message sent twice (acknowledgement lost) is no duplicate in its history.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

DB_FILE = "edge-outbox.db"
MAX_ROWS = 2_000_000
"""Oldest messages are dropped past this many (about 23 days of one site at a 1 s poll)."""


@dataclass(frozen=True)
class Pending:
    id: int
    topic: str
    payload: bytes


class Outbox:
    """A durable FIFO of (topic, payload) with per-site sequence numbers. One writer: the edge.

    The edge's cycle adds and its sender reads and removes, each from a worker thread; one connection
    serves both, so every call holds the outbox's lock (two transactions begun at once on one
    connection fail with "cannot start a transaction within a transaction")."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY, topic TEXT, payload BLOB)")
        self.db.execute("CREATE TABLE IF NOT EXISTS seqs (site TEXT PRIMARY KEY, seq INTEGER NOT NULL)")

    def next_seqs(self, sites: list[str]) -> dict[str, int]:
        """The next sequence number of each site (1 for a site never sent)."""
        with self._lock:
            have = dict(self.db.execute("SELECT site, seq FROM seqs").fetchall())
        return {s: int(have.get(s, 0)) + 1 for s in sites}

    def add(self, messages: list[tuple[str, bytes]], seqs: dict[str, int] | None = None) -> None:
        """Queue ``messages`` and record ``seqs`` (site → the sequence number used) in one transaction."""
        with self._lock, self.db:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT INTO outbox (topic, payload) VALUES (?, ?)", messages)
            if seqs:
                self.db.executemany(
                    "INSERT INTO seqs (site, seq) VALUES (?, ?) ON CONFLICT(site) DO UPDATE SET seq = excluded.seq",
                    list(seqs.items()),
                )
            lo, hi = self.db.execute("SELECT MIN(id), MAX(id) FROM outbox").fetchone()
            if lo is not None and hi - lo + 1 > MAX_ROWS:  # ids grow by one: the span bounds the count
                self.db.execute("DELETE FROM outbox WHERE id <= ?", (hi - MAX_ROWS,))

    def oldest(self, limit: int) -> list[Pending]:
        with self._lock:
            rows = self.db.execute("SELECT id, topic, payload FROM outbox ORDER BY id LIMIT ?", (limit,)).fetchall()
        return [Pending(int(i), str(t), bytes(p)) for i, t, p in rows]

    def done(self, ids: list[int]) -> None:
        """The broker took these: they leave the outbox."""
        if ids:
            with self._lock, self.db:
                self.db.execute("BEGIN")
                self.db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])

    def __len__(self) -> int:
        with self._lock:
            return int(self.db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self.db.close()
