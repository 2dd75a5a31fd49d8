"""Property tests: for random sites, prices, schedules, stages and §14a, every plan respects every bound and cap."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparcs.config.grid_rules import STAGE_OUTPUT
from sparcs.optimizer.baselines import self_consumption_plan
from sparcs.optimizer.caps import apply_caps, violations
from sparcs.optimizer.dispatch import plan_hierarchical, plan_monolithic
from sparcs.optimizer.fleet_arrays import fleet_arrays
from sparcs.optimizer.problem import (
    BatteryProblem,
    DispatchPlan,
    DispatchProblem,
    SiteProblem,
)
from sparcs.optimizer.solver import fallback_plan
from tests.optimizer.small import problem, setpoints_of

PROPERTY_SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


@st.composite
def site_problems(draw: st.DrawFn, periods: int, index: int) -> SiteProblem:
    def series(lo: float, hi: float) -> np.ndarray:
        return np.array(draw(st.lists(st.floats(lo, hi), min_size=periods, max_size=periods)))

    kwp = draw(st.floats(1.0, 15.0))
    connection = draw(st.floats(6000.0, 30_000.0))
    battery = None
    if draw(st.booleans()):
        soc_min = draw(st.floats(0.0, 0.4))
        soc_max = draw(st.floats(0.6, 1.0))
        battery = BatteryProblem(
            capacity_wh=draw(st.floats(1000.0, 20_000.0)),
            max_charge_w=draw(st.floats(500.0, 10_000.0)),
            max_discharge_w=draw(st.floats(500.0, 10_000.0)),
            eta_charge=draw(st.floats(0.8, 1.0)),
            eta_discharge=draw(st.floats(0.8, 1.0)),
            soc_min=soc_min,
            soc_max=soc_max,
            soc_now=draw(st.floats(0.0, 1.0)),  # measured: may lie outside soc_min..soc_max
        )
    stages = draw(st.lists(st.sampled_from([None, *STAGE_OUTPUT]), min_size=periods, max_size=periods))
    cap_pct = draw(st.sampled_from([None, 60, 70]))
    return SiteProblem(
        site_id=f"p{index}",
        pv_available_w=series(0.0, 1.1 * kwp * 1000.0),
        load_w=series(0.0, 6000.0),
        pv_rating_w=kwp * 1000.0,
        pv_ceiling_w=kwp * 1000.0 * draw(st.sampled_from([0.7, 1.0])),
        kwp=kwp,
        battery=battery,
        import_eur_per_kwh=draw(st.floats(0.1, 0.5)),
        export_eur_per_kwh=draw(st.floats(-0.05, 0.2)),
        direct_marketing=draw(st.booleans()),
        feed_in_cap_w=None if cap_pct is None else cap_pct / 100.0 * kwp * 1000.0,
        connection_limit_w=connection,
        negative_price_rule=draw(st.booleans()),
        stage_ceiling_w=np.array([np.nan if s is None else STAGE_OUTPUT[s] * kwp * 1000.0 for s in stages]),
        para14a=np.array(draw(st.lists(st.booleans(), min_size=periods, max_size=periods))),
    )


@st.composite
def dispatch_problems(draw: st.DrawFn) -> DispatchProblem:
    periods = draw(st.integers(2, 6))
    n = draw(st.integers(1, 4))
    sites = [draw(site_problems(periods, i)) for i in range(n)]
    price = draw(st.lists(st.floats(-200.0, 400.0), min_size=periods, max_size=periods))
    schedule = None
    if draw(st.booleans()):
        values = draw(
            st.lists(st.one_of(st.just(np.nan), st.floats(-20_000.0, 30_000.0)), min_size=periods, max_size=periods)
        )
        schedule = np.array(values, dtype=float)
    return problem(sites, price=price, schedule=schedule)


def assert_plan_respects_caps(p: DispatchProblem, plan: DispatchPlan) -> None:
    fa = fleet_arrays(p)
    assert violations(fa, setpoints_of(plan, fa)) == []
    negative = p.price_eur_per_mwh < 0
    for i, s in enumerate(p.sites):
        if s.negative_price_rule:
            assert np.all(plan.grid_w[i, negative] >= -1e-6), "export in a negative-price quarter-hour"
        if s.feed_in_cap_w is not None:
            assert np.all(-plan.grid_w[i] <= s.feed_in_cap_w + 1e-6), "feed-in cap broken at the meter"
    assert np.allclose(plan.export_w, -plan.grid_w.sum(0))


@PROPERTY_SETTINGS
@given(dispatch_problems())
def test_monolithic_plans_respect_every_bound_and_cap(p: DispatchProblem) -> None:
    assert_plan_respects_caps(p, plan_monolithic(p))


@PROPERTY_SETTINGS
@given(dispatch_problems())
def test_hierarchical_plans_respect_every_bound_and_cap(p: DispatchProblem) -> None:
    assert_plan_respects_caps(p, plan_hierarchical(p, clusters=2))


@PROPERTY_SETTINGS
@given(dispatch_problems(), st.integers(0, 3))
def test_fallback_plans_respect_every_bound_and_cap(p: DispatchProblem, shift_periods: int) -> None:
    rules = self_consumption_plan(p)
    assert_plan_respects_caps(p, rules)
    later = problem(p.sites, price=p.price_eur_per_mwh[::-1], schedule=p.export_schedule_w)
    later.start_s += 900.0 * shift_periods
    assert_plan_respects_caps(later, fallback_plan(later, "drill", rules))


@PROPERTY_SETTINGS
@given(dispatch_problems(), st.data())
def test_caps_turn_any_setpoints_into_legal_ones(p: DispatchProblem, data: st.DataObject) -> None:
    fa = fleet_arrays(p)
    n, t = fa.shape
    cells = st.lists(st.floats(-20_000.0, 20_000.0), min_size=n * t, max_size=n * t)
    pv = np.array(data.draw(cells)).reshape(n, t)
    battery_w = np.array(data.draw(cells)).reshape(n, t)
    sp = apply_caps(fa, pv, battery_w)
    assert violations(fa, sp) == []
    assert np.all(sp.pv_w <= np.maximum(pv, 0.0) + 1e-9)  # clamps only ever reduce
    assert np.all(np.abs(sp.battery_w) <= np.abs(battery_w) + 1e-9)
