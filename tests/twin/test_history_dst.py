"""The clock-change days from history: a whole recorded day of 92 or 100 quarter-hours replays whole.

The day is recorded by the controller on the twin's stepped clock with 300 s polls (short to
record), then replayed from its store with the strategy that ran.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from sparcs.twin.history import HistorySource
from sparcs.twin.replay import replay
from sparcs.twin.run import run_twin
from tests.twin.test_dst import clock_change_day

pytestmark = pytest.mark.timeout(600)


OFFSETS = {
    "dst-spring": (("2026-03-29", "+01:00"), ("2026-03-30", "+02:00")),
    "dst-autumn": (("2026-10-25", "+02:00"), ("2026-10-26", "+01:00")),
}


@pytest.mark.parametrize(("name", "quarters"), [("dst-spring", 92), ("dst-autumn", 100)])
def test_a_clock_change_day_replays_from_history(tmp_path, name, quarters):
    scenario, cfg, bounds = clock_change_day(name)
    asyncio.run(replay(cfg, "self-consumption", bounds, scenario, tmp_path / "recorded"))

    out = tmp_path / "out"
    source = HistorySource(data_dir=tmp_path / "recorded", strategy="self-consumption")
    run_twin(cfg, scenario.date, None, ["self-consumption"], out, progress=False, history=source)
    report = json.loads((out / "report.json").read_text())
    assert report["quarter_hours"] == quarters
    assert (report["start"], report["end"]) == tuple(f"{d}T00:00:00{off}" for d, off in OFFSETS[name])
    assert report["polls"] == quarters * 3
    assert report["fidelity"]["met"], json.dumps(report["fidelity"], indent=1)
    assert report["fidelity"]["figures"]["export_kwh"]["recorded"] > 0
