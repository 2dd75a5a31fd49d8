"""One site, a few quarter-hours: optimal plans and objective values checked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from sparcs.optimizer.baselines import self_consumption_plan
from sparcs.optimizer.dispatch import plan
from sparcs.optimizer.fleet_arrays import CAP_PLAN_SHARE
from tests.optimizer.small import battery, problem, site

Q_H = 0.25  # a quarter-hour in hours


def test_feed_in_cap_holds_at_the_meter_not_at_the_inverter() -> None:
    # 5 kW PV, 1 kW load, 60 % cap of 5 kWp = 3 kW at the meter, planned with the margin
    # (2.91 kW): the inverter may deliver 3.91 kW.
    s = site([5000, 5000], 1000, kwp=5.0, feed_in_cap_w=3000.0)
    p = plan(problem([s]))
    assert p.path == "optimal"
    cap_kw = CAP_PLAN_SHARE * 3.0
    assert p.grid_w[0] == pytest.approx([-cap_kw * 1000, -cap_kw * 1000], abs=1e-3)
    assert p.pv_w[0] == pytest.approx([(cap_kw + 1) * 1000] * 2, abs=1e-3)
    assert p.pv_limit_w[0] == pytest.approx([(cap_kw + 1) * 1000] * 2, abs=1e-3)
    # export earned twice at 0.08 EUR/kWh, the rest of the 5 kW curtailed at 0.001 EUR/kWh twice
    assert p.objective_eur == pytest.approx(2 * (-cap_kw * Q_H * 0.08 + (4 - cap_kw) * Q_H * 0.001), abs=1e-7)


def test_surplus_is_stored_when_the_stored_kwh_is_worth_more_than_export() -> None:
    # Stored energy is worth 0.30 × eta_d = 0.30 EUR/kWh at the end; export earns 0.08.
    s = site([3000, 0], [1000, 2000], import_eur_per_kwh=0.30, battery=battery(eta_charge=0.9, eta_discharge=1.0))
    p = plan(problem([s], battery_throughput_eur_per_kwh=0.0, curtailment_penalty_eur_per_kwh=0.0))
    assert p.battery_w[0, 0] == pytest.approx(-2000, abs=1e-3)
    assert p.grid_w[0, 0] == pytest.approx(0, abs=1e-3)
    # period 2 imports or discharges (a tie at these prices); either way:
    # import (0.5 − x) kWh × 0.30 − stored (5 + 0.9 × 0.5 − x) kWh × 0.30 = −1.485 EUR
    assert p.objective_eur == pytest.approx(-1.485, abs=1e-6)
    assert p.soc[0, 1] == pytest.approx(0.5 + 0.45 / 10, abs=1e-7)


def test_negative_price_rule_curtails_instead_of_exporting() -> None:
    s = site([5000, 5000], 1000, kwp=5.0, negative_price_rule=True)
    p = plan(problem([s], price=[50.0, -10.0]))
    assert p.grid_w[0] == pytest.approx([-4000, 0], abs=1e-3)
    assert p.pv_limit_w[0, 1] == pytest.approx(1000, abs=1e-3)
    assert p.objective_eur == pytest.approx(-4 * Q_H * 0.08 + 4 * Q_H * 0.001, abs=1e-7)


def test_schedule_is_followed_where_set_and_free_elsewhere() -> None:
    s = site([3000, 3000], 500)
    p = plan(problem([s], schedule=[2000.0, np.nan]))
    assert p.export_w == pytest.approx([2000, 2500], abs=1e-3)
    # exporting past the schedule would earn 0.08 but cost 1.00 EUR/kWh of deviation
    assert p.objective_eur == pytest.approx(-2 * Q_H * 0.08 + 0.5 * Q_H * 0.001 - 2.5 * Q_H * 0.08, abs=1e-7)
    assert p.parts.schedule == pytest.approx(0.0, abs=1e-9)


def test_para14a_caps_grid_charging_of_an_empty_battery() -> None:
    # SoC 0 below soc_min 0.5: the battery must charge as fast as allowed, i.e. 4.2 kW from the grid.
    b = battery(capacity_kwh=20.0, power_w=10_000.0, soc_now=0.0, soc_min=0.5)
    s = site([0, 0], 500, battery=b, para14a=np.array([True, True]))
    p = plan(problem([s]))
    assert p.battery_w[0] == pytest.approx([-4200, -4200], abs=1e-3)
    assert p.grid_w[0] == pytest.approx([4700, 4700], abs=1e-3)
    stored_kwh = 2 * 4.2 * Q_H * 0.95
    expected = 2 * 4.7 * Q_H * 0.32 + 2 * 4.2 * Q_H * 0.02 - 0.95 * 0.32 * stored_kwh
    assert p.objective_eur == pytest.approx(expected, abs=1e-7)
    assert p.soc_end_kwh == pytest.approx(stored_kwh, abs=1e-6)


@pytest.mark.parametrize("start_h", [0, 5, 20, 22])
def test_a_day_plan_imports_no_more_than_self_consumption_when_grid_charging_cannot_pay(start_h: int) -> None:
    # A day of sun and evening load at a flat tariff: nothing pays for grid charging, so every kWh
    # the plan imports beyond self-consumption's would be a kWh the battery could have covered.
    h = (start_h + np.arange(96) / 4.0) % 24
    pv = np.clip(6000 * np.sin(np.pi * (h - 5) / 16), 0, None)
    load = 400 + 600 * ((h > 18) | (h < 7))
    b = battery(capacity_kwh=10.0, power_w=3000.0, soc_now=0.6)
    p = problem([site(pv, load, battery=b, import_eur_per_kwh=0.30, export_eur_per_kwh=0.08)])
    lp, sc = plan(p), self_consumption_plan(p)
    imported_kwh = [float(np.maximum(x.grid_w, 0).sum()) * Q_H / 1000 for x in (lp, sc)]
    assert imported_kwh[0] <= imported_kwh[1] + 1e-6
    assert lp.objective_eur <= sc.objective_eur + 1e-9
