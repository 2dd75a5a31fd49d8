"""`sparcs bench store`: the bytes of history one simulated stretch leaves per site and day, after and
before the compact schema (docs/storage.md "Bytes per site and day").

The real controller polls, plans (the solver process), writes and guards the first N demo sites
(simulated, faults off, clear June noon onwards) on a stepped clock at the fleet file's cadence
(poll 10 s, dispatch 300 s, telemetry kept per 60 s). Its SQLite store is measured per table (SQLite's
``dbstat``, after VACUUM); then a copy is downgraded to revision 0001, the 0.1.0 release's schema
(plans as full JSON, no setpoint rows), and measured the same way: the same history as that release
stores it. Figures are per site and per day of history (scaled from the stretch).
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from sparcs.config.schema import CONFIG_DIR, validate_config
from sparcs.controller import migrate
from sparcs.controller.store import Store, make_engine
from sparcs.factory import build_controller
from sparcs.simulators.clock import SimClock
from sparcs.simulators.fleet import FleetHost

START = dt.datetime(2026, 6, 21, 8, 0, tzinfo=dt.UTC).timestamp()  # 10:00 in Leipzig


def bench_fleet(n_sites: int) -> dict[str, Any]:
    data = copy.deepcopy(yaml.safe_load((CONFIG_DIR / "demo.yaml").read_text()))
    if n_sites > len(data["sites"]):
        raise ValueError(f"the demo fleet has {len(data['sites'])} sites; choose --sites up to that")
    data["sites"] = data["sites"][:n_sites]
    ids = {d["id"] for s in data["sites"] for d in s["devices"]}
    sim = data["simulation"]
    sim["faults"], sim["control_port"] = [], None
    sim["variants"] = {k: v for k, v in sim["variants"].items() if k in ids}
    return data


def table_bytes(db: Path) -> dict[str, int]:
    """Bytes per table, its indexes included (SQLite ``dbstat`` after VACUUM)."""
    with sqlite3.connect(db) as conn:
        conn.execute("VACUUM")
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        owner = dict(conn.execute("SELECT name, tbl_name FROM sqlite_master WHERE type IN ('table', 'index')"))
        out = dict.fromkeys(tables, 0)
        for name, size in conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name"):
            table = owner.get(name, name.removeprefix("sqlite_autoindex_").rsplit("_", 1)[0])
            out[table] = out.get(table, 0) + int(size)
    conn.close()
    return out


async def _drive(data: dict[str, Any], hours: float, store: Store) -> dict[str, int]:
    cfg = validate_config(data)
    clock = SimClock(START, stepped=True)
    host = FleetHost(cfg, clock=clock, auto_ports=True)
    await host.start()
    ctl = build_controller(host.config, store, clock)
    poll_s, dispatch_s = cfg.dispatch.poll_interval_s, cfg.dispatch.dispatch_interval_s
    polls = round(hours * 3600 / poll_s)
    try:
        await asyncio.to_thread(ctl.planner.start)
        for k in range(polls):
            await ctl.cycle(dispatch=k % round(dispatch_s / poll_s) == 0)
            await host.step(poll_s)
    finally:
        await ctl.close()
        await host.stop()
    return {"polls": polls}


def store_bench(n_sites: int, hours: float) -> dict[str, Any]:
    """Run the stretch and measure; returns the JSON the command prints."""
    t0 = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="sparcs-store-bench-"))
    try:
        store = Store(data_dir=work / "after")
        try:
            ran = asyncio.run(_drive(bench_fleet(n_sites), hours, store))
            with store.engine.connect() as conn:
                rows = {
                    t: int(conn.exec_driver_sql(f'SELECT count(*) FROM "{t}"').scalar() or 0)
                    for t in ("telemetry", "fleet", "site_history", "plans", "setpoints")
                }
        finally:
            store.close()
        after_db = work / "after" / "sparcs.db"
        before_db = work / "before.db"
        shutil.copyfile(after_db, before_db)
        engine = make_engine(f"sqlite:///{before_db}")
        migrate.downgrade(engine)  # the 0.1.0 release's schema: plans as full JSON, no setpoints
        engine.dispose()
        after, before = table_bytes(after_db), table_bytes(before_db)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    scale = 24.0 / hours / n_sites

    def per_site_day(tables: dict[str, int]) -> dict[str, int]:
        return {t: round(b * scale) for t, b in sorted(tables.items()) if b}

    history = ("telemetry", "fleet", "site_history", "plans", "setpoints")
    a = sum(after.get(t, 0) for t in history) * scale
    b = sum(before.get(t, 0) for t in history) * scale
    return {
        "sites": n_sites,
        "hours": hours,
        "polls": ran["polls"],
        "rows": rows,
        "bytes_per_site_per_day": {"before": round(b), "after": round(a), "ratio": round(b / a, 2)},
        "plans_bytes_per_site_per_day": {
            "before": round(before.get("plans", 0) * scale),
            "after": round(after.get("plans", 0) * scale),
        },
        "tables_after": per_site_day(after),
        "tables_before": per_site_day(before),
        "wall_s": round(time.perf_counter() - t0, 1),
    }
