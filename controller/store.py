"""The history store: telemetry, fleet aggregates, plans, operator commands, audit log, alarms, API tokens.

SQLAlchemy Core on a SQLite file in the data directory by default; ``storage.url`` switches to
PostgreSQL (``postgresql+psycopg://user:password@host/db``, psycopg 3); both are tested with the same
suite. The schema is created and upgraded by Alembic migrations (:mod:`sparcs.controller.migrate`,
docs/storage.md "Migrations"); ``schema_version`` keeps the release's version number beside them.
History writes go through one writer thread (:mod:`sparcs.controller.history`), never the poll loop.

SQLite runs in WAL mode with ``synchronous=FULL``: a command is committed (and fsynced) before the
API acknowledges it, so nothing acknowledged is lost even after kill -9.

Times are Unix seconds (UTC) as floats; powers in W with the signs of docs/definitions.md "Signs" (``grid_w`` > 0
import, ``battery_w`` > 0 discharge, ``export_w`` ≥ 0).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Engine,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    case,
    create_engine,
    delete,
    event,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, CursorResult
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

from sparcs.controller import migrate
from sparcs.controller.migrate import MigrationError
from sparcs.controller.plan import Plan
from sparcs.controller.plan_codec import PackedPlan, pack_plan, unpack_plan
from sparcs.controller.setpoints import CURTAIL_CAUSES

SCHEMA_VERSION = 5
"""The release's schema number kept in ``schema_version`` (Alembic revision 0005)."""
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

edge_polls = Table(
    "edge_polls",
    metadata,
    # Every poll an edge sent, once: (site, sequence number) is the key, so a resent poll is dropped.
    Column("site_id", String(64), primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("ts", Float, nullable=False),  # the edge's poll time
    Column("received_at", Float, nullable=False),
    Column("edge_id", String(64), nullable=False),
    Column("devices", JSON, nullable=False),  # {device_id: {status, values: {key: [value | None, quality]}}}
    Index("ix_edge_polls_site_ts", "site_id", "ts"),
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
    # Curtailment now (docs/open-data.md "Curtailment"): the forecast PV power the limit in force
    # holds back (W ≥ 0; None: unknown) and the cause of that limit (caps, stages, negative_prices).
    Column("curtailed_w", Float),
    Column("curtail_cause", String(16)),
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
    # The compact form of :mod:`sparcs.controller.plan_codec`: header, site ids, packed site series.
    Column("header", JSON, nullable=False),
    Column("site_ids", JSON, nullable=False),
    Column("site_data", LargeBinary, nullable=False),
)

setpoints = Table(
    "setpoints",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ts", Float, nullable=False),  # when written (or tried)
    Column("device_id", String(64), nullable=False),
    Column("action", String(16), nullable=False),  # limit, release, battery, failed
    Column("ok", Boolean, nullable=False),  # written and read back as intended
    Column("requested_w", Float),  # what the controller asked for; None = release
    Column("written_w", Float),  # after clamping to the device's range; None = release
    Column("readback_w", Float),  # what the device reported back after the write
    Column("clamped", Boolean, nullable=False),
    Column("mismatch", Boolean, nullable=False),
    Column("detail", Text, nullable=False),
    Index("ix_setpoints_device_ts", "device_id", "ts"),
    Index("ix_setpoints_ts", "ts"),
)

history_gaps = Table(
    "history_gaps",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("start_s", Float, nullable=False, index=True),
    Column("end_s", Float, nullable=False),
    Column("writes_lost", Integer, nullable=False),  # queued writes dropped (polls, plans, setpoint batches)
    Column("reason", Text, nullable=False),
)

HISTORY_TABLES = ("telemetry", "fleet", "site_history", "plans", "setpoints", "alarms", "history_gaps")
"""The tables retention prunes (commands, audit and tokens are kept: the legal record)."""

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
    Column("expires_at", Float),  # None: never expires
)

# The run-time control switch per device (controller/device_control.py): a row only for a device an
# operator switched; effective control = the fleet file's ``control`` AND ``controlled`` here.
device_control = Table(
    "device_control",
    metadata,
    Column("device_id", String(64), primary_key=True),
    Column("controlled", Integer, nullable=False),  # 1 controlled, 0 monitor-only
    Column("changed_at", Float, nullable=False),
    Column("changed_by", String(64), nullable=False),
)


