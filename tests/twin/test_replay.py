"""A short replay (90 minutes, three sites) with a fault and operator commands, through the real cycle.

One module-scoped replay per strategy; the tests read its ground truth, report and store. Its
scenario sets the cadence (60 s polls, quarter-hourly dispatch); a shorter replay at the fleet
file's own cadence (10 s / 300 s, as production) checks that the twin follows the config.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import numpy as np
import pytest

from sparcs.config.schema import CONFIG_DIR, validate_config
from sparcs.controller.store import Store
from sparcs.optimizer.curves import BERLIN
from sparcs.twin.kpi import day_prices, energy_balance, quarter_starts
from sparcs.twin.replay import replay
from sparcs.twin.report_html import curtailment_by_cause
from sparcs.twin.run import write_outputs
from sparcs.twin.scenario import Scenario, apply_scenario
from tests.controller.conftest import small_fleet_data

pytestmark = pytest.mark.timeout(600)  # the module's replay runs in the first test's setup

DAY = "2026-05-12"
FAULTY = "lej-002-bat"
STRATEGIES = ("optimizer", "none")
REPORT_FIELDS = (
    "strategy",
    "cost_eur",
    "revenue_eur",
    "import_kwh",
    "export_kwh",
    "self_consumption",
    "self_sufficiency",
    "curtailed_kwh",
    "tracking_mae_kw",
    "cap_violations",
    "fallbacks",
    "solve_s_p50",
    "solve_s_p99",
    "soc_end_kwh",
    "captured",
)


def at(hhmm: str) -> str:
    return f"{DAY}T{hhmm}:00+02:00"


def ts(hhmm: str) -> float:
    return dt.datetime.fromisoformat(at(hhmm)).timestamp()


SCENARIO = Scenario.model_validate(
    {
        "date": DAY,
        "weather": {"cloudiness": 0.1},
        "prices_csv": str(CONFIG_DIR / "scenarios" / "prices_2026-05-12.csv"),
        "actions": [
            {"at": at("11:05"), "stage": {"stage": "K2", "start": at("11:10"), "expires_at": at("11:45")}},
            {
                "at": at("11:50"),
                "schedule": {"points": [{"start": at(f"12:{m:02d}"), "export_w": 8000.0} for m in (0, 15)]},
            },
        ],
        "faults": [{"at": at("11:45"), "devices": [FAULTY], "mode": "offline"}],
        "poll_interval_s": 60,
        "dispatch_interval_s": 900,
    }
)
BOUNDS = (ts("11:00"), ts("12:30"))


@pytest.fixture(scope="module")
def cfg():
    return apply_scenario(validate_config(small_fleet_data(3)), SCENARIO)


@pytest.fixture(scope="module")
def replayed(cfg, tmp_path_factory):
    out = tmp_path_factory.mktemp("twin")
    runs = [asyncio.run(replay(cfg, s, BOUNDS, SCENARIO, out / "history" / s)) for s in STRATEGIES]
    report = write_outputs(runs, cfg, BOUNDS, None, SCENARIO, out)
    return {"runs": {r.strategy: r for r in runs}, "report": report, "out": out}


def row(replayed, strategy):
    return next(r for r in replayed["report"]["strategies"] if r["strategy"] == strategy)


def test_report_has_every_field_for_every_strategy(replayed):
    on_disk = json.loads((replayed["out"] / "report.json").read_text())
    assert [r["strategy"] for r in on_disk["strategies"]] == list(STRATEGIES)
    for r in on_disk["strategies"]:
        missing = [f for f in REPORT_FIELDS if f not in r]
        assert not missing
        assert r["tracking_mae_kw"] is not None  # a schedule was in force
        assert r["captured"] is None  # perfect foresight did not run
    assert (replayed["out"] / "summary.md").read_text().count("|") > 20
    for name in on_disk["plots"]:
        assert (replayed["out"] / name).stat().st_size > 10_000


def test_the_page_shows_goals_kpis_and_a_figure_per_strategy(replayed):
    page = (replayed["out"] / "report.html").read_text()
    assert replayed["report"]["html"] == "report.html"
    assert "<h2>Goals</h2>" in page and "cap violations (goal 0)" in page
    for strategy in STRATEGIES:
        assert f"<h2>{strategy}</h2>" in page
    assert page.count("src='data:image/png;base64,") == len(STRATEGIES)
    assert "polling every 60 s (the scenario)" in page
    assert "curtailed by stage, kWh" in page and "<th>balance</th>" in page  # a field rendered generically


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_curtailment_splits_by_cause_and_the_stage_is_named(replayed, cfg, strategy):
    run = replayed["runs"][strategy]
    prices = day_prices(cfg, quarter_starts(BOUNDS))
    split = curtailment_by_cause(run, cfg, prices)
    total = np.maximum(run.trace.power("available_w") - run.trace.power("pv_w"), 0.0)
    assert sum(split.by_cause.values()) == pytest.approx(total)
    stage = split.by_cause["stage"]
    assert stage[~np.isfinite(run.stage_ceiling_w)].sum() == 0.0  # only while a stage is in force
    assert split.kwh("stage", run.trace.step_s) > 0.1  # K2 holds PV at 30 % from 11:10 to 11:45 on a sunny day


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_net_import_equals_the_meter_samples(replayed, strategy):
    run = replayed["runs"][strategy]
    r = row(replayed, strategy)
    grid = run.trace.power("grid_w")[:, 1:]
    assert run.trace.step_s == pytest.approx(60.0)  # the scenario's poll interval
    from_samples_kwh = grid.sum() * run.trace.step_s / 3.6e6
    assert r["import_kwh"] - r["export_kwh"] == pytest.approx(from_samples_kwh, rel=0.005, abs=0.01)
    assert r["export_kwh"] == pytest.approx(np.maximum(-grid, 0).sum() * run.trace.step_s / 3.6e6, rel=0.005, abs=0.01)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_cost_is_tariffs_times_energy(replayed, cfg, strategy):
    run = replayed["runs"][strategy]
    r = row(replayed, strategy)
    sites = [cfg.site(s) for s in run.trace.site_ids]
    assert not any(s.tariff.direct_marketing for s in sites)  # prices on this day are positive: fixed tariffs
    imp = run.trace.counter("import_wh")
    exp = run.trace.counter("export_wh")
    stored = run.trace.counter("stored_wh")
    import_cost = sum((imp[i, -1] - imp[i, 0]) / 1000 * s.tariff.import_eur_per_kwh for i, s in enumerate(sites))
    revenue = sum((exp[i, -1] - exp[i, 0]) / 1000 * s.tariff.export_eur_per_kwh for i, s in enumerate(sites))
    storage = sum(
        (stored[i, -1] - stored[i, 0]) / 1000 * s.tariff.import_eur_per_kwh * s.battery.eta_discharge
        for i, s in enumerate(sites)
        if s.battery
    )
    assert r["revenue_eur"] == pytest.approx(revenue, rel=1e-9, abs=1e-9)
    assert r["cost_eur"] == pytest.approx(import_cost - revenue - storage, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_energy_balance_closes_per_site(replayed, cfg, strategy):
    balance = energy_balance(replayed["runs"][strategy].trace, cfg)
    for b in balance:
        assert abs(b["residual"]) < 0.005, b
        assert abs(b["storage_residual"]) < 0.005, b
    assert sum(b["pv_kwh"] for b in balance) > 1.0  # a sunny noon: the balance is not trivially empty


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_the_stage_holds_pv_at_30_percent(replayed, cfg, strategy):
    run = replayed["runs"][strategy]
    t = run.trace.times
    pv = run.trace.power("pv_w")
    rating = np.array([cfg.site(s).pv.rating_w for s in run.trace.site_ids])[:, None]
    during = (t >= ts("11:12")) & (t <= ts("11:45"))
    before = t <= ts("11:10")
    assert (pv[:, during] <= 0.3 * rating * 1.01 + 0.01 * rating).all()
    assert (pv[:, before] > 0.35 * rating).any()  # without the stage they would produce more
    assert row(replayed, strategy)["stage_violations"] == 0


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_plans_end_with_the_replayed_span(replayed, strategy):
    store = Store(data_dir=replayed["out"] / "history" / strategy)
    try:
        plan = store.last_plan().to_record()
    finally:
        store.close()
    assert plan["start_s"] + sum(plan["period_s"]) == pytest.approx(BOUNDS[1])


def test_the_faulty_device_goes_stale_and_is_alarmed(replayed):
    store = Store(data_dir=replayed["out"] / "history" / "optimizer")
    try:
        alarms = [a for a in store.alarms() if a["source"] == f"device:{FAULTY}"]
    finally:
        store.close()
    assert alarms and alarms[0]["raised_at"] >= ts("11:45")


def test_operator_commands_replan_at_once_and_the_schedule_is_tracked(replayed):
    run = replayed["runs"]["optimizer"]
    times = {dt.datetime.fromtimestamp(d.at_s, BERLIN).strftime("%H:%M") for d in run.dispatches}
    assert {"11:05", "11:50"} <= times  # an operator command is planned at once, not at the next quarter-hour
    assert len(run.dispatches) == 6 + 2
    scheduled = np.isfinite(run.schedule_w)
    assert scheduled.sum() == 2
    assert row(replayed, "optimizer")["cap_violations"] == 0


def test_the_report_states_the_scenario_cadence(replayed):
    cadence = json.loads((replayed["out"] / "report.json").read_text())["cadence"]
    assert cadence == {
        "poll_interval_s": 60.0,
        "dispatch_interval_s": 900.0,
        "poll_interval_source": "scenario",
        "dispatch_interval_source": "scenario",
    }
    summary = (replayed["out"] / "summary.md").read_text()
    assert (
        "polling every 60 s (the scenario) and dispatching every 900 s aligned to the clock (the scenario)" in summary
    )
    run = replayed["runs"]["none"]
    assert len(run.trace.t_s) == 90 + 1 and run.poll_interval_s == 60.0


@pytest.fixture(scope="module")
def at_config_cadence(tmp_path_factory):
    """Half an hour, one site, at the fleet file's cadence (demo.yaml: 10 s polls, 300 s dispatch)."""
    data = small_fleet_data(1)
    assert data["dispatch"]["poll_interval_s"] == 10 and data["dispatch"]["dispatch_interval_s"] == 300
    scenario = Scenario.model_validate({"date": DAY, "weather": {"cloudiness": 0.1}})
    cfg = apply_scenario(validate_config(data), scenario)
    out = tmp_path_factory.mktemp("twin-config-cadence")
    bounds = (ts("11:00"), ts("11:30"))
    run = asyncio.run(replay(cfg, "self-consumption", bounds, scenario, out / "history"))
    report = write_outputs([run], cfg, bounds, None, scenario, out)
    return {"run": run, "report": report, "out": out, "cfg": cfg}


