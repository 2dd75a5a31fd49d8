"""The run-time control switch over real HTTP against simulated devices (Modbus TCP, stepped clock):
switched to monitor-only a curtailed inverter is released to its installer configuration first, then
never limited nor written (its site stays planned with PV fixed at the forecast), the switch is
audited and survives a restart; switched back it is controlled again. A monitor-only battery leaves
the plan's flexibility."""

from __future__ import annotations

import datetime as dt

import httpx
import numpy as np
import pytest

from sparcs.config.schema import validate_config
from sparcs.controller.auth import create_token
from sparcs.controller.commands import StageRequest
from sparcs.controller.device_control import DeviceControl
from sparcs.controller.state import build_state
from sparcs.controller.store import Store
from sparcs.factory import build_controller
from sparcs.simulators.clock import SimClock
from sparcs.simulators.fleet import FleetHost
from tests.controller.conftest import small_fleet_data
from tests.controller.serving import serving

pytestmark = pytest.mark.slow
NOON = dt.datetime(2026, 6, 21, 10, 0, tzinfo=dt.UTC).timestamp()


async def test_switch_to_monitor_only_releases_first_then_never_limits_or_writes(tmp_path):
    data = small_fleet_data(2)
    data["simulation"]["weather"]["cloudiness"] = 0.0
    clock = SimClock(NOON, stepped=True)
    host = FleetHost(validate_config(data), clock=clock, auto_ports=True)
    await host.start()
    store = Store(data_dir=tmp_path)
    ctl = build_controller(host.config, store, clock)
    site = host.config.sites[0]
    pv = next(d.id for d in site.devices if d.kind == "pv_inverter")
    try:
        async with serving(host.config, tmp_path, ctl=ctl) as served:
            op = create_token(store, "mara", "operator", 0.0)
            viewer = create_token(store, "vic", "viewer", 0.0)
            async with httpx.AsyncClient(base_url=served.base_url, headers={"Authorization": f"Bearer {op}"}) as http:

                async def step(seconds: float = 10.0, dispatch: bool = False):
                    await host.step(seconds)
                    return await ctl.cycle(dispatch=dispatch)

                # Curtailed by a stage: the inverter holds a limit of ours.
                expires = dt.datetime.fromtimestamp(clock.now() + 3600, dt.UTC)
                ctl.commands.submit_stage(
                    StageRequest(stage="K2", sites=[site.id], expires_at=expires), "op", clock.now()
                )
                await step(dispatch=True)
                for _ in range(3):
                    await step()
                assert host.truth(pv)["limit_w"] == pytest.approx(0.3 * site.pv.rating_w, rel=0.02)
                assert site.id in ctl.plan.sites

                refused = await http.put(
                    f"/api/v1/devices/{pv}/control",
                    json={"controlled": False},
                    headers={"Authorization": f"Bearer {viewer}"},
                )
                assert refused.status_code == 403
                r = await http.put(f"/api/v1/devices/{pv}/control", json={"controlled": False})
                assert r.status_code == 200, r.text
                assert r.json()["control"]["switch"] == "monitor-only" and r.json()["control"]["releasing"]
                assert (await http.put("/api/v1/devices/nope/control", json={"controlled": False})).status_code == 404

                await step()
                released = ctl.writer.active[(pv, "pv")]
                assert released.requested_w is None and released.value_w is None  # a release, written
                assert ctl.device_control.releasing == set()
                await step()  # the inverter ramps back to its installer configuration
                truth = host.truth(pv)
                assert truth["limit_w"] is None and truth["export_limit_w"] is not None  # installer mode
                dev = (await http.get(f"/api/v1/devices/{pv}")).json()
                assert dev["control"] is False
                assert dev["control_switch"]["switch"] == "monitor-only"
                assert dev["control_switch"]["switched_by"] == "mara"
                assert dev["control_switch"]["releasing"] is False
                listed = {d["id"]: d for d in (await http.get("/api/v1/devices")).json()}
                assert listed[pv]["control"] is False and listed[pv]["control_switch"]["config"] is True

                # The stage is still in force, yet the inverter is neither planned nor written.
                writes_before = dict(ctl.writer.active)
                for i in range(8):
                    await step(60, dispatch=i % 4 == 0)
                # The site stays planned with its PV fixed at the forecast: no limit, its battery dispatched.
                assert np.isnan(ctl.plan.sites[site.id].pv_limit_w).all()
                assert ctl.state.sites[site.id].pv_controlled is False
                assert pv not in ctl.setpoints
                assert host.truth(pv)["limit_w"] is None
                assert ctl.writer.active[(pv, "pv")] == writes_before[(pv, "pv")]  # the release, nothing after it

                audit = (await http.get("/api/v1/audit")).json()
                entry = next(a for a in audit if a["action"] == "device-control")
                assert entry["who"] == "mara" and entry["params"] == {"device": pv, "controlled": False}

                # A restart reads the switch back (and owes the release again, in case it was lost).
                again = DeviceControl(store, host.config, clock.now)
                assert again.monitor_only == {pv} and again.releasing == {pv}
                assert again.controlled(pv) is False

                r = await http.put(f"/api/v1/devices/{pv}/control", json={"controlled": True})
                assert r.json()["control"]["controlled"] is True
                for _ in range(3):
                    await step()
                assert host.truth(pv)["limit_w"] == pytest.approx(0.3 * site.pv.rating_w, rel=0.02)
    finally:
        await host.stop()


