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


def _trace(times, load_w=0.0):
    from sparcs.twin.replay import Trace

    trace = Trace(["a"])
    for t in times:
        row = dict.fromkeys(("pv_w", "battery_w", "grid_w", "available_w", "pv_wh", "import_wh", "export_wh"), 0.0)
        row.update(load_w=load_w, charged_wh=0.0, discharged_wh=0.0, stored_wh=0.0)
        trace.add({"t": t, "sites": {"a": row}})
    return trace


def test_the_sample_spacing_is_the_poll_interval():
    trace = _trace(np.arange(0.0, 1801.0, 10.0))
    assert trace.step_s == pytest.approx(10.0)
    assert trace.samples_per_quarter() == 90
    assert _trace(np.arange(0.0, 1801.0, 60.0)).samples_per_quarter() == 15
    with pytest.raises(ValueError, match="evenly"):
        _trace([0.0, 10.0, 30.0]).step_s  # noqa: B018
    with pytest.raises(ValueError, match="does not divide"):
        _trace([0.0, 7.0, 14.0]).samples_per_quarter()


def test_energies_from_powers_integrate_over_the_sample_spacing():
    from sparcs.config.schema import validate_config
    from sparcs.twin.kpi import energy_balance
    from tests.controller.conftest import small_fleet_data

    small_cfg = validate_config(small_fleet_data(1))
    site = small_cfg.sites[0].id
    for step in (10.0, 60.0):
        trace = _trace(np.arange(0.0, 1800.0 + step / 2, step), load_w=3600.0)
        trace.site_ids = [site]
        (b,) = energy_balance(trace, small_cfg)
        assert b["load_kwh"] == pytest.approx(1.8)  # 3.6 kW for half an hour, at either spacing


def test_the_summary_states_the_cadence_and_its_source():
    report = {
        "start": "2026-06-21T00:00:00+02:00",
        "end": "2026-06-22T00:00:00+02:00",
        "fleet": {"sites": 1, "devices": 3},
        "scenario": None,
        "minutes": 1440,
        "quarter_hours": 96,
        "cadence": {
            "poll_interval_s": 10.0,
            "dispatch_interval_s": 300.0,
            "poll_interval_source": "config",
            "dispatch_interval_source": "scenario",
        },
        "strategies": [{"strategy": "none", "cost_eur": 1.0, "cap_violations": 0, "replay_wall_s": 1.0}],
        "captured": None,
        "balance": {"worst_residual": {"none": 0.0}},
        "plots": [],
    }
    text = summary_markdown(report)
    assert (
        "polling every 10 s (the fleet file's dispatch section) and dispatching every 300 s aligned to the clock "
        "(the scenario)" in text
    )
    assert "with a meter sample (one every 10 s) above its cap + 1 %" in text
