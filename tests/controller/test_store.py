"""The history store: durable settings, schema version, commands across reopen, retention."""

from __future__ import annotations

from sparcs.controller.store import SCHEMA_VERSION, Store
from tests.controller.conftest import make_plan


def test_sqlite_is_durable_and_versioned(tmp_path):
    store = Store(data_dir=tmp_path)
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    assert store.version() == SCHEMA_VERSION
    store.close()
    assert (tmp_path / "sparcs.db").exists()


def test_commands_and_plan_survive_reopen(tmp_path):
    store = Store(data_dir=tmp_path)
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
    again = Store(data_dir=tmp_path)
    active = again.active_commands(150.0)
    assert [c["id"] for c in active] == [cid] and active[0]["params"] == {"stage": "K2"}
    assert again.active_commands(200.0) == []  # expired
    assert again.last_plan().to_record() == plan.to_record()
    entry = again.audit_log()[0]
    assert entry["who"] == "op" and entry["action"] == "stage" and entry["params"]["command_id"] == cid
    again.close()


def test_cancel_is_audited_and_idempotent(tmp_path):
    store = Store(data_dir=tmp_path)
    cid = store.add_command(
        kind="pause", who="op", created_at=1.0, start_s=1.0, expires_s=None, params={}, audit_result="ok"
    )
    assert store.cancel_commands([cid], who="op2", at=2.0, action="resume", params={}) == [cid]
    assert store.cancel_commands([cid], who="op2", at=3.0, action="resume", params={}) == []
    assert store.active_commands(4.0) == []
    results = [a["result"] for a in store.audit_log()]
    assert results == ["noop", "ok", "ok"]
    store.close()


def test_alarms_deduplicate_and_clear(tmp_path):
    store = Store(data_dir=tmp_path)
    assert store.raise_alarm(at=1.0, severity="warning", source="device:a", message="stale") is not None
    assert store.raise_alarm(at=2.0, severity="warning", source="device:a", message="stale") is None
    assert len(store.alarms(active_only=True)) == 1
    assert store.clear_alarms("device:a", 3.0) == 1
    assert store.alarms(active_only=True) == [] and len(store.alarms()) == 1
    store.close()


def test_prune_keeps_commands_audit_and_the_last_plan(tmp_path):
    store = Store(data_dir=tmp_path)
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
