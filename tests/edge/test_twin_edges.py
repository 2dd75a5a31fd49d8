"""The twin replays a day with the fleet behind edges, over a real Mosquitto, with a broker outage
in its scenario: the report shows no cap violation."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from sparcs.config.schema import CONFIG_DIR, validate_config
from sparcs.twin.replay import replay
from sparcs.twin.run import write_outputs
from sparcs.twin.scenario import Scenario, apply_scenario
from tests.controller.conftest import small_fleet_data

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

DAY = "2026-06-21"


def at(hhmm: str) -> str:
    return f"{DAY}T{hhmm}:00+02:00"


async def test_a_day_behind_edges_with_a_broker_outage_keeps_every_cap(tmp_path):
    data = small_fleet_data(3)
    ids = [s["id"] for s in data["sites"]]
    data["broker"] = {"edges": [{"id": "gw-1", "sites": ids[:2]}, {"id": "gw-2", "sites": ids[2:]}]}
    scenario = Scenario.model_validate(
        {
            "date": DAY,
            "weather": {"cloudiness": 0.1},
            "prices_csv": str(CONFIG_DIR / "scenarios" / "prices_2026-06-21.csv"),
            "actions": [{"at": at("12:00"), "broker_outage": {"duration_s": 3600}}],
            "poll_interval_s": 60,
            "dispatch_interval_s": 900,
        }
    )
    cfg = apply_scenario(validate_config(data), scenario)
    start = dt.datetime.fromisoformat(at("00:00")).timestamp()
    bounds = (start, start + 86_400.0)
    run = await replay(cfg, "optimizer", bounds, scenario, tmp_path / "history")
    (tmp_path / "out").mkdir()
    report = await asyncio.to_thread(write_outputs, [run], cfg, bounds, None, scenario, tmp_path / "out")
    row = report["strategies"][0]
    assert row["cap_violations"] == 0, row.get("cap_violation_samples")
    assert row["export_kwh"] > 0  # a sunny day: the caps were binding, not idle