def test_the_twin_follows_the_config_cadence_with_aligned_dispatch_ticks(at_config_cadence):
    run = at_config_cadence["run"]
    assert run.poll_interval_s == 10.0 and run.dispatch_interval_s == 300.0
    assert run.trace.step_s == pytest.approx(10.0)
    assert len(run.trace.t_s) == 180 + 1  # ground truth at every poll
    times = [dt.datetime.fromtimestamp(d.at_s, BERLIN).strftime("%H:%M:%S") for d in run.dispatches]
    assert times == [f"11:{m:02d}:00" for m in range(0, 30, 5)]  # :00, :05, ... as the production scheduler
    cadence = at_config_cadence["report"]["cadence"]
    assert cadence["poll_interval_source"] == cadence["dispatch_interval_source"] == "config"
    assert at_config_cadence["report"]["polls"] == 180


def test_kpis_use_the_sample_spacing(at_config_cadence):
    run = at_config_cadence["run"]
    (r,) = at_config_cadence["report"]["strategies"]
    grid = run.trace.power("grid_w")[:, 1:]
    assert r["import_kwh"] - r["export_kwh"] == pytest.approx(grid.sum() * 10.0 / 3.6e6, rel=0.005, abs=0.01)
    load = run.trace.power("load_w")[:, 1:]
    assert r["load_kwh"] == pytest.approx(load.sum() * 10.0 / 3.6e6, rel=1e-9)
    assert r["load_kwh"] > 0.1 and r["dispatches"] == 6
    for b in energy_balance(run.trace, at_config_cadence["cfg"]):
        assert abs(b["residual"]) < 0.005 and abs(b["storage_residual"]) < 0.005, b
