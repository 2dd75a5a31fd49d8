"""The twin's HTML page on hand-made runs: curtailment by cause, goals, and fields it does not know."""

from __future__ import annotations

import numpy as np
import pytest

from sparcs.config.schema import validate_config
from sparcs.twin.replay import COUNTERS, POWERS, StrategyRun, Trace
from sparcs.twin.report_html import SHOWN_ROWS, curtailment_by_cause, report_html, value_html
from tests.controller.conftest import small_fleet_data

T0 = 1_781_992_800.0  # 2026-06-21 00:00 Europe/Berlin
STEP_S = 300.0  # three samples a quarter-hour


@pytest.fixture
def cfg():
    data = small_fleet_data(1)
    data["sites"][0]["grid"].update(feed_in_cap_pct=60, negative_price_rule=True)
    return validate_config(data)


def run_of(available_w: list[float], pv_w: list[float], grid_w: list[float], stage: list[float]) -> StrategyRun:
    """One site's run with the given powers per sample (sample 0 = the start)."""
    trace = Trace(["lej-001"])
    for k, (a, p, g) in enumerate(zip(available_w, pv_w, grid_w, strict=True)):
        values = dict.fromkeys((*POWERS, *COUNTERS), 0.0) | {"available_w": a, "pv_w": p, "grid_w": g}
        trace.add({"t": T0 + k * STEP_S, "sites": {"lej-001": values}})
    return StrategyRun(
        strategy="optimizer",
        trace=trace,
        dispatches=[],
        schedule_w=np.full(len(available_w) // 3, np.nan),
        stage_ceiling_w=np.array([stage], dtype=float),
        poll_interval_s=STEP_S,
        dispatch_interval_s=900.0,
        wall_s=1.0,
        startup_s=0.1,
        cpu_s=0.5,
        forecast_quality=[],
    )


def test_each_curtailed_sample_goes_to_the_first_cause_in_force(cfg):
    cap_w = 0.6 * cfg.sites[0].pv.kwp * 1000.0
    nan = float("nan")
    # samples: start, stage in force, negative price (quarter 1), at the cap, none of these, not curtailed
    run = run_of(
        available_w=[0, 4000, 4000, 4000, 4000, 4000, 4000],
        pv_w=[0, 1000, 3000, 3500, 3500, 3800, 4000],
        grid_w=[0, 500, -200, -100, -cap_w, -1000, -1000],
        stage=[nan, 1200, nan, nan, nan, nan, nan],
    )
    prices = np.array([50.0, -10.0])  # sample k >= 1 ends an interval of quarter-hour (k - 1) // 3
    split = curtailment_by_cause(run, cfg, prices)
    by = {c: split.by_cause[c][0].tolist() for c in split.by_cause}
    assert by["stage"] == [0, 3000, 0, 0, 0, 0, 0]
    assert by["negative price"] == [0, 0, 0, 0, 500, 200, 0]
    assert by["feed-in cap"] == [0, 0, 0, 0, 0, 0, 0]  # sample 4 is at the cap but in a negative quarter-hour
    assert by["other"] == [0, 0, 1000, 500, 0, 0, 0]
    assert split.kwh("stage", STEP_S) == pytest.approx(3000 * STEP_S / 3.6e6)


def test_the_cap_is_a_cause_where_the_site_exports_at_it(cfg):
    cap_w = 0.6 * cfg.sites[0].pv.kwp * 1000.0
    nan = float("nan")
    run = run_of([0, 5000, 5000, 5000], [0, 4000, 4000, 4000], [0, -cap_w, -0.9 * cap_w, -0.96 * cap_w], [nan] * 4)
    split = curtailment_by_cause(run, cfg, np.array([20.0]))
    assert split.by_cause["feed-in cap"][0].tolist() == [0, 1000, 0, 1000]


def test_fields_the_page_does_not_know_are_shown_as_tables():
    page = value_html({"fidelity": {"import": 0.012, "within_2pct": True}, "overrides": [{"name": "cap 50 %"}]})
    assert "<th>fidelity</th>" in page and "<th>within_2pct</th><td>yes</td>" in page and "0.012" in page
    assert "<th>name</th>" in page and "<td>cap 50 %</td>" in page
    assert value_html("<script>") == "&lt;script&gt;"
    assert f"… {5} more" in value_html(list(range(SHOWN_ROWS + 5)))


def test_the_page_has_goals_kpis_a_figure_and_every_other_field(cfg):
    nan = float("nan")
    run = run_of([0, 4000, 4000, 4000], [0, 1600, 4000, 4000], [0, 0, -1000, -1000], [nan, 1200, nan, nan])
    report = {
        "start": "2026-06-21T00:00:00+02:00",
        "end": "2026-06-21T00:15:00+02:00",
        "fleet": {"sites": 1, "devices": 3},
        "scenario": None,
        "minutes": 15,
        "quarter_hours": 1,
        "cadence": {
            "poll_interval_s": STEP_S,
            "dispatch_interval_s": 900.0,
            "poll_interval_source": "scenario",
            "dispatch_interval_source": "config",
        },
        "strategies": [
            {"strategy": "optimizer", "cost_eur": 1.5, "cap_violations": 1, "replay_wall_s": 400.0, "extra_kpi": 7}
        ],
        "fidelity": {"cost_error": 0.004},
        "plots": [],
    }
    page = report_html(report, [run], cfg, np.array([50.0]))
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert 'optimizer: 1 cap violations (goal 0)</td><td class="missed">missed' in page
    assert 'replay 400 s wall (goal ≤ 300 s per strategy for the demo day)</td><td class="missed">' in page
    assert "<th>cost, EUR</th><td>1.50</td>" in page and "<th>extra_kpi</th><td>7</td>" in page
    assert "<th>curtailed by stage, kWh</th><td>0.2</td>" in page  # 2400 W for 300 s
    assert "polling every 300 s (the scenario)" in page
    assert "<th>fidelity</th>" in page and "cost_error" in page
    assert page.count("src='data:image/png;base64,") == 1
