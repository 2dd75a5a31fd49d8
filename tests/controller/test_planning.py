"""The planner's inputs: day-ahead prices from a CSV (reloaded when it changes), problems of controllable sites."""

from __future__ import annotations

import datetime as dt
import os
import warnings

import numpy as np
import pytest

from sparcs.config.schema import validate_config
from sparcs.controller.commands import CommandBook
from sparcs.controller.planning import FleetPlanner, PriceFileError, read_prices_csv
from sparcs.controller.state import build_state
from sparcs.controller.store import Store
from tests.controller.conftest import site_telemetry, small_fleet_data

T0 = dt.datetime(2026, 6, 21, 10, 0, tzinfo=dt.UTC)


def write_prices(path, value: float, start=T0, n=200) -> None:
    rows = ["timestamp,eur_per_mwh"]
    rows += [f"{(start + dt.timedelta(minutes=15 * i)).isoformat()},{value}" for i in range(n)]
    path.write_text("\n".join(rows) + "\n")


def test_price_file_errors_name_the_line(tmp_path):
    bad = tmp_path / "p.csv"
    bad.write_text("timestamp,eur_per_mwh\n2026-06-21T10:00:00+00:00,12\n2026-06-21T10:15:00,13\n")
    with pytest.raises(PriceFileError, match=r"p.csv:3: timestamp 2026-06-21T10:15:00 needs a UTC offset"):
        read_prices_csv(bad)
    bad.write_text("timestamp,eur_per_mwh\n2026-06-21T10:00:00+00:00,cheap\n")
    with pytest.raises(PriceFileError, match=r"p.csv:2: needs columns timestamp,eur_per_mwh"):
        read_prices_csv(bad)


def test_planner_uses_the_price_file_and_reloads_it_when_it_changes(tmp_path):
    prices = tmp_path / "prices.csv"
    write_prices(prices, -20.0)
    data = small_fleet_data(2)
    data["market"] = {"prices_csv": str(prices), "flat_price_eur_per_mwh": 80}
    cfg = validate_config(data)
    store = Store(data_dir=tmp_path / "d")
    planner = FleetPlanner(cfg)
    try:
        telemetry = {}
        for site in cfg.sites:
            telemetry.update(site_telemetry(site))
        state = build_state(cfg, telemetry, T0.timestamp())
        commands = CommandBook(store, cfg)
        problem = planner.problem(state, commands, T0.timestamp())
        assert [s.site_id for s in problem.sites] == [s.id for s in cfg.sites]
        covered = problem.period_start_s < T0.timestamp() + 200 * 900
        assert np.all(problem.price_eur_per_mwh[covered] == -20.0)

        write_prices(prices, 55.0)
        os.utime(prices, (1, T0.timestamp() + 5))
        assert np.all(planner.problem(state, commands, T0.timestamp()).price_eur_per_mwh[covered] == 55.0)

        prices.write_text("timestamp,eur_per_mwh\nnot a time,1\n")
        os.utime(prices, (1, T0.timestamp() + 10))
        assert np.all(planner.problem(state, commands, T0.timestamp()).price_eur_per_mwh[covered] == 55.0)
    finally:
        planner.close()
        store.close()


def test_a_missing_price_file_is_refused_at_start(tmp_path, small_cfg):
    small_cfg.market.prices_csv = tmp_path / "nowhere.csv"
    with pytest.raises(PriceFileError, match=r"market\.prices_csv"):
        FleetPlanner(small_cfg)


def planner_with_prices(tmp_path, hours: float, start=T0, tariff: str | None = None):
    prices = tmp_path / "prices.csv"
    write_prices(prices, 40.0, start=start, n=int(hours * 4))
    data = small_fleet_data(2)
    data["market"] = {"prices_csv": str(prices), "flat_price_eur_per_mwh": 80}
    for s in data["sites"]:
        s["grid"]["negative_price_rule"] = False
        s["tariff"] = {"import_eur_per_kwh": 0.3, "export_eur_per_kwh": 0.08}
    if tariff == "dynamic":
        data["tariffs"] = {"dyn": {"import": {"kind": "dynamic", "fees_eur_per_kwh": 0.15}}}
        data["sites"][0]["tariff"] = "dyn"
    cfg = validate_config(data)
    telemetry = {}
    for site in cfg.sites:
        telemetry.update(site_telemetry(site))
    store = Store(data_dir=tmp_path / "d")
    return FleetPlanner(cfg), build_state(cfg, telemetry, T0.timestamp()), CommandBook(store, cfg), store


