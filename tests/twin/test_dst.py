"""The clock-change days replay whole: 92 and 100 quarter-hours, with the optimizer planning across the change."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from sparcs.config.schema import CONFIG_DIR, FleetConfig, validate_config
from sparcs.twin.kpi import energy_balance
from sparcs.twin.replay import replay
from sparcs.twin.run import build_report
from sparcs.twin.scenario import Scenario, apply_scenario, day_bounds, load_scenario
from tests.controller.conftest import small_fleet_data

pytestmark = pytest.mark.timeout(600)


def clock_change_day(name: str) -> tuple[Scenario, FleetConfig, tuple[float, float]]:
    """The shipped scenario ``name`` on two demo sites, polled every 300 s (short to replay; the planner
    still plans every quarter-hour), with its fleet and its day's bounds."""
    scenario = load_scenario(CONFIG_DIR / "scenarios" / f"{name}.yaml")
    scenario = scenario.model_copy(update={"poll_interval_s": 300.0, "dispatch_interval_s": 900.0})
    return scenario, apply_scenario(validate_config(small_fleet_data(2)), scenario), day_bounds(scenario.date)


@pytest.mark.parametrize(("name", "quarters"), [("dst-spring", 92), ("dst-autumn", 100)])
def test_a_clock_change_day_replays_with_its_quarter_hours(tmp_path, name, quarters):
    scenario, cfg, bounds = clock_change_day(name)
    assert (bounds[1] - bounds[0]) / 900 == quarters
    run = asyncio.run(replay(cfg, "optimizer", bounds, scenario, tmp_path / "history"))
    report = build_report([run], cfg, bounds, None, scenario)
    assert report["quarter_hours"] == quarters
    row = report["strategies"][0]
    assert row["cap_violations"] == 0 and row["fallbacks"] == 0
    assert row["pv_kwh"] > 0 and np.isfinite(row["cost_eur"])
    assert all(abs(b["residual"]) < 0.005 for b in energy_balance(run.trace, cfg))
    bands = {tuple(q["lead_h"]) for q in row["forecast_quality"] if q["kind"] == "pv" and q["periods"] > 0}
    assert (0, 1) in bands  # the forecasts were scored across the day
