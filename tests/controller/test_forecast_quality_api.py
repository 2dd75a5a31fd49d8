"""Forecast quality in the API (docs/forecasts.md "Quality"): simulated devices over Modbus TCP on a
stepped clock, the production controller, a plan, the quarter-hours after it measured, then GET
/api/v1/forecast/quality over real HTTP shows the scored bands — after a plan, the same figures as
the metrics."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest

from sparcs.config.schema import validate_config
from sparcs.controller.auth import create_token
from sparcs.controller.store import Store
from sparcs.factory import build_controller
from sparcs.simulators.clock import SimClock
from sparcs.simulators.fleet import FleetHost
from tests.controller.conftest import small_fleet_data
from tests.controller.serving import serving

pytestmark = pytest.mark.slow
MORNING = dt.datetime(2026, 6, 21, 8, 0, tzinfo=dt.UTC).timestamp()


async def test_the_api_serves_the_forecast_quality_of_the_measured_quarter_hours(tmp_path):
    clock = SimClock(MORNING, stepped=True)
    host = FleetHost(validate_config(small_fleet_data(2)), clock=clock, auto_ports=True)
    await host.start()
    store = Store(data_dir=tmp_path)
    ctl = build_controller(host.config, store, clock)
    try:
        async with serving(host.config, tmp_path, ctl=ctl) as served:
            viewer = create_token(store, "vic", "viewer", 0.0)
            async with httpx.AsyncClient(
                base_url=served.base_url, headers={"Authorization": f"Bearer {viewer}"}
            ) as http:
                await ctl.cycle(dispatch=True)  # the plan's forecasts are issued with their references
                empty = (await http.get("/api/v1/forecast/quality")).json()["quality"]
                assert all(row["periods"] == 0 and row["nmae"] is None for row in empty)
                for minute in range(1, 33):  # two quarter-hours, polled every 60 s; the metrics move per plan
                    await host.step(60.0)
                    await ctl.cycle(dispatch=minute == 32)
                resp = await http.get("/api/v1/forecast/quality")
    finally:
        await host.stop()
    assert resp.status_code == 200
    rows = {(r["kind"], tuple(r["lead_h"])): r for r in resp.json()["quality"]}
    for kind in ("pv", "load"):
        first = rows[(kind, (0, 1))]
        assert first["periods"] >= 2 * 2  # two quarter-hours × two sites, each judged once
        assert 0.0 <= first["nmae"] < 1.0
        assert set(first["skill"]) == {"persistence", "climatology"}
    text = ctl.metrics.render().decode()
    pv = rows[("pv", (0, 1))]
    assert f'sparcs_forecast_nmae_ratio{{kind="pv",lead="0-1h"}} {pv["nmae"]!r}' in text
