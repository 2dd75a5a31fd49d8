"""The history store on SQLite and PostgreSQL alike (``store_url``): durable settings, schema version,
commands across reopen, retention, compact plans, setpoints, gaps, and kill -9 under write load."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select

from sparcs.controller.store import SCHEMA_VERSION, Store, plans
from tests.controller.conftest import make_plan


def test_sqlite_is_durable_and_versioned(tmp_path):
    store = Store(data_dir=tmp_path)
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    assert store.version() == SCHEMA_VERSION
    store.close()
    assert (tmp_path / "sparcs.db").exists()


def test_commands_and_plan_survive_reopen(store_url):
    store = Store(store_url)
    cid = store.add_command(
        kind="stage",
        who="op",
        created_at=100.0,
        start_s=100.0,
        expires_s=200.0,
        params={"stage": "K2"},
        audit_result="ok",
    )
    plan = make_plan(100.0, [800.0, 900.0], {"a": ([None, 2000.0], [1.0, -2.0])})
    store.add_plan(100.0, plan)
    store.close()
    again = Store(store_url)
    active = again.active_commands(150.0)
    assert [c["id"] for c in active] == [cid] and active[0]["params"] == {"stage": "K2"}
    assert again.active_commands(200.0) == []  # expired
    assert again.last_plan().to_record() == plan.to_record()
    entry = again.audit_log()[0]
    assert entry["who"] == "op" and entry["action"] == "stage" and entry["params"]["command_id"] == cid
    again.close()


def test_cancel_is_audited_and_idempotent(store_url):
    store = Store(store_url)
    cid = store.add_command(
        kind="pause", who="op", created_at=1.0, start_s=1.0, expires_s=None, params={}, audit_result="ok"
    )
    assert store.cancel_commands([cid], who="op2", at=2.0, action="resume", params={}) == [cid]
    assert store.cancel_commands([cid], who="op2", at=3.0, action="resume", params={}) == []
    assert store.active_commands(4.0) == []
    results = [a["result"] for a in store.audit_log()]
    assert results == ["noop", "ok", "ok"]
    store.close()


def test_alarms_deduplicate_and_clear(store_url):
    store = Store(store_url)
    assert store.raise_alarm(at=1.0, severity="warning", source="device:a", message="stale") is not None
    assert store.raise_alarm(at=2.0, severity="warning", source="device:a", message="stale") is None
    assert len(store.alarms(active_only=True)) == 1
    assert store.clear_alarms("device:a", 3.0) == 1
    assert store.alarms(active_only=True) == [] and len(store.alarms()) == 1
    store.close()


def test_prune_keeps_commands_audit_and_the_last_plan(store_url):
    store = Store(store_url)
    day = 86_400.0
    row = {"device_id": "d", "site_id": "s", "status": "online", "values": {}}
    store.add_poll([{"ts": 0.0, **row}], {"ts": 0.0, "pv_w": 1.0})
    store.add_poll([{"ts": 5 * day, **row}])
    store.add_plan(0.0, make_plan(0.0, [900.0]))
    store.add_plan(1.0, make_plan(1.0, [900.0]))
    store.add_command(kind="stage", who="op", created_at=0.0, start_s=0.0, expires_s=10.0, params={}, audit_result="ok")
    out = store.prune(now_s=5 * day, retention_days=2)
    assert out["telemetry"] == 1 and out["fleet"] == 1 and out["plans"] == 1  # the older plan; the last one stays
    assert store.last_plan().start_s == 1.0
    assert len(store.device_history("d", 0, 10 * day)) == 1
    assert len(store.audit_log()) == 1
    store.close()


def test_a_plan_is_stored_once_compact_and_read_back(store_url):
    store = Store(store_url)
    plan = make_plan(
        0.0, [900.0] * 4, {"a": ([None, 2000.0, 1500.5, None], [1.0, -2.0, 0.0, None]), "b": ([0.0] * 4, [0.0] * 4)}
    )
    store.add_plan(0.0, plan)
    with store.engine.connect() as conn:
        row = conn.execute(select(plans)).one()
    assert row.site_ids == ["a", "b"] and isinstance(row.site_data, bytes)
    assert (
        store.last_plan().to_record() == plan.to_record()
    )  # releases (None/NaN) survive; these values are exact in float32
    store.close()


def test_setpoints_written_and_read_back_are_kept_per_device(store_url):
    store = Store(store_url)
    row = {"action": "limit", "ok": True, "clamped": False, "mismatch": False, "detail": ""}
    store.add_setpoints(
        [
            {**row, "ts": 100.0, "device_id": "pv-1", "requested_w": 3000.0, "written_w": 3000.0, "readback_w": 2999.0},
            {**row, "ts": 100.0, "device_id": "pv-2", "requested_w": 1000.0, "written_w": 1000.0, "readback_w": 1000.0},
            {
                **row,
                "ts": 160.0,
                "device_id": "pv-1",
                "action": "release",
                "requested_w": None,
                "written_w": None,
                "readback_w": None,
            },
        ]
    )
    got = store.setpoint_history("pv-1", 0.0, 200.0)
    assert [(r["ts"], r["action"], r["written_w"], r["readback_w"]) for r in got] == [
        (100.0, "limit", 3000.0, 2999.0),
        (160.0, "release", None, None),
    ]
    assert store.setpoint_history("pv-1", 150.0, 200.0)[0]["action"] == "release"
    store.close()


def test_retention_is_per_table_and_gaps_are_kept(store_url):
    store = Store(store_url)
    day = 86_400.0
    row = {"device_id": "d", "site_id": "s", "status": "online", "values": {}}
    store.add_poll([{"ts": 0.0, **row}], {"ts": 0.0, "pv_w": 1.0}, [{"ts": 0.0, "site_id": "s", "pv_w": 1.0}])
    sp = {"device_id": "d", "action": "limit", "ok": True, "clamped": False, "mismatch": False, "detail": ""}
    store.add_setpoints([{**sp, "ts": 0.0}])
    store.add_gap(start_s=0.0, end_s=60.0, writes_lost=3, reason="test")
    out = store.prune(now_s=5 * day, retention_days=30, per_table={"telemetry": 2, "setpoints": 2})
    assert out["telemetry"] == 1 and out["setpoints"] == 1  # past their own 2 days
    assert out["fleet"] == 0 and out["site_history"] == 0 and out["history_gaps"] == 0  # within the 30 days
    assert [g["writes_lost"] for g in store.gaps()] == [3]
    store.close()


def test_the_stores_own_alarm_shows_while_it_fails(store_url):
    store = Store(store_url)
    store.raise_alarm(at=1.0, severity="warning", source="device:a", message="stale")
    store.outage = {
        "id": 0,
        "raised_at": 2.0,
        "severity": "critical",
        "source": "store",
        "message": "fails",
        "cleared_at": None,
    }
    assert [a["source"] for a in store.alarms(active_only=True)] == ["store", "device:a"]
    assert len(store.alarms(limit=1)) == 1
    store.outage = None
    assert [a["source"] for a in store.alarms()] == ["device:a"]
    store.close()


def test_kill_9_under_write_load_loses_nothing_acknowledged(store_url):
    """A writer killed mid-transaction: the store is sound and every acknowledged command is there."""
    Store(store_url).close()  # the schema exists before the load starts
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.controller.store_load", store_url],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    acked: list[int] = []
    try:
        assert child.stdout is not None
        for line in child.stdout:
            acked.append(int(line.split()[0]))
            if len(acked) >= 150:
                break
    finally:
        os.kill(child.pid, signal.SIGKILL)  # mid-write: it never stops between rounds
        child.wait()
    assert child.returncode == -signal.SIGKILL and len(acked) >= 150
    store = Store(store_url)
    try:
        assert store.integrity_problems() == []
        stored = {c["id"] for c in store.active_commands(0.0)}
        assert set(acked) <= stored  # nothing acknowledged is lost (the last round may be there unprinted)
        assert len(stored) - len(acked) <= 1
        audited = {a["params"]["command_id"] for a in store.audit_log(limit=10_000)}
        assert stored == audited  # each command with its audit entry, never one without the other
        n_polls = len(store.fleet_history(0.0, 1e9))
        assert len(store.site_history("s0", 0.0, 1e9)) == n_polls  # never half a poll
        assert sum(len(store.device_history(f"d{i}", 0.0, 1e9)) for i in range(20)) == 20 * n_polls
    finally:
        store.close()


def test_postgresql_crashing_under_write_load_recovers_everything_acknowledged(pg_cluster):
    """The server itself stopped without a checkpoint (``pg_ctl -m immediate``) mid-load, then restarted."""
    url = pg_cluster.new_database()
    Store(url).close()
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.controller.store_load", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    acked: list[int] = []
    try:
        assert child.stdout is not None
        for line in child.stdout:
            acked.append(int(line.split()[0]))
            if len(acked) == 100:
                pg_cluster.stop("immediate")  # the writer's next commit fails; what was acknowledged must be on disk
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
        pg_cluster.start()
    assert child.returncode != 0 and len(acked) >= 100
    store = Store(url)
    try:
        assert store.integrity_problems() == []
        stored = {c["id"] for c in store.active_commands(0.0)}
        assert set(acked) <= stored
    finally:
        store.close()
