"""Schema migrations: a store the 0.1.0 release wrote (tests/controller/data/store-0.1.0.db, made by
make_release_store.py with that release's code) upgrades to the newest schema with everything still
readable through the API over real HTTP, on SQLite and PostgreSQL; one revision down and up again;
the newest revision is exactly the schema the code uses; an older store is refused with the command
to run when migration is off, a newer one always."""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
from pathlib import Path

import httpx
import pytest
import uvicorn
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, create_engine, insert, inspect, select, text

from sparcs.config.schema import validate_config
from sparcs.controller import migrate
from sparcs.controller.api import create_app
from sparcs.controller.migrate import MigrationError
from sparcs.controller.store import SCHEMA_VERSION, Store, make_engine, metadata
from sparcs.factory import build_controller
from tests.controller.conftest import small_fleet_data
from tests.controller.data.make_release_store import START, TOKEN
from tests.ports import free_ports

RELEASE_DB = Path(__file__).parent / "data" / "store-0.1.0.db"


class FixedClock:
    """Ten minutes after the release store's first poll: its stage command is still in force."""

    def now(self) -> float:
        return START + 600.0


def release_store(url: str) -> None:
    """Put the release store's schema and rows at ``url``: a copy of the file for SQLite; for
    PostgreSQL revision 0001 (that schema) filled with the file's rows."""
    if url.startswith("sqlite"):
        shutil.copyfile(RELEASE_DB, url.removeprefix("sqlite:///"))
        return
    engine = make_engine(url)
    migrate.upgrade(engine, migrate.RELEASE_0_1_0)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE alembic_version"))  # as the release left it: schema_version only
    source = create_engine(f"sqlite:///{RELEASE_DB}")
    old = MetaData()
    old.reflect(source)
    target = MetaData()
    target.reflect(engine)
    with source.connect() as src, engine.begin() as dst:
        for name in ("telemetry", "fleet", "site_history", "plans", "commands", "audit", "alarms", "tokens"):
            rows = [dict(r._mapping) for r in src.execute(select(old.tables[name]))]
            dst.execute(insert(target.tables[name]), rows)
            dst.execute(text(f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), (SELECT max(id) FROM {name}))"))
    source.dispose()
    engine.dispose()


async def test_a_release_store_upgrades_and_stays_readable_through_the_api(store_url):
    release_store(store_url)
    store = Store(store_url)  # upgrades on open, as `sparcs run` does
    assert migrate.state(store.engine).up_to_date and store.version() == SCHEMA_VERSION
    data = small_fleet_data(3)
    cfg = validate_config(data)
    ctl = build_controller(cfg, store, FixedClock())
    (port,) = free_ports(1)
    server = uvicorn.Server(uvicorn.Config(create_app(ctl), host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    iso = lambda t: dt.datetime.fromtimestamp(t, dt.UTC).isoformat()  # noqa: E731
    try:
        auth = {"Authorization": f"Bearer {TOKEN}"}  # the release's operator token signs in
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=auth) as http:
            for _ in range(200):
                if server.started:
                    break
                await asyncio.sleep(0.05)
            session = (await http.get("/api/v1/session")).json()
            assert session == {"name": "release-operator", "role": "operator", "may_command": True}
            commands = (await http.get("/api/v1/commands")).json()
            assert [(c["kind"], c["who"]) for c in commands] == [("stage", "release-operator")]
            audit = (await http.get("/api/v1/audit")).json()
            assert [a["action"] for a in audit] == ["dispatch-now", "cancel", "pause", "stage"]
            plan = (await http.get("/api/v1/plan")).json()["plan"]
            assert plan["path"] == "optimal" and set(plan["sites"]) == {s.id for s in cfg.sites}
            device = cfg.sites[0].devices[0].id
            q = {"device": device, "start": iso(START - 60), "end": iso(START + 700), "resolution_s": 60}
            points = (await http.get("/api/v1/history", params=q)).json()["points"]
            assert len(points) >= 10
            site_q = {"site": cfg.sites[0].id, "start": iso(START - 60), "end": iso(START + 700), "resolution_s": 60}
            assert len((await http.get("/api/v1/history", params=site_q)).json()["points"]) >= 10
            fleet_q = {"start": iso(START - 60), "end": iso(START + 700), "resolution_s": 60}
            assert len((await http.get("/api/v1/history", params=fleet_q)).json()["points"]) >= 10
            alarms = (await http.get("/api/v1/alarms")).json()
            assert any(a["source"] == "release-test" for a in alarms)
            tokens_seen = (await http.get("/api/v1/tokens")).status_code
            assert tokens_seen == 403  # an operator is not an admin: roles survived too
            r = await http.post("/api/v1/commands/pause", json={"reason": "after the upgrade"})
            assert r.status_code in (200, 201, 202), r.text  # and the upgraded store takes commands
    finally:
        server.should_exit = True
        await task
        await ctl.close()
        store.close()


def test_one_revision_down_and_up_again_keeps_the_plans(store_url):
    release_store(store_url)
    store = Store(store_url)
    plan = store.last_plan()
    store.close()
    engine = make_engine(store_url)
    assert migrate.downgrade(engine).current == "0004"  # one revision down: curtailment by cause goes
    assert not {"curtailed_w", "curtail_cause"} & {c["name"] for c in inspect(engine).get_columns("site_history")}
    assert migrate.downgrade(engine).current == "0003"  # one down: the edge polls' table goes
    assert migrate.downgrade(engine).current == "0002"  # one down: token expiry and device switches go
    schema = inspect(engine)
    assert "device_control" not in schema.get_table_names()
    assert "expires_at" not in {c["name"] for c in schema.get_columns("tokens")}
    with engine.connect() as conn:
        assert conn.execute(text("SELECT max(version) FROM schema_version")).scalar() == 2
    assert migrate.downgrade(engine).current == migrate.RELEASE_0_1_0
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM plans WHERE data IS NOT NULL")).scalar() == 2
        assert conn.execute(text("SELECT max(version) FROM schema_version")).scalar() == 1
    assert migrate.upgrade(engine).up_to_date
    engine.dispose()
    again = Store(store_url)
    assert again.last_plan().to_record() == plan.to_record()
    again.close()


def test_the_newest_revision_is_the_schema_the_code_uses(store_url):
    store = Store(store_url)
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    store.close()
    assert diff == []


def test_an_older_store_is_refused_without_migration_naming_the_command(tmp_path):
    shutil.copyfile(RELEASE_DB, tmp_path / "sparcs.db")
    with pytest.raises(MigrationError, match="run `sparcs db upgrade`"):
        Store(data_dir=tmp_path, migrate_schema=False)
    store = Store(data_dir=tmp_path)  # the default upgrades, keeping a copy of the file first
    assert (tmp_path / f"sparcs.db.before-{migrate.head_revision()}").exists()
    store.close()


def test_a_store_from_a_newer_release_is_refused(store_url):
    Store(store_url).close()
    engine = make_engine(store_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    engine.dispose()
    with pytest.raises(MigrationError, match="newer SPARCS"):
        Store(store_url)
