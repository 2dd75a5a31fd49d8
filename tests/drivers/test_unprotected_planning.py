"""Devices the writer refuses for lack of a fail-safe are planned as not controlled (docs/devices.md
"Fail-safes"): a battery without one is not dispatched, a PV inverter without one is not counted on
for curtailment (its site is planned with PV fixed at the forecast, docs/definitions.md); accepting the
risk (``accept_no_fail_safe``) makes them controlled again. The fleet runs on simulated devices
over Modbus TCP through the production controller."""

from __future__ import annotations

import datetime as dt

import pytest

from sparcs.config.schema import validate_config
from sparcs.controller.store import Store
from sparcs.factory import build_controller
from sparcs.simulators.clock import SimClock
from sparcs.simulators.fleet import FleetHost
from tests.controller.conftest import small_fleet_data

NOON = dt.datetime(2026, 6, 21, 10, 0, tzinfo=dt.UTC).timestamp()


def _fleet(accept: bool) -> dict:
    """Two sites: the first's battery a Huawei LUNA2000 (no fail-safe), the second's PV inverter a
    Huawei SUN2000 (no fail-safe); ``accept``: the second's entry accepts the risk."""
    data = small_fleet_data(2)
    data["simulation"]["weather"]["cloudiness"] = 0.0
    first, second = data["sites"]
    bat = next(d for d in first["devices"] if d["kind"] == "battery")
    bat |= {"protocol": "profile", "profile": "huawei_luna2000"}
    pv = next(d for d in second["devices"] if d["kind"] == "pv_inverter")
    pv |= {"protocol": "profile", "profile": "huawei_sun2000", "accept_no_fail_safe": accept}
    return data


@pytest.mark.parametrize("accept", [False, True])
async def test_devices_without_a_fail_safe_are_planned_as_not_controlled(tmp_path, accept) -> None:
    clock = SimClock(NOON, stepped=True)
    host = FleetHost(validate_config(_fleet(accept)), clock=clock, auto_ports=True)
    await host.start()
    store = Store(data_dir=tmp_path)
    ctl = build_controller(host.config, store, clock)
    first, second = host.config.sites
    try:
        await host.step(10)
        await ctl.cycle()
        state = ctl.state
        assert state is not None and state.sites[first.id].controllable and state.sites[second.id].controllable
        bat = next(d.id for d in first.devices if d.kind == "battery")
        pv = next(d.id for d in second.devices if d.kind == "pv_inverter")
        assert ctl.uncontrolled_roles() == {bat: ("battery",), **({} if accept else {pv: ("pv",)})}
        assert state.sites[first.id].battery_controlled is False and state.sites[first.id].pv_controlled
        assert state.sites[second.id].pv_controlled is accept
        problem = ctl.planner.problem(state, ctl.commands, clock.now())
        assert problem is not None
        planned = {p.site_id: p for p in problem.sites}
        assert planned[first.id].battery is None  # the battery runs on its own: not dispatched
        # Its PV cannot be curtailed: planned at the forecast, its battery still planned.
        assert planned[second.id].pv_curtailable is accept and planned[second.id].battery is not None
        assert bat not in ctl.desired_setpoints(clock.now())  # no share of the site's command
    finally:
        ctl.planner.close()
        await ctl.poller.close()
        store.close()
        await host.stop()
