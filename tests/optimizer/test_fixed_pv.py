"""Sites whose PV cannot be curtailed (docs/definitions.md "Sites whose PV cannot be curtailed"): PV is used
in full, the battery takes what it can of the export over the feed-in cap, the rest goes over it."""

from __future__ import annotations

import numpy as np
import pytest

from sparcs.optimizer.aggregate import net_export_range_w
from sparcs.optimizer.caps import violations
from sparcs.optimizer.dispatch import plan, plan_hierarchical
from sparcs.optimizer.fleet_arrays import CAP_PLAN_SHARE, fleet_arrays
from tests.optimizer.small import battery, problem, setpoints_of, site

PV_W, LOAD_W, CAP_W = 4800.0, 1000.0, 2000.0  # a 5 kWp site (ceiling 5 kW)
PLANNED_CAP_W = CAP_PLAN_SHARE * CAP_W
EXCESS_W = PV_W - LOAD_W - PLANNED_CAP_W  # 1.86 kW over the planned cap


def test_fixed_pv_is_used_in_full_and_the_battery_keeps_the_cap() -> None:
    # 1.86 kW over the planned cap, which the battery (room for 4.5 kWh) can take in both
    # quarter-hours; exporting it instead would earn 0.08 EUR/kWh.
    s = site([PV_W, PV_W], LOAD_W, kwp=5.0, feed_in_cap_w=CAP_W, pv_curtailable=False, battery=battery(soc_now=0.5))
    p = plan(problem([s]))
    assert p.path == "optimal"
    assert p.pv_w[0] == pytest.approx([PV_W, PV_W], abs=1e-6)
    assert p.pv_limit_w[0] == pytest.approx([5000, 5000], abs=1e-6)  # the ceiling: no limit
    assert np.all(-p.grid_w[0] <= PLANNED_CAP_W + 1e-3)
    assert np.all(p.battery_w[0] <= -EXCESS_W + 1e-3)
    assert violations(fleet_arrays(problem([s])), setpoints_of(p, fleet_arrays(problem([s])))) == []


def test_export_goes_over_the_cap_only_what_the_battery_cannot_take() -> None:
    # The battery has room for 0.3 kWh stored (≈ 0.316 kWh AC at η_c 0.95): the first quarter-hour's
    # excess (1.86 kW × 0.25 h = 0.465 kWh) exceeds it, so the rest goes over the cap; in the second
    # the battery is full and the whole excess goes over. It never discharges into the export.
    s = site([PV_W, PV_W], LOAD_W, kwp=5.0, feed_in_cap_w=CAP_W, pv_curtailable=False, battery=battery(soc_now=0.92))
    pr = problem([s])
    p = plan(pr)
    fa = fleet_arrays(pr)
    assert p.path == "optimal"
    assert p.pv_w[0] == pytest.approx([PV_W, PV_W], abs=1e-6)
    stored_ac_kwh = (0.95 - 0.92) * 10.0 / 0.95
    charged_kwh = float(-np.minimum(p.battery_w[0], 0.0).sum() * 0.25 / 1000.0)
    assert charged_kwh == pytest.approx(stored_ac_kwh, rel=1e-6)
    assert p.soc[0, -1] == pytest.approx(0.95, abs=1e-9)
    over_kwh = float(np.maximum(-p.grid_w[0] - PLANNED_CAP_W, 0.0).sum() * 0.25 / 1000.0)
    assert over_kwh == pytest.approx(2 * EXCESS_W * 0.25 / 1000.0 - stored_ac_kwh, rel=1e-6)
    assert np.all(p.battery_w[0] <= 1e-6)
    assert violations(fa, setpoints_of(p, fa)) == []


def test_a_curtailable_site_beside_keeps_its_cap_by_curtailing() -> None:
    fixed = site([PV_W, PV_W], LOAD_W, kwp=5.0, feed_in_cap_w=CAP_W, pv_curtailable=False, site_id="fixed")
    free = site([PV_W, PV_W], LOAD_W, kwp=5.0, feed_in_cap_w=CAP_W, site_id="free")
    p = plan(problem([fixed, free]))
    assert p.pv_w[0] == pytest.approx([PV_W, PV_W], abs=1e-6)
    assert p.grid_w[0] == pytest.approx([-(PV_W - LOAD_W)] * 2, abs=1e-6)  # no battery: all of it over the cap
    assert p.grid_w[1] == pytest.approx([-PLANNED_CAP_W] * 2, abs=1e-3)
    assert p.pv_limit_w[1] == pytest.approx([PLANNED_CAP_W + LOAD_W] * 2, abs=1e-3)


def test_the_hierarchical_path_keeps_fixed_pv_in_full() -> None:
    # Both paths of the split-back: battery sites in chunked LPs, PV-only sites in closed form.
    sites = [
        site(
            [PV_W, PV_W, 0],
            LOAD_W,
            kwp=5.0,
            feed_in_cap_w=CAP_W,
            site_id=f"s{i}",
            pv_curtailable=i % 2 == 0,
            battery=battery(soc_now=0.5) if i < 4 else None,
        )
        for i in range(8)
    ]
    pr = problem(sites, schedule=[20000.0, np.nan, np.nan])
    fa = fleet_arrays(pr)
    p = plan_hierarchical(pr, clusters=4)
    assert p.path == "optimal"
    fixed = ~fa.pv_curtailable
    assert p.pv_w[fixed] == pytest.approx(fa.pv_max_w[fixed], abs=1e-6)
    with_battery = fixed & fa.has_battery
    assert np.all(-p.grid_w[with_battery, :2] <= PLANNED_CAP_W + 1e-3)
    assert violations(fa, setpoints_of(p, fa)) == []


def test_split_back_targets_never_ask_fixed_pv_to_export_less_than_it_must() -> None:
    # A target below PV − load − charge ceiling is out of reach where PV runs in full.
    fixed = site([PV_W], LOAD_W, kwp=5.0, pv_curtailable=False, battery=battery(power_w=1000.0), site_id="fixed")
    free = site([PV_W], LOAD_W, kwp=5.0, battery=battery(power_w=1000.0), site_id="free")
    lo, hi = net_export_range_w(fleet_arrays(problem([fixed, free])))
    assert lo[:, 0] == pytest.approx([PV_W - LOAD_W - 1000.0, -(LOAD_W + 1000.0)])
    assert hi[:, 0] == pytest.approx([PV_W - LOAD_W + 1000.0] * 2)
