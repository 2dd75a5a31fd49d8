"""The history writer thread: a blocked store never blocks the caller; a failing store is reported,
retried and caught up in order; an overflowing queue drops the oldest history as a recorded gap but
never an alarm change; setpoints are recorded per device and served by the API."""

from __future__ import annotations

import threading

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError

from sparcs.config.schema import StorageConfig
from sparcs.controller.api import create_app
from sparcs.controller.auth import create_token
from sparcs.controller.cycle import WallClock
from sparcs.controller.history import HistoryRecorder, StoreWriter, WriteJob
from sparcs.controller.state import build_state
from sparcs.controller.store import Store
from sparcs.drivers.writer import WriteResult
from sparcs.factory import build_controller
from tests.controller.conftest import site_telemetry


class Switch:
    """A store whose writes fail while ``broken`` is set (as a full disk answers), and block while ``hold`` is clear."""

    def __init__(self, store: Store):
        self.store, self.broken, self.hold = store, False, threading.Event()
        self.hold.set()

    def __getattr__(self, name):
        real = getattr(self.store, name)
        if not name.startswith(("add_", "raise_", "clear_", "prune")):
            return real

        def call(*args, **kwargs):
            self.hold.wait()
            if self.broken:
                raise OperationalError("INSERT", {}, Exception("database or disk is full"))
            return real(*args, **kwargs)

        return call

    @property
    def outage(self):
        return self.store.outage

    @outage.setter
    def outage(self, value):
        self.store.outage = value


def poll_job(store_ts: float) -> WriteJob:
    row = {"device_id": "d", "site_id": "s", "status": "online", "values": {}}
    return WriteJob("history", store_ts, 1, lambda st: st.add_poll([{"ts": store_ts, **row}]))


def test_a_blocked_store_does_not_block_the_poll(tmp_path, small_cfg):
    store = Store(data_dir=tmp_path)
    switch = Switch(store)
    switch.hold.clear()  # every write hangs until released
    rec = HistoryRecorder(switch, StorageConfig())  # type: ignore[arg-type]
    telemetry = {k: v for s in small_cfg.sites for k, v in site_telemetry(s).items()}
    state = build_state(small_cfg, telemetry, 100.0)
    rec.record(state, telemetry, state.summary())  # returns although the store hangs (it would hang here)
    rec.record_writes({"pv": WriteResult("pv", "limit", True, 1000.0, 1000.0, 990.0, written_at=100.0)}, 100.0)
    assert rec.writer.pending >= 2 and store.device_history(next(iter(telemetry)), 0, 200) == []
    switch.hold.set()
    assert rec.writer.flush()
    assert len(store.device_history(next(iter(telemetry)), 0, 200)) == 1
    assert store.setpoint_history("pv", 0, 200)[0]["readback_w"] == 990.0
    rec.close()
    store.close()


def test_a_failing_store_is_reported_retried_and_caught_up_in_order(tmp_path):
    store = Store(data_dir=tmp_path)
    switch = Switch(store)
    switch.broken = True
    events: list[str] = []
    clock = iter(range(1000, 2000))
    writer = StoreWriter(
        switch,  # type: ignore[arg-type]
        max_rows=100,
        retry_s=0.05,
        on_failure=events.append,
        on_recovery=lambda: events.append("recovered"),
        clock=lambda: float(next(clock)),
    )
    for t in (1.0, 2.0, 3.0):
        writer.submit(poll_job(t))
    writer.submit(
        WriteJob(
            "alarm",
            3.0,
            1,
            lambda st: st.raise_alarm(at=3.0, severity="warning", source="x", message="m"),
            droppable=False,
        )
    )
    assert not writer.flush(0.5)  # it cannot write
    assert events and set(events) == {"history"}  # the first write is retried, the rest wait in order
    outage = store.alarms(active_only=True)[0]
    assert outage["source"] == "store" and "disk is full" in outage["message"]
    switch.broken = False
    assert writer.flush()
    assert events[-1] == "recovered"
    assert [r["ts"] for r in store.device_history("d", 0, 10)] == [1.0, 2.0, 3.0]
    stored = {a["source"]: a for a in store.alarms()}
    assert stored["store"]["cleared_at"] is not None and stored["store"]["raised_at"] < stored["store"]["cleared_at"]
    assert stored["x"]["cleared_at"] is None and store.outage is None
    assert store.gaps() == []  # nothing was dropped
    writer.close()
    store.close()