def test_a_plan_that_needs_day_ahead_prices_ends_where_they_end_and_says_so(tmp_path):
    planner, state, commands, store = planner_with_prices(tmp_path, 10, tariff="dynamic")
    try:
        problem = planner.problem(state, commands, T0.timestamp())
        assert problem.period_start_s[-1] + problem.period_s[-1] == T0.timestamp() + 10 * 3600
        assert np.isfinite(problem.price_eur_per_mwh).all()
        dyn = problem.sites[0].import_eur_per_kwh
        assert dyn == pytest.approx((0.04 + 0.15) * 1.19)  # day-ahead + fees, VAT: no flat price
        assert "day-ahead prices known until 2026-06-21T22:00:00+02:00: the plan ends there" in planner.price_note
    finally:
        planner.close()
        store.close()


def test_sites_on_fixed_tariffs_are_planned_over_the_whole_horizon_without_prices(tmp_path):
    planner, state, commands, store = planner_with_prices(tmp_path, 10)
    try:
        problem = planner.problem(state, commands, T0.timestamp())
        assert problem.periods == 97 and np.isnan(problem.price_eur_per_mwh[-1])
        assert planner.price_note == ""
    finally:
        planner.close()
        store.close()


async def test_without_a_price_for_now_a_site_that_needs_one_is_planned_by_the_rules(tmp_path):
    later = T0 + dt.timedelta(hours=30)
    planner, state, commands, store = planner_with_prices(tmp_path, 10, start=later, tariff="dynamic")
    try:
        plan = await planner.plan(state, commands, T0.timestamp())
        assert plan is not None and plan.path == "fallback_rules"
        assert plan.reason.startswith("no day-ahead price for the current quarter-hour from market.prices_csv")
        assert np.isnan(plan.price_eur_per_mwh).all()
    finally:
        planner.close()
        store.close()


def test_energy_left_at_the_end_is_valued_at_the_mean_import_price_of_the_day_the_plan_ends(tmp_path):
    day = dt.datetime(2026, 6, 21, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    prices = tmp_path / "prices.csv"
    rows = ["timestamp,eur_per_mwh"]
    rows += [f"{(day + dt.timedelta(minutes=15 * i)).isoformat()},{40 + 200 * (i >= 68)}" for i in range(96)]
    prices.write_text("\n".join(rows) + "\n")
    data = small_fleet_data(1)
    data["market"] = {"prices_csv": str(prices)}
    data["tariffs"] = {"dyn": {"import": {"kind": "dynamic", "fees_eur_per_kwh": 0.15, "vat": 0.0}}}
    data["sites"][0]["tariff"] = "dyn"
    cfg = validate_config(data)
    end = (day + dt.timedelta(days=1)).timestamp()
    evening = (day + dt.timedelta(hours=18)).timestamp()
    planner = FleetPlanner(cfg, horizon_end_s=end)
    store = Store(data_dir=tmp_path / "d")
    try:
        state = build_state(cfg, site_telemetry(cfg.sites[0]), evening)
        problem = planner.problem(state, CommandBook(store, cfg), evening)
        site = problem.sites[0]
        assert site.import_eur_per_kwh == pytest.approx(0.24 + 0.15)  # the dear evening that remains
        assert site.terminal_eur_per_kwh == pytest.approx((68 * 0.04 + 28 * 0.24) / 96 + 0.15)  # the day's mean
    finally:
        planner.close()
        store.close()


def test_a_quarter_hour_without_a_measured_load_has_no_mean_and_no_warning():
    cfg = validate_config(small_fleet_data(1))
    site = cfg.sites[0]
    planner = FleetPlanner(cfg)
    try:
        t0 = T0.timestamp()
        for k in range(15):  # the meter never answers: the site's load is unknown, its PV is not
            telemetry = {i: t for i, t in site_telemetry(site).items() if t.kind != "meter"}
            planner.measurements.observe(build_state(cfg, telemetry, t0 + 60.0 * k))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert np.isnan(planner.measurements.period_mean_w("load", site.id, t0, t0 + 900.0))
            assert planner.measurements.period_mean_w("pv", site.id, t0, t0 + 900.0) == pytest.approx(3000.0)
    finally:
        planner.close()


def test_site_samples_keep_the_newest_and_slice_by_time_across_the_moves():
    from collections import deque

    from sparcs.controller.planning import SiteSamples

    keep = 5
    samples, reference = SiteSamples(keep), deque(maxlen=keep)
    for k in range(4 * keep + 3):  # past two moves of the newest to the front
        row = (60.0 * k, float(k), 100.0 + k, k % 3 == 0)
        samples.append(*row)
        reference.append(row)
        assert len(samples) == len(reference) and samples.last_ts == reference[-1][0]
        for start, end in ((-np.inf, np.inf), (60.0 * (k - 2), np.inf), (60.0 * (k - 3), 60.0 * k)):
            t, pv, load, held = samples.since(start, end)
            want = [r for r in reference if start <= r[0] < end]
            assert t.tolist() == [r[0] for r in want] and pv.tolist() == [r[1] for r in want]
            assert load.tolist() == [r[2] for r in want] and held.tolist() == [r[3] for r in want]
