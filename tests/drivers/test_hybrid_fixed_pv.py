"""A vendor hybrid whose map has a battery command but no PV limit (the shipped SolarEdge StorEdge
profile) over Modbus TCP: its site is planned with PV fixed at the forecast (docs/definitions.md "Sites
whose PV cannot be curtailed"), its battery gets the plan's setpoints, written and read back at the
simulator, and no PV limit is ever written."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from sparcs.config.schema import DispatchConfig
from sparcs.controller.commands import PoolLimitRequest
from sparcs.controller.store import Store
from sparcs.factory import build_controller

pytestmark = pytest.mark.asyncio(loop_scope="module")

START = dt.datetime(2026, 6, 21, 10, 0, tzinfo=dt.UTC).timestamp()  # a clear noon: PV over the 30 % cap
SETTINGS = DispatchConfig(modbus_timeout_s=0.5, stale_after_polls=2, revert_timeout_s=120, poll_interval_s=10)
SITE = {
    "id": "se",
    "location": {"lat": 51.34, "lon": 12.37},
    "pv": {"kwp": 6.0},
    "battery": {"capacity_kwh": 10, "max_charge_w": 4000, "max_discharge_w": 4000, "soc_initial": 0.3},
    "grid": {"feed_in_cap_pct": 60},
    "devices": [
        {"id": "se-hy", "kind": "hybrid", "port": 1, "protocol": "profile", "profile": "solaredge_storedge"},
        {"id": "se-m", "kind": "meter", "port": 2},
    ],
}
FLEET = {"sites": [SITE], "simulation": {"weather": {"cloudiness": 0.0}}}


async def test_a_hybrid_without_a_pv_limit_is_planned_and_its_battery_written(fleet, tmp_path) -> None:
    host, clock = fleet
    store = Store(data_dir=tmp_path)
    ctl = build_controller(host.config, store, clock)
    try:
        # The pool held at 25 % of its rating: 1.5 kW at the meter, below the site's export.
        expires = dt.datetime.fromtimestamp(clock.now() + 3600, dt.UTC)
        ctl.commands.submit(PoolLimitRequest(limit_pct=25, expires_at=expires), "op", clock.now())
        await host.step(10)
        await ctl.cycle(dispatch=True)
        assert ctl.uncontrolled_roles() == {"se-hy": ("pv",)}
        site = ctl.state.sites["se"]
        assert site.controllable and site.pv_controlled is False and site.battery_controlled
        assert ctl.plan is not None and "se" in ctl.plan.sites, ctl.plan
        planned = ctl.plan.sites["se"]
        assert np.isnan(planned.pv_limit_w).all()  # PV fixed at the forecast: never a limit
        assert planned.pv_w == pytest.approx(planned.pv_available_w, abs=1e-6)
        # About 3.6 kW PV, 0.6 kW load, a 1.5 kW limit: the battery charges to keep it.
        assert planned.battery_w[1] < -500.0
        for _ in range(2):
            await host.step(10)
            await ctl.cycle()
        sp = ctl.setpoints["se-hy"]
        assert sp.pv_limit_w is None and sp.battery_w is not None and sp.battery_w < -500.0, sp
        assert ("se-hy", "pv") not in ctl.writer.active
        written = ctl.writer.active[("se-hy", "battery")]
        assert written.value_w == pytest.approx(sp.battery_w, abs=1.0)
        await host.step(5)
        truth = host.truth("se-hy")
        assert truth["commanded_w"] == pytest.approx(sp.battery_w, abs=1.0)
        assert truth["limit_w"] is None
        await host.step(5)
        await ctl.cycle()
        read = ctl.state.sites["se"].battery_w  # read back through the vendor map, with our sign
        assert read == pytest.approx(host.truth("se-hy")["battery_w"], abs=5.0) and read < -500.0
    finally:
        await ctl.close()
        store.close()
