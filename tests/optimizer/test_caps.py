"""The caps layer on its own: each clamp, and that the clamped setpoints break no bound."""

from __future__ import annotations

import numpy as np
import pytest

from sparcs.config.grid_rules import stage_ceiling_w
from sparcs.optimizer.caps import apply_caps, violations
from sparcs.optimizer.fleet_arrays import CAP_PLAN_SHARE, fleet_arrays
from tests.optimizer.small import battery, problem, site


def caps_of(s, pv_w, battery_w, **kw):  # type: ignore[no-untyped-def]
    fa = fleet_arrays(problem([s], **kw))
    sp = apply_caps(fa, np.atleast_2d(np.asarray(pv_w, dtype=float)), np.atleast_2d(np.asarray(battery_w, dtype=float)))
    assert violations(fa, sp) == []
    return sp


def test_feed_in_cap_limits_export_at_the_meter_and_counts_load_and_charging() -> None:
    s = site([10_000, 10_000], 2000, battery=battery(soc_now=0.2), feed_in_cap_w=6000.0)
    sp = caps_of(s, [10_000, 10_000], [0, -1000])
    planned_cap = CAP_PLAN_SHARE * 6000
    assert sp.grid_w[0] == pytest.approx([-planned_cap, -planned_cap])
    assert sp.pv_limit_w[0] == pytest.approx([planned_cap + 2000, planned_cap + 3000])  # cap + load (+ charge)


def test_plans_keep_a_margin_below_the_cap_for_load_dips_between_polls() -> None:
    s = site([10_000], 2000, feed_in_cap_w=6000.0)
    sp = caps_of(s, [10_000], [0])
    assert -sp.grid_w[0, 0] <= 0.97 * 6000 + 1e-6  # a 3 % dip of the forecast load stays within the cap


def test_discharge_does_not_push_export_over_the_cap() -> None:
    s = site([7000], 1000, battery=battery(), feed_in_cap_w=6000.0)
    sp = caps_of(s, [7000], [3000])
    assert sp.battery_w[0, 0] == pytest.approx(0.0)
    assert sp.grid_w[0, 0] == pytest.approx(-CAP_PLAN_SHARE * 6000)


def test_negative_price_rule_means_no_export_in_negative_quarter_hours() -> None:
    s = site([5000, 5000], 1000, battery=battery(), negative_price_rule=True)
    sp = caps_of(s, [5000, 5000], [2000, 2000], price=[30.0, -5.0])
    assert sp.grid_w[0, 1] == pytest.approx(0.0)
    assert sp.battery_w[0, 1] == pytest.approx(0.0)
    assert sp.pv_limit_w[0, 1] == pytest.approx(1000)
    assert sp.grid_w[0, 0] < -1000  # a positive price: export allowed


def test_curtailment_stage_is_a_ceiling_on_output_and_on_the_limit() -> None:
    ceiling = stage_ceiling_w("K2", 10_000.0)
    s = site([8000, 8000], 500, stage_ceiling_w=np.array([ceiling, np.nan]))
    sp = caps_of(s, [8000, 8000], [0, 0])
    assert sp.pv_w[0] == pytest.approx([3000, 8000])
    assert sp.pv_limit_w[0, 0] == pytest.approx(3000)
    assert sp.pv_limit_w[0, 1] == pytest.approx(10_000)  # not curtailing: the installer ceiling


def test_installer_ceiling_is_never_lifted() -> None:
    s = site([9000], 0, pv_ceiling_w=7000.0)
    sp = caps_of(s, [9000], [0])
    assert sp.pv_w[0, 0] == pytest.approx(7000)
    assert sp.pv_limit_w[0, 0] == pytest.approx(7000)


def test_para14a_limits_grid_charging_but_not_charging_from_pv_surplus() -> None:
    b = battery(capacity_kwh=40.0, power_w=10_000.0, soc_now=0.1)
    s = site([0, 6000], 1000, battery=b, para14a=np.array([True, True]))
    sp = caps_of(s, [0, 6000], [-10_000, -10_000])
    assert sp.battery_w[0] == pytest.approx([-4200, -9200])  # 4.2 kW + 5 kW PV surplus
    assert sp.grid_w[0] == pytest.approx([5200, 4200])


def test_soc_bounds_shrink_charge_and_discharge() -> None:
    s = site([0, 0, 0], 0, battery=battery(capacity_kwh=1.0, power_w=5000.0, soc_now=0.9))
    sp = caps_of(s, [0, 0, 0], [-5000, 5000, 5000])
    e = sp.energy_wh[0]
    assert e[1] == pytest.approx(950.0)  # soc_max 0.95 of 1 kWh
    assert e[-1] == pytest.approx(50.0)  # soc_min 0.05
    assert sp.battery_w[0, 0] == pytest.approx(-50 / (0.95 * 0.25))


def test_connection_limit_bounds_import() -> None:
    s = site([0], 8000, battery=battery(power_w=5000.0), connection_limit_w=10_000.0)
    sp = caps_of(s, [0], [-5000])
    assert sp.grid_w[0, 0] == pytest.approx(10_000)
    assert sp.battery_w[0, 0] == pytest.approx(-2000)


def test_violations_names_a_broken_bound() -> None:
    s = site([5000], 1000, feed_in_cap_w=3000.0)
    fa = fleet_arrays(problem([s]))
    sp = apply_caps(fa, np.array([[5000.0]]), np.zeros((1, 1)))
    sp.grid_w = sp.grid_w - 500.0
    sp.pv_w = sp.pv_w + 500.0
    assert any("export above the cap" in v for v in violations(fa, sp))
