"""The history store: telemetry, fleet aggregates, plans, operator commands, audit log, alarms, API tokens.

SQLAlchemy Core on a SQLite file in the data directory by default; ``storage.url`` switches to any
SQLAlchemy URL (PostgreSQL in production at scale). The schema is created on start and its version
recorded in ``schema_version`` so Alembic migrations can take over from version 1.

SQLite runs in WAL mode with ``synchronous=FULL``: a command is committed (and fsynced) before the
API acknowledges it, so nothing acknowledged is lost even after kill -9.

Times are Unix seconds (UTC) as floats; powers in W with the signs of docs/definitions.md "Signs" (``grid_w`` > 0
import, ``battery_w`` > 0 discharge, ``export_w`` ≥ 0).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import CursorResult

from sparcs.controller.plan import Plan

SCHEMA_VERSION = 1
DB_FILE = "sparcs.db"
DEFAULT_DATA_DIR = Path("data")  # relative to the working directory, like the demo's other files

metadata = MetaData()

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True),
    Column("applied_at", Float, nullable=False),
)

telemetry = Table(
    "telemetry",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ts", Float, nullable=False),
    Column("device_id", String(64), nullable=False),
    Column("site_id", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("values", JSON, nullable=False),  # {key: [value | None, quality]}
    Index("ix_telemetry_device_ts", "device_id", "ts"),
    Index("ix_telemetry_ts", "ts"),
)

fleet = Table(
    "fleet",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ts", Float, nullable=False, index=True),
    Column("pv_w", Float),
    Column("battery_w", Float),
    Column("load_w", Float),
    Column("grid_w", Float),
    Column("export_w", Float),
    Column("soc", Float),
    Column("flex_up_w", Float),
    Column("flex_down_w", Float),
    Column("online", Integer),
    Column("stale", Integer),
    Column("total", Integer),
)

site_history = Table(
    "site_history",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ts", Float, nullable=False),
    Column("site_id", String(64), nullable=False),
    Column("pv_w", Float),
    Column("battery_w", Float),
    Column("grid_w", Float),
    Column("load_w", Float),
    Column("export_w", Float),
    Column("soc", Float),
    Column("flex_up_w", Float),
    Column("flex_down_w", Float),
    Index("ix_site_history_site_ts", "site_id", "ts"),
    Index("ix_site_history_ts", "ts"),
)

plans = Table(
    "plans",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("created_at", Float, nullable=False, index=True),
    Column("start_s", Float, nullable=False),
    Column("path", String(32), nullable=False),
    Column("reason", Text),
    Column("objective_eur", Float),
    Column("data", JSON, nullable=False),
)

commands = Table(
    "commands",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("who", String(64), nullable=False),
    Column("start_s", Float, nullable=False),
    Column("expires_s", Float),  # None: until cancelled (pause)
    Column("params", JSON, nullable=False),
    Column("cancelled_at", Float),
    Column("cancelled_by", String(64)),
    Index("ix_commands_active", "cancelled_at", "expires_s"),
)

audit = Table(
    "audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ts", Float, nullable=False, index=True),
    Column("who", String(64), nullable=False),
    Column("action", String(64), nullable=False),
    Column("params", JSON, nullable=False),
    Column("result", Text, nullable=False),
)

alarms = Table(
    "alarms",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("raised_at", Float, nullable=False, index=True),
    Column("severity", String(16), nullable=False),
    Column("source", String(64), nullable=False),
    Column("message", Text, nullable=False),
    Column("cleared_at", Float),
)

tokens = Table(
    "tokens",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("role", String(16), nullable=False),
    Column("token_sha256", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
)


def _inserted_id(res: CursorResult[Any]) -> int:
    """The primary key of the row an insert added."""
    key = res.inserted_primary_key
    if key is None:
        raise RuntimeError("the insert returned no primary key")
    return int(key[0])


def default_url(data_dir: Path) -> str:
    return f"sqlite:///{Path(data_dir).resolve() / DB_FILE}"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    # FULL: every commit is fsynced, so an acknowledged command survives kill -9 and power loss.
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()


@dataclass(frozen=True)
class TokenRow:
    name: str
    role: str
    token_sha256: str
    created_at: float


class Store:
    """All persistent state of the controller, behind small methods; one instance per process."""

    def __init__(self, url: str | None = None, *, data_dir: Path | None = None):
        if url is None:
            if data_dir is None:
                raise ValueError("Store needs a storage.url or a data directory")
            Path(data_dir).mkdir(parents=True, exist_ok=True)
            url = default_url(Path(data_dir))
        self.url = url
        self.engine: Engine = create_engine(url, future=True)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        metadata.create_all(self.engine)
        with self.engine.begin() as conn:
            have = conn.execute(select(func.max(schema_version.c.version))).scalar()
            if have is None:
                conn.execute(insert(schema_version).values(version=SCHEMA_VERSION, applied_at=0.0))
            elif have > SCHEMA_VERSION:
                raise RuntimeError(
                    f"database {url} has schema version {have}, newer than this program ({SCHEMA_VERSION}); "
                    "upgrade sparcs"
                )

    def close(self) -> None:
        self.engine.dispose()

    def version(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.max(schema_version.c.version))).scalar() or 0)

    # -- telemetry and fleet aggregates -------------------------------------------------------

    def add_poll(
        self,
        telemetry_rows: Sequence[dict[str, Any]],
        fleet_row: dict[str, Any] | None = None,
        site_rows: Sequence[dict[str, Any]] = (),
    ) -> None:
        """What one poll adds to the history, in one transaction (one fsync, and never half a poll).

        ``telemetry_rows``: ts, device_id, site_id, status, values ({key: [value, quality]});
        ``fleet_row``: the fleet summary (columns of the fleet table); ``site_rows``: ts, site_id and
        the site history fields. Empty parts are skipped.
        """
        if not telemetry_rows and fleet_row is None and not site_rows:
            return
        with self.engine.begin() as conn:
            if telemetry_rows:
                conn.execute(insert(telemetry), list(telemetry_rows))
            if fleet_row is not None:
                conn.execute(insert(fleet).values(**fleet_row))
            if site_rows:
                conn.execute(insert(site_history), list(site_rows))

    def fleet_history(self, start_s: float, end_s: float) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            res = conn.execute(select(fleet).where(fleet.c.ts >= start_s, fleet.c.ts < end_s).order_by(fleet.c.ts))
            return [dict(r._mapping) for r in res]

    def device_history(self, device_id: str, start_s: float, end_s: float) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            res = conn.execute(
                select(telemetry)
                .where(telemetry.c.device_id == device_id, telemetry.c.ts >= start_s, telemetry.c.ts < end_s)
                .order_by(telemetry.c.ts)
            )
            return [dict(r._mapping) for r in res]

    def site_history(self, site_id: str, start_s: float, end_s: float) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            res = conn.execute(
                select(site_history)
                .where(site_history.c.site_id == site_id, site_history.c.ts >= start_s, site_history.c.ts < end_s)
                .order_by(site_history.c.ts)
            )
            return [dict(r._mapping) for r in res]

    # -- plans --------------------------------------------------------------------------------

    def add_plan(self, created_at: float, plan: Plan) -> int:
        """Store a plan in its JSON form (:meth:`Plan.to_record`); returns its id."""
        with self.engine.begin() as conn:
            res = conn.execute(
                insert(plans).values(
                    created_at=created_at,
                    start_s=plan.start_s,
                    path=plan.path,
                    reason=plan.reason,
                    objective_eur=plan.objective_eur,
                    data=plan.to_record(),
                )
            )
            return _inserted_id(res)

    def last_plan(self) -> Plan | None:
        """The plan stored last, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(select(plans.c.data).order_by(plans.c.id.desc()).limit(1)).first()
            return Plan.from_record(row.data) if row else None

    # -- operator commands and the audit log --------------------------------------------------

    def add_command(
        self,
        *,
        kind: str,
        who: str,
        created_at: float,
        start_s: float,
        expires_s: float | None,
        params: dict[str, Any],
        audit_result: str,
        supersedes: Iterable[int] = (),
    ) -> int:
        """Persist a command and its audit entry in one durable transaction; returns the command id.
        ``supersedes``: commands the new one replaces, ended (cancelled by ``who``) in the same transaction."""
        with self.engine.begin() as conn:
            ended = list(supersedes)
            if ended:
                conn.execute(
                    update(commands)
                    .where(commands.c.id.in_(ended), commands.c.cancelled_at.is_(None))
                    .values(cancelled_at=created_at, cancelled_by=who)
                )
            res = conn.execute(
                insert(commands).values(
                    kind=kind, who=who, created_at=created_at, start_s=start_s, expires_s=expires_s, params=params
                )
            )
            cid = _inserted_id(res)
            conn.execute(
                insert(audit).values(
                    ts=created_at, who=who, action=kind, params={**params, "command_id": cid}, result=audit_result
                )
            )
            return cid

    def cancel_commands(self, ids: Iterable[int], *, who: str, at: float, action: str, params: dict) -> list[int]:
        """Cancel the still-active commands among ``ids`` and audit it, in one transaction."""
        ids = list(ids)
        with self.engine.begin() as conn:
            open_ids = select(commands.c.id).where(commands.c.id.in_(ids), commands.c.cancelled_at.is_(None))
            live = [r.id for r in conn.execute(open_ids)]
            if live:
                conn.execute(update(commands).where(commands.c.id.in_(live)).values(cancelled_at=at, cancelled_by=who))
            conn.execute(
                insert(audit).values(
                    ts=at, who=who, action=action, params={**params, "cancelled": live}, result="ok" if live else "noop"
                )
            )
            return live

    def active_commands(self, now_s: float) -> list[dict[str, Any]]:
        """Commands neither cancelled nor expired at ``now_s`` (including ones that start later)."""
        with self.engine.connect() as conn:
            res = conn.execute(
                select(commands)
                .where(
                    commands.c.cancelled_at.is_(None),
                    (commands.c.expires_s.is_(None)) | (commands.c.expires_s > now_s),
                )
                .order_by(commands.c.id)
            )
            return [dict(r._mapping) for r in res]

    def audit_event(self, *, ts: float, who: str, action: str, params: dict, result: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(audit).values(ts=ts, who=who, action=action, params=params, result=result))

    def audit_log(self, limit: int = 100, before_id: int | None = None) -> list[dict[str, Any]]:
        q = select(audit).order_by(audit.c.id.desc()).limit(limit)
        if before_id is not None:
            q = q.where(audit.c.id < before_id)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    # -- alarms -------------------------------------------------------------------------------

    def raise_alarm(self, *, at: float, severity: str, source: str, message: str) -> int | None:
        """Raise an alarm unless the same source already has one open with the same message."""
        with self.engine.begin() as conn:
            open_same = conn.execute(
                select(alarms.c.id).where(
                    alarms.c.source == source, alarms.c.message == message, alarms.c.cleared_at.is_(None)
                )
            ).first()
            if open_same:
                return None
            res = conn.execute(insert(alarms).values(raised_at=at, severity=severity, source=source, message=message))
            return _inserted_id(res)

    def clear_alarms(self, source: str, at: float) -> int:
        with self.engine.begin() as conn:
            res = conn.execute(
                update(alarms).where(alarms.c.source == source, alarms.c.cleared_at.is_(None)).values(cleared_at=at)
            )
            return res.rowcount

    def alarms(self, *, active_only: bool = False, limit: int = 200) -> list[dict[str, Any]]:
        q = select(alarms).order_by(alarms.c.id.desc()).limit(limit)
        if active_only:
            q = q.where(alarms.c.cleared_at.is_(None))
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    # -- API tokens ---------------------------------------------------------------------------

    def add_token(self, name: str, role: str, token_sha256: str, at: float) -> None:
        with self.engine.begin() as conn:
            existing = conn.execute(select(tokens.c.id).where(tokens.c.name == name)).first()
            if existing:
                raise ValueError(f"a token named '{name}' exists already; revoke it or choose another name")
            conn.execute(insert(tokens).values(name=name, role=role, token_sha256=token_sha256, created_at=at))

    def list_tokens(self) -> list[TokenRow]:
        with self.engine.connect() as conn:
            res = conn.execute(select(tokens).order_by(tokens.c.name))
            return [TokenRow(r.name, r.role, r.token_sha256, r.created_at) for r in res]

    def revoke_token(self, name: str) -> bool:
        """Revoking deletes the row, so the name can be reused; returns False for an unknown name."""
        with self.engine.begin() as conn:
            return conn.execute(delete(tokens).where(tokens.c.name == name)).rowcount > 0

    # -- retention ----------------------------------------------------------------------------

    def prune(self, now_s: float, retention_days: int) -> dict[str, int]:
        """Delete telemetry, aggregates, plans (all but the latest) and cleared alarms past retention.

        Commands and the audit log are kept: they are the legal record of what operators ordered.
        """
        cut = now_s - retention_days * 86_400.0
        out: dict[str, int] = {}
        with self.engine.begin() as conn:
            out["telemetry"] = conn.execute(delete(telemetry).where(telemetry.c.ts < cut)).rowcount
            out["fleet"] = conn.execute(delete(fleet).where(fleet.c.ts < cut)).rowcount
            out["site_history"] = conn.execute(delete(site_history).where(site_history.c.ts < cut)).rowcount
            last = conn.execute(select(func.max(plans.c.id))).scalar()
            out["plans"] = conn.execute(
                delete(plans).where(plans.c.created_at < cut, plans.c.id != (last or -1))
            ).rowcount
            out["alarms"] = conn.execute(delete(alarms).where(alarms.c.cleared_at < cut)).rowcount
        return out