def test_an_overflowing_queue_drops_the_oldest_history_as_a_gap_but_keeps_alarms(tmp_path):
    store = Store(data_dir=tmp_path)
    switch = Switch(store)
    switch.broken = True
    writer = StoreWriter(switch, max_rows=5, retry_s=0.05)  # type: ignore[arg-type]
    writer.submit(poll_job(0.0))
    assert not writer.flush(0.3)  # the first is in hand, failing
    writer.submit(
        WriteJob(
            "alarm",
            1.0,
            1,
            lambda st: st.raise_alarm(at=1.0, severity="warning", source="a", message="m"),
            droppable=False,
        )
    )
    for t in range(2, 20):
        writer.submit(poll_job(float(t)))
    switch.broken = False
    assert writer.flush()
    kept = [r["ts"] for r in store.device_history("d", 0, 100)]
    assert kept[0] == 0.0 and kept[-4:] == [16.0, 17.0, 18.0, 19.0]  # the one in hand and the newest
    gap = store.gaps()[0]
    assert gap["writes_lost"] == 18 - (len(kept) - 1) and gap["start_s"] == 2.0 and gap["end_s"] == kept[1] - 1
    assert [a["source"] for a in store.alarms() if a["source"] == "a"] == ["a"]  # the alarm change was kept
    writer.close()
    store.close()


def test_the_setpoints_of_a_device_are_served(tmp_path, small_cfg):
    store = Store(data_dir=tmp_path)
    ctl = build_controller(small_cfg, store, WallClock())
    pv = next(d.id for s in small_cfg.sites for d in s.devices if d.kind == "pv_inverter")
    now = ctl.clock.now()
    ctl.history.record_writes(
        {
            pv: WriteResult(pv, "limit", True, 3000.0, 3000.0, 2990.0, written_at=now - 60),
            "other": WriteResult("other", "unchanged", True),  # nothing written: no row
        },
        now,
    )
    assert ctl.history.writer.flush()
    token = create_token(store, "v", "viewer", 0.0)
    with TestClient(create_app(ctl)) as client:
        got = client.get(f"/api/v1/devices/{pv}/setpoints", headers={"Authorization": f"Bearer {token}"}).json()
        assert [(s["action"], s["written_w"], s["readback_w"]) for s in got["setpoints"]] == [("limit", 3000.0, 2990.0)]
        unknown = client.get("/api/v1/devices/nope/setpoints", headers={"Authorization": f"Bearer {token}"})
        assert unknown.status_code == 404
        bad = client.get(
            f"/api/v1/devices/{pv}/setpoints",
            params={"start": "2026-01-02T00:00:00+00:00", "end": "2026-01-01T00:00:00+00:00"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert bad.status_code == 422 and bad.json()["fields"][0]["field"] == "start"
    import asyncio

    asyncio.run(ctl.close())
    store.close()


@pytest.mark.parametrize("limit", [1, 10_000])
def test_the_setpoints_route_bounds_its_limit(tmp_path, small_cfg, limit):
    store = Store(data_dir=tmp_path)
    ctl = build_controller(small_cfg, store, WallClock())
    token = create_token(store, "v", "viewer", 0.0)
    pv = small_cfg.sites[0].devices[0].id
    with TestClient(create_app(ctl)) as client:
        h = {"Authorization": f"Bearer {token}"}
        assert client.get(f"/api/v1/devices/{pv}/setpoints", params={"limit": limit}, headers=h).status_code == 200
        assert (
            client.get(f"/api/v1/devices/{pv}/setpoints", params={"limit": limit * 100_000}, headers=h).status_code
            == 422
        )
    import asyncio

    asyncio.run(ctl.close())
    store.close()
