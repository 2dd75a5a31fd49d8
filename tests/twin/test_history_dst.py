"""The clock-change days from history: a whole recorded day of 92 or 100 quarter-hours replays whole.

The day is recorded by the controller on the twin's stepped clock with quarter-hourly polls (short
to record), then replayed from its store with the strategy that ran.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from sparcs.config.schema import CONFIG_DIR, validate_config
from sparcs.twin.history import HistorySource
from sparcs.twin.replay import replay
from sparcs.twin.run import run_twin
from sparcs.twin.scenario import apply_scenario, day_bounds, load_scenario
from tests.controller.conftest import small_fleet_data

pytestmark = pytest.mark.timeout(600)


offsets = {
    "dst-spring": (("2026-03-29", "+01:00"), ("2026-03-30", "+02:00")),
    "dst-autumn": (("2026-10-25", "+02:00"), ("2026-10-26", "+01:00")),
}


@pytest.mark.parametrize(("name", "quarters"), [("dst-spring", 92), ("dst-autumn", 100)])
def test_a_clock_change_day_replays_from_history(tmp_path, name, quarters):
    scenario = load_scenario(CONFIG_DIR / "scenarios" / f"{name}.yaml")
    scenario = scenario.model_copy(update={"poll_interval_s": 300.0, "dispatch_interval_s": 900.0})
    cfg = apply_scenario(validate_config(small_fleet_data(2)), scenario)
    bounds = day_bounds(scenario.date)
    asyncio.run(replay(cfg, "self-consumption", bounds, scenario, tmp_path / "recorded"))

    out = tmp_path / "out"
    source = HistorySource(data_dir=tmp_path / "recorded", strategy="self-consumption")
    run_twin(cfg, scenario.date, None, ["self-consumption"], out, progress=False, history=source)
    report = json.loads((out / "report.json").read_text())
    assert report["quarter_hours"] == quarters
    assert (report["start"], report["end"]) == tuple(f"{d}T00:00:00{off}" for d, off in offsets[name])
    assert report["polls"] == quarters * 3
    assert report["fidelity"]["met"], json.dumps(report["fidelity"], indent=1)
    assert report["fidelity"]["figures"]["export_kwh"]["recorded"] > 0
