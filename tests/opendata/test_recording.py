"""Curtailment by cause is recorded at the source: the real controller against simulated devices
over Modbus TCP (3 demo sites, stepped clock) stores, per site-history row, the cause of the PV
limit in force and the forecast PV power it holds back; the store's quarter-hours read it back."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from sparcs.controller.commands import StageRequest
from sparcs.controller.store import site_history
from tests.controller.conftest import small_fleet_data
from tests.controller.serving import simulated

pytestmark = [pytest.mark.slow, pytest.mark.asyncio]
NOON = dt.datetime(2026, 6, 21, 10, 0, tzinfo=dt.UTC).timestamp()  # 12:00 in Leipzig


async def test_a_stage_is_recorded_as_the_cause_with_the_power_it_holds_back(tmp_path):
    data = small_fleet_data(3)
    data["simulation"]["weather"]["cloudiness"] = 0.0
    async with simulated(data, tmp_path, NOON) as (host, ctl, clock):
        site = host.config.sites[0]
        await host.step(10)
        await ctl.cycle(dispatch=True)  # a plan: its forecast of the available PV power
        until = dt.datetime.fromtimestamp(clock.now() + 3600, dt.UTC)
        ctl.commands.submit_stage(StageRequest(stage="K1", sites=[site.id], expires_at=until), "op", clock.now())
        for _ in range(10):
            await host.step(15)
            await ctl.cycle()
        ctl.history.writer.flush()
        with ctl.store.engine.connect() as conn:
            rows = conn.execute(
                select(site_history.c.ts, site_history.c.curtailed_w, site_history.c.curtail_cause).where(
                    site_history.c.site_id == site.id
                )
            ).all()
        staged = [r for r in rows if r.curtail_cause == "stages"]
        assert staged, rows  # the K1 stop is on record as the stage's
        # a clear June noon: the forecast PV power K1 holds back is well above a fifth of the rating
        assert all(r.curtailed_w is not None and r.curtailed_w > 0.2 * site.pv.rating_w for r in staged[1:])
        quarters = [q for q in ctl.store.site_quarters(NOON, clock.now() + 1) if q.site_id == site.id]
        assert sum(q.curtailed_w["stages"] for q in quarters) > 0
        assert all(q.curtailed_w["negative_prices"] == 0.0 for q in quarters)  # the demo's prices are positive