def test_a_monitor_only_battery_is_planned_without_its_flexibility(small_cfg, tmp_path):
    from sparcs.controller.commands import CommandBook
    from sparcs.controller.planning import FleetPlanner
    from sparcs.drivers.telemetry import Reading, Telemetry

    site = small_cfg.sites[0]
    bat = next(d.id for d in site.devices if d.kind == "battery")
    values = {
        "pv_inverter": {"pv_w": 3000.0, "pv_limit_w": 8000.0},
        "battery": {"battery_w": 0.0, "soc": 0.5},
        "meter": {"grid_w": -1500.0},
    }
    telemetry = {
        d.id: Telemetry(
            device_id=d.id,
            site_id=s.id,
            kind=d.kind,
            status="online",
            read_at=NOON,
            last_good_at=NOON,
            values={k: Reading(v, "good") for k, v in values[d.kind].items()},
        )
        for s in small_cfg.sites
        for d in s.devices
    }
    controlled = build_state(small_cfg, telemetry, NOON)
    switched = build_state(small_cfg, telemetry, NOON, monitor_only={bat})
    assert controlled.sites[site.id].flex_up_w > 0
    assert switched.sites[site.id].battery_controlled is False
    assert switched.sites[site.id].flex_up_w == 0.0  # no battery: nothing to discharge
    store = Store(data_dir=tmp_path)
    planner = FleetPlanner(small_cfg)
    try:
        book = CommandBook(store, small_cfg)
        problem = planner.problem(switched, book, NOON)
        by_id = {p.site_id: p for p in problem.sites}
        assert by_id[site.id].battery is None
        assert by_id[small_cfg.sites[1].id].battery is not None
        pv = next(d.id for d in site.devices if d.kind == "pv_inverter")
        without_pv = planner.problem(build_state(small_cfg, telemetry, NOON, monitor_only={pv}), book, NOON)
        fixed = {p.site_id: p for p in without_pv.sites}[site.id]  # its battery still planned, PV fixed
        assert fixed.pv_curtailable is False and fixed.battery is not None
        neither = planner.problem(build_state(small_cfg, telemetry, NOON, monitor_only={pv, bat}), book, NOON)
        assert site.id not in {p.site_id for p in neither.sites}  # nothing of it to steer: it leaves the plan
    finally:
        planner.close()
        store.close()