def _inserted_id(res: CursorResult[Any]) -> int:
    """The primary key of the row an insert added."""
    key = res.inserted_primary_key
    if key is None:
        raise RuntimeError("the insert returned no primary key")
    return int(key[0])


def default_url(data_dir: Path) -> str:
    return f"sqlite:///{Path(data_dir).resolve() / DB_FILE}"


def make_engine(url: str) -> Engine:
    """The engine of a store URL: SQLite with the pragmas below, or PostgreSQL through psycopg 3
    (a plain ``postgresql://`` URL is taken as psycopg's); no schema work."""
    if url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    engine = create_engine(url, pool_pre_ping=not url.startswith("sqlite"))
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    # FULL: every commit is fsynced, so an acknowledged command survives kill -9 and power loss.
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()


class _QuarterOf(FunctionElement[int]):
    """The quarter-hour a Unix time falls in (``floor(ts / 900)``) in the store's SQL dialect."""

    type = Integer()
    inherit_cache = True


@compiles(_QuarterOf)
def _quarter_of_default(element: _QuarterOf, compiler: Any, **kw: Any) -> str:
    return f"FLOOR({compiler.process(element.clauses, **kw)} / 900)"


@compiles(_QuarterOf, "sqlite")
def _quarter_of_sqlite(element: _QuarterOf, compiler: Any, **kw: Any) -> str:
    # SQLite has FLOOR only when built with its math functions; times are positive, so truncation is floor.
    return f"(CAST({compiler.process(element.clauses, **kw)} AS INTEGER) / 900)"


def _quarter_of(ts: ColumnElement[float]) -> _QuarterOf:
    return _QuarterOf(ts)


@dataclass(frozen=True)
class LoadQuarters:
    """Stored household load per site and quarter-hour: mean (W) over the site history rows in it."""

    site_ids: list[str]
    start_s: list[float]
    mean_w: list[float]
    rows: list[int]


@dataclass(frozen=True)
class SiteQuarter:
    """One site's recorded samples in one quarter-hour, averaged: powers in W (signs of
    docs/definitions.md "Signs"), each the mean over the samples where it is known; ``samples``: how
    many site-history rows the quarter-hour holds; ``curtailed_w``: per cause, the mean over all
    samples of the curtailed power with that cause (0 W where another or none)."""

    site_id: str
    start_s: float
    samples: int
    pv_w: float | None
    export_w: float | None
    battery_abs_w: float | None
    flex_up_w: float | None
    flex_down_w: float | None
    curtailed_w: Mapping[str, float]


@dataclass(frozen=True)
class AlarmChange:
    """One alarm change for :meth:`Store.change_alarms`: ``active`` raises an alarm of ``source`` with
    ``message`` and ``severity`` (unless one with that message is open), else clears the source's open
    alarms; ``at`` is the time of the change (Unix s)."""

    at: float
    source: str
    active: bool
    message: str = ""
    severity: str = "warning"


def _raise_alarm(conn: Connection, c: AlarmChange) -> int | None:
    open_same = conn.execute(
        select(alarms.c.id).where(
            alarms.c.source == c.source, alarms.c.message == c.message, alarms.c.cleared_at.is_(None)
        )
    ).first()
    if open_same:
        return None
    res = conn.execute(insert(alarms).values(raised_at=c.at, severity=c.severity, source=c.source, message=c.message))
    return _inserted_id(res)


def _clear_alarms(conn: Connection, source: str, at: float) -> int:
    res = conn.execute(
        update(alarms).where(alarms.c.source == source, alarms.c.cleared_at.is_(None)).values(cleared_at=at)
    )
    return res.rowcount


@dataclass(frozen=True)
class TokenRow:
    name: str
    role: str
    token_sha256: str
    created_at: float
    expires_at: float | None = None  # Unix s; None: never


@dataclass(frozen=True)
class DeviceControlRow:
    """A device's run-time control switch: ``controlled`` False is monitor-only, set by ``changed_by``."""

    device_id: str
    controlled: bool
    changed_at: float
    changed_by: str


