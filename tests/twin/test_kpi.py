"""The KPI maths on hand-made numbers: quarter-hour energies, violations, export prices, captured, summary."""

from __future__ import annotations

import numpy as np
import pytest

from sparcs.twin.kpi import captured, export_price_eur_per_kwh, per_quarter, site_quarters_with
from sparcs.twin.report import summary_markdown


def test_energy_per_quarter_from_minute_counters():
    counter = np.array([np.arange(31) * 10.0, np.zeros(31)])  # 10 Wh a minute at site 0
    assert per_quarter(counter, 15).tolist() == [[150.0, 150.0], [0.0, 0.0]]


def test_violations_count_site_quarter_hours_not_samples():
    mask = np.zeros((2, 31), dtype=bool)
    mask[0, 1:4] = True  # three samples in quarter 0
    mask[0, 20] = True  # one in quarter 1
    mask[1, 0] = True  # sample 0 is the start of the day: it belongs to no quarter of the replay
    assert site_quarters_with(mask, 15) == 2


def test_export_price_follows_tariff_market_and_the_negative_price_rule():
    site = {
        "direct": np.array([False, True, False]),
        "rule": np.array([False, False, True]),
        "export_eur_per_kwh": np.array([0.08, 0.0, 0.07]),
    }
    price = export_price_eur_per_kwh(site, np.array([50.0, -20.0]))
    assert price.tolist() == [[0.08, 0.08], [0.05, -0.02], [0.07, 0.0]]


def test_captured_is_the_share_of_the_achievable_saving():
    share = captured({"none": 10.0, "perfect-foresight": 6.0, "optimizer": 6.2, "self-consumption": 8.0})
    assert share == pytest.approx({"none": 0.0, "perfect-foresight": 1.0, "optimizer": 0.95, "self-consumption": 0.5})
    assert captured({"none": 10.0, "optimizer": 6.0}) is None
    assert captured({"none": 5.0, "perfect-foresight": 5.0})["none"] is None  # nothing to capture


def test_summary_states_each_goal_with_its_figure():
    def row(name, cost, violations, wall):
        return {"strategy": name, "cost_eur": cost, "cap_violations": violations, "replay_wall_s": wall}

    report = {
        "start": "2026-06-21T00:00:00+02:00",
        "end": "2026-06-22T00:00:00+02:00",
        "fleet": {"sites": 54, "devices": 149},
        "scenario": "june.yaml",
        "minutes": 1440,
        "quarter_hours": 96,
        "strategies": [row("optimizer", 6.2, 0, 250.0), row("self-consumption", 8.0, 2, 400.0), row("none", 10, 5, 1)],
        "captured": {"optimizer": 0.95, "self-consumption": 0.5},
        "balance": {"worst_residual": {"optimizer": 1e-5}},
        "plots": ["soc.png"],
    }
    text = summary_markdown(report)
    assert "captured(optimizer) = 0.950 ≥ 0.97: **missed**" in text
    assert "captured(optimizer) − captured(self-consumption) = 0.450 ≥ 0.1: met" in text
    assert "self-consumption: 2 cap violations (goal 0): **missed**" in text
    assert "optimizer: replay 250 s wall (goal ≤ 300 s per strategy for the demo day): met" in text
    assert "- none: 5 cap violations" not in text
    text = summary_markdown({**report, "jobs": 2})
    assert "demo day; 2 strategies replayed at a time on this machine): met" in text
    assert "![soc.png](soc.png)" in text


def test_violation_samples_name_site_time_and_export():
    from sparcs.twin.kpi import violation_samples
    from sparcs.twin.replay import Trace

    trace = Trace(["a", "b"])
    for t, grid in ((0.0, (0.0, 0.0)), (60.0, (-3700.0, -100.0)), (120.0, (-100.0, 0.0))):
        sites = {sid: dict.fromkeys(("pv_w", "battery_w", "load_w", "available_w"), 0.0) for sid in trace.site_ids}
        for sid, g in zip(trace.site_ids, grid, strict=True):
            sites[sid]["grid_w"] = g
            sites[sid].update(dict.fromkeys(("pv_wh", "import_wh", "export_wh", "charged_wh", "discharged_wh"), 0.0))
            sites[sid]["stored_wh"] = 0.0
        trace.add({"t": t, "sites": sites})
    cap = np.array([3600.0, np.inf])
    mask = -trace.power("grid_w") > cap[:, None] * 1.01
    assert violation_samples(trace, mask, cap) == [{"site": "a", "t_s": 60.0, "export_kw": 3.7, "cap_kw": 3.6}]