class Store:
    """All persistent state of the controller, behind small methods; one instance per process."""

    def __init__(self, url: str | None = None, *, data_dir: Path | None = None, migrate_schema: bool = True):
        """Open (and create) the store. An older schema is upgraded when ``migrate_schema`` (SQLite: a
        copy of the file is kept beside it first), else refused with :class:`MigrationError` naming the
        command to run; a newer one (from a later release) is always refused."""
        if url is None:
            if data_dir is None:
                raise ValueError("Store needs a storage.url or a data directory")
            Path(data_dir).mkdir(parents=True, exist_ok=True)
            url = default_url(Path(data_dir))
        self.url = url
        self.engine: Engine = make_engine(url)
        self.outage: dict[str, Any] | None = None  # the store's own alarm while it fails (set by the writer)
        try:
            self._open_schema(migrate_schema)
        except BaseException:
            self.engine.dispose()
            raise

    @property
    def display_url(self) -> str:
        """The URL without its password (for messages and logs)."""
        return self.engine.url.render_as_string(hide_password=True)

    def _open_schema(self, migrate_schema: bool) -> None:
        s = migrate.state(self.engine)
        if not s.known:
            raise MigrationError(f"{self.display_url}: {migrate.newer_message(s)}")
        if s.up_to_date:
            return
        if s.current is not None and not migrate_schema:
            raise MigrationError(
                f"{self.display_url}: the store is at schema revision {s.current}, this program needs {s.head}; "
                "run `sparcs db upgrade` with the same --data-dir/--config (a backup first: `sparcs backup DEST`), "
                "or start without --no-migrate"
            )
        if s.current is not None and self.engine.dialect.name == "sqlite":
            from sparcs.controller.backup import sqlite_backup

            db = Path(self.engine.url.database or "")
            sqlite_backup(self.engine, db.with_name(f"{db.name}.before-{s.head}"))
        migrate.upgrade(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def version(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.max(schema_version.c.version))).scalar() or 0)

    def integrity_problems(self) -> list[str]:
        """What a consistency check finds wrong (empty when sound): SQLite's ``integrity_check``; on
        PostgreSQL every table scanned and, where the ``amcheck`` extension is allowed, every B-tree index checked."""
        with self.engine.begin() as conn:
            if self.engine.dialect.name == "sqlite":
                rows = [r[0] for r in conn.exec_driver_sql("PRAGMA integrity_check")]
                return [] if rows == ["ok"] else rows
            for table in inspect(conn).get_table_names():
                conn.execute(text(f'SELECT count(*) FROM "{table}"'))
        with self.engine.begin() as conn:
            try:
                conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS amcheck")
            except SQLAlchemyError:
                return []  # not allowed here: the scans above are the check
            indexes = conn.exec_driver_sql(
                "SELECT c.oid::regclass::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_am a ON a.oid = c.relam "
                "WHERE n.nspname = 'public' AND a.amname = 'btree'"
            ).scalars()
            for name in list(indexes):
                conn.exec_driver_sql(f"SELECT bt_index_check('{name}'::regclass, true)")
        return []

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

    def site_quarters(self, start_s: float, end_s: float) -> list[SiteQuarter]:
        """Every site's samples per quarter-hour (``QUARTER_S``, aligned to the clock) in
        [start_s, end_s), averaged in the database (:class:`SiteQuarter`), ordered by time and site."""
        h = site_history.c
        quarter = _quarter_of(h.ts)
        by_cause = [
            func.sum(case((h.curtail_cause == cause, func.coalesce(h.curtailed_w, 0.0)), else_=0.0)).label(cause)
            for cause in CURTAIL_CAUSES
        ]
        q = (
            select(
                h.site_id,
                quarter.label("quarter"),
                func.count().label("samples"),
                func.avg(h.pv_w).label("pv_w"),
                func.avg(h.export_w).label("export_w"),
                func.avg(func.abs(h.battery_w)).label("battery_abs_w"),
                func.avg(h.flex_up_w).label("flex_up_w"),
                func.avg(h.flex_down_w).label("flex_down_w"),
                *by_cause,
            )
            .where(h.ts >= start_s, h.ts < end_s)
            .group_by(h.site_id, quarter)
            .order_by(quarter, h.site_id)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()

        def mean(v: Any) -> float | None:
            return None if v is None else float(v)

        return [
            SiteQuarter(
                site_id=r.site_id,
                start_s=float(r.quarter) * 900.0,
                samples=int(r.samples),
                pv_w=mean(r.pv_w),
                export_w=mean(r.export_w),
                battery_abs_w=mean(r.battery_abs_w),
                flex_up_w=mean(r.flex_up_w),
                flex_down_w=mean(r.flex_down_w),
                curtailed_w={c: float(getattr(r, c) or 0.0) / int(r.samples) for c in CURTAIL_CAUSES},
            )
            for r in rows
        ]

    def site_history_first_ts(self) -> float | None:
        """The time of the oldest site-history row (Unix s), or None when there is none."""
        with self.engine.connect() as conn:
            first = conn.execute(select(func.min(site_history.c.ts))).scalar()
        return None if first is None else float(first)

    def load_quarters(self, start_s: float, end_s: float) -> LoadQuarters:
        """Every site's mean household load per quarter-hour in [start, end) and the rows behind each
        (one query, grouped in the database: the forecasts learn from it after a restart)."""
        q = _quarter_of(site_history.c.ts)
        stmt = (
            select(site_history.c.site_id, q, func.avg(site_history.c.load_w), func.count(site_history.c.load_w))
            .where(site_history.c.ts >= start_s, site_history.c.ts < end_s, site_history.c.load_w.is_not(None))
            .group_by(site_history.c.site_id, q)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return LoadQuarters(
            [r[0] for r in rows],
            [float(r[1]) * 900.0 for r in rows],
            [float(r[2]) for r in rows],
            [int(r[3]) for r in rows],
        )

    def add_edge_polls(self, rows: Sequence[dict[str, Any]]) -> int:
        """Store the edge polls among ``rows`` (site_id, seq, ts, received_at, edge_id, devices) not
        stored before, in one transaction; a (site_id, seq) already stored is skipped. Returns how
        many were new."""
        if not rows:
            return 0
        with self.engine.begin() as conn:
            sites = {r["site_id"] for r in rows}
            lo, hi = min(r["seq"] for r in rows), max(r["seq"] for r in rows)
            have = {
                (r.site_id, r.seq)
                for r in conn.execute(
                    select(edge_polls.c.site_id, edge_polls.c.seq).where(
                        edge_polls.c.site_id.in_(sites), edge_polls.c.seq.between(lo, hi)
                    )
                )
            }
            new: dict[tuple[str, int], dict[str, Any]] = {}
            for r in rows:
                key = (r["site_id"], r["seq"])
                if key not in have:
                    new.setdefault(key, dict(r))
            if new:
                conn.execute(insert(edge_polls), list(new.values()))
            return len(new)

    def edge_polls(self, site_id: str, start_s: float, end_s: float) -> list[dict[str, Any]]:
        """The polls of ``site_id``'s edge with ``start_s`` ≤ ts < ``end_s``, by sequence number."""
        with self.engine.connect() as conn:
            res = conn.execute(
                select(edge_polls)
                .where(edge_polls.c.site_id == site_id, edge_polls.c.ts >= start_s, edge_polls.c.ts < end_s)
                .order_by(edge_polls.c.seq)
            )
            return [dict(r._mapping) for r in res]

    # -- plans --------------------------------------------------------------------------------

    def add_plan(self, created_at: float, plan: Plan) -> int:
        """Store a plan in its compact form (:mod:`sparcs.controller.plan_codec`); returns its id."""
        packed = pack_plan(plan)
        with self.engine.begin() as conn:
            res = conn.execute(
                insert(plans).values(
                    created_at=created_at,
                    start_s=plan.start_s,
                    path=plan.path,
                    reason=plan.reason,
                    objective_eur=plan.objective_eur,
                    header=packed.header,
                    site_ids=packed.site_ids,
                    site_data=packed.site_data,
                )
            )
            return _inserted_id(res)

    def last_plan(self) -> Plan | None:
        """The plan stored last, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(plans.c.header, plans.c.site_ids, plans.c.site_data).order_by(plans.c.id.desc()).limit(1)
            ).first()
            return unpack_plan(PackedPlan(row.header, row.site_ids, row.site_data)) if row else None

    # -- setpoints written and read back ------------------------------------------------------

    def add_setpoints(self, rows: Sequence[dict[str, Any]]) -> None:
        """Record setpoint writes: ts, device_id, action, ok, requested_w, written_w, readback_w,
        clamped, mismatch, detail (W; battery + discharge)."""
        if rows:
            with self.engine.begin() as conn:
                conn.execute(insert(setpoints), list(rows))

    def setpoint_history(
        self, device_id: str, start_s: float, end_s: float, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """The setpoints written to ``device_id`` in [start_s, end_s), oldest first (the first ``limit``)."""
        with self.engine.connect() as conn:
            res = conn.execute(
                select(setpoints)
                .where(setpoints.c.device_id == device_id, setpoints.c.ts >= start_s, setpoints.c.ts < end_s)
                .order_by(setpoints.c.ts, setpoints.c.id)
                .limit(limit)
            )
            return [dict(r._mapping) for r in res]

    # -- gaps in the history --------------------------------------------------------------------

    def add_gap(self, *, start_s: float, end_s: float, writes_lost: int, reason: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                insert(history_gaps).values(start_s=start_s, end_s=end_s, writes_lost=writes_lost, reason=reason)
            )

    def gaps(self, start_s: float = 0.0, end_s: float = float("inf")) -> list[dict[str, Any]]:
        """Spans whose history was not stored, overlapping [start_s, end_s), oldest first."""
        with self.engine.connect() as conn:
            res = conn.execute(
                select(history_gaps)
                .where(history_gaps.c.end_s >= start_s, history_gaps.c.start_s < end_s)
                .order_by(history_gaps.c.start_s)
            )
            return [dict(r._mapping) for r in res]

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

    def audit_log(
        self,
        limit: int = 100,
        before_id: int | None = None,
        *,
        offset: int = 0,
        who: str | None = None,
        action: str | None = None,
        oldest_first: bool = False,
    ) -> list[dict[str, Any]]:
        """Audit entries newest first (``oldest_first``: oldest first), older than ``before_id``, of one
        ``who`` and one ``action`` when given; ``offset`` of them skipped, at most ``limit``."""
        order = audit.c.id.asc() if oldest_first else audit.c.id.desc()
        q = select(audit).where(*self._audit_filter(before_id, who, action)).order_by(order)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q.offset(offset).limit(limit))]

    def audit_count(self, before_id: int | None = None, *, who: str | None = None, action: str | None = None) -> int:
        """How many audit entries :meth:`audit_log` pages through with these filters."""
        q = select(func.count()).select_from(audit).where(*self._audit_filter(before_id, who, action))
        with self.engine.connect() as conn:
            return int(conn.execute(q).scalar() or 0)

    @staticmethod
    def _audit_filter(before_id: int | None, who: str | None, action: str | None) -> list[Any]:
        where = [] if before_id is None else [audit.c.id < before_id]
        where += [] if who is None else [audit.c.who == who]
        return where + ([] if action is None else [audit.c.action == action])

    # -- alarms -------------------------------------------------------------------------------

    def raise_alarm(self, *, at: float, severity: str, source: str, message: str) -> int | None:
        """Raise an alarm unless the same source already has one open with the same message."""
        with self.engine.begin() as conn:
            return _raise_alarm(conn, AlarmChange(at, source, True, message, severity))

    def clear_alarms(self, source: str, at: float) -> int:
        with self.engine.begin() as conn:
            return _clear_alarms(conn, source, at)

    def change_alarms(self, changes: Sequence[AlarmChange]) -> None:
        """Raise and clear alarms in the order given, all in one transaction (one commit for a poll's
        or a burst's changes): either every change is stored or, on an error, none is."""
        with self.engine.begin() as conn:
            for c in changes:
                if c.active:
                    _raise_alarm(conn, c)
                else:
                    _clear_alarms(conn, c.source, c.at)

    def alarms(
        self,
        *,
        active_only: bool = False,
        limit: int = 200,
        offset: int = 0,
        severity: str | None = None,
        oldest_first: bool = False,
    ) -> list[dict[str, Any]]:
        """Alarms, newest first (``oldest_first``: oldest first), of one ``severity`` when given, ``offset``
        of them skipped; while the store fails its own alarm (:attr:`outage`, not storable then) comes
        first on the first page, and it is stored with its clearing time once the store works again."""
        order = alarms.c.id.asc() if oldest_first else alarms.c.id.desc()
        q = select(alarms).where(*self._alarm_filter(active_only, severity)).order_by(order)
        with self.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(q.offset(offset).limit(limit))]
        outage = self.outage
        return ([dict(outage), *rows] if outage is not None and offset == 0 else rows)[:limit]

    def alarm_count(self, *, active_only: bool = False, severity: str | None = None) -> int:
        """How many stored alarms :meth:`alarms` pages through with these filters."""
        q = select(func.count()).select_from(alarms).where(*self._alarm_filter(active_only, severity))
        with self.engine.connect() as conn:
            return int(conn.execute(q).scalar() or 0)

    @staticmethod
    def _alarm_filter(active_only: bool, severity: str | None) -> list[Any]:
        where = [alarms.c.cleared_at.is_(None)] if active_only else []
        return where + ([] if severity is None else [alarms.c.severity == severity])

    # -- API tokens ---------------------------------------------------------------------------

    def add_token(self, name: str, role: str, token_sha256: str, at: float, expires_at: float | None = None) -> None:
        with self.engine.begin() as conn:
            existing = conn.execute(select(tokens.c.id).where(tokens.c.name == name)).first()
            if existing:
                raise ValueError(f"a token named '{name}' exists already; revoke it or choose another name")
            conn.execute(
                insert(tokens).values(
                    name=name, role=role, token_sha256=token_sha256, created_at=at, expires_at=expires_at
                )
            )

    def list_tokens(self) -> list[TokenRow]:
        with self.engine.connect() as conn:
            res = conn.execute(select(tokens).order_by(tokens.c.name))
            return [TokenRow(r.name, r.role, r.token_sha256, r.created_at, r.expires_at) for r in res]

    def rotate_token(self, name: str, token_sha256: str, at: float, expires_at: float | None) -> bool:
        """Replace the secret (and expiry) of the token ``name``, keeping its role; False for an unknown name."""
        with self.engine.begin() as conn:
            res = conn.execute(
                update(tokens)
                .where(tokens.c.name == name)
                .values(token_sha256=token_sha256, created_at=at, expires_at=expires_at)
            )
            return res.rowcount > 0

    def revoke_token(self, name: str) -> bool:
        """Revoking deletes the row, so the name can be reused; returns False for an unknown name."""
        with self.engine.begin() as conn:
            return conn.execute(delete(tokens).where(tokens.c.name == name)).rowcount > 0

    # -- run-time control switch per device ---------------------------------------------------

    def set_device_control(self, device_id: str, controlled: bool, *, who: str, at: float) -> None:
        """Record a device's control switch and its audit entry in one durable transaction."""
        with self.engine.begin() as conn:
            conn.execute(delete(device_control).where(device_control.c.device_id == device_id))
            conn.execute(
                insert(device_control).values(
                    device_id=device_id, controlled=int(controlled), changed_at=at, changed_by=who
                )
            )
            conn.execute(
                insert(audit).values(
                    ts=at,
                    who=who,
                    action="device-control",
                    params={"device": device_id, "controlled": controlled},
                    result="ok",
                )
            )

    def device_controls(self) -> list[DeviceControlRow]:
        """Every device's recorded control switch."""
        with self.engine.connect() as conn:
            res = conn.execute(select(device_control).order_by(device_control.c.device_id))
            return [DeviceControlRow(r.device_id, bool(r.controlled), r.changed_at, r.changed_by) for r in res]

    # -- retention ----------------------------------------------------------------------------

    def prune(
        self, now_s: float, retention_days: int, per_table: Mapping[str, int | None] | None = None
    ) -> dict[str, int]:
        """Delete history past retention: ``retention_days``, or ``per_table[table]`` where given, for
        each of :data:`HISTORY_TABLES`; plans keep the latest, alarms only go once cleared. Returns
        the rows deleted per table.

        Commands and the audit log are kept: they are the legal record of what operators ordered.
        """
        days = {t: (per_table or {}).get(t) or retention_days for t in HISTORY_TABLES}

        def cut(table: str) -> float:
            return now_s - days[table] * 86_400.0

        out: dict[str, int] = {}
        with self.engine.begin() as conn:
            for table, col in ((telemetry, "ts"), (fleet, "ts"), (site_history, "ts"), (setpoints, "ts")):
                out[table.name] = conn.execute(delete(table).where(table.c[col] < cut(table.name))).rowcount
            # the edges' polls are telemetry: kept as long
            out["edge_polls"] = conn.execute(delete(edge_polls).where(edge_polls.c.ts < cut("telemetry"))).rowcount
            last = conn.execute(select(func.max(plans.c.id))).scalar()
            out["plans"] = conn.execute(
                delete(plans).where(plans.c.created_at < cut("plans"), plans.c.id != (last or -1))
            ).rowcount
            out["alarms"] = conn.execute(delete(alarms).where(alarms.c.cleared_at < cut("alarms"))).rowcount
            out["history_gaps"] = conn.execute(
                delete(history_gaps).where(history_gaps.c.end_s < cut("history_gaps"))
            ).rowcount
        return out
