"""Fleet state from telemetry (signs, derived load, stale sites), flexibility, export guard, setpoints."""

from __future__ import annotations

import pytest

from sparcs.config.grid_rules import feed_in_cap_w
from sparcs.controller.plan import Plan, PlannedSetpoint
from sparcs.controller.setpoints import (
    ZERO_CAP_MARGIN,
    SiteCommand,
    SiteFacts,
    battery_may_fill,
    battery_within_net_load,
    export_guard,
    site_command,
    split_to_devices,
)
from sparcs.controller.state import build_state, site_flexibility
from sparcs.drivers.telemetry import Reading
from tests.controller.conftest import make_plan, site_telemetry, tel


def test_load_follows_the_meter_balance_and_totals_add_up(small_cfg):
    site = small_cfg.sites[0]
    state = build_state(small_cfg, site_telemetry(site), 100.0)
    s = state.sites[site.id]
    # grid = load − pv − battery  →  load = −1500 + 3000 − 1000
    assert s.load_w == pytest.approx(500.0) and s.export_w == pytest.approx(1500.0)
    assert s.controllable and s.devices_online == s.devices_total == len(site.devices)
    other = state.sites[small_cfg.sites[1].id]
    assert other.devices_online == 0 and not other.controllable and other.pv_w is None
    summary = state.summary()
    assert summary["pv_w"] == pytest.approx(3000.0) and summary["online"] == len(site.devices)


def test_a_value_of_bad_quality_is_unknown_not_reused(small_cfg):
    site = small_cfg.sites[0]
    t = site_telemetry(site)
    meter = next(d.id for d in site.devices if d.kind == "meter")
    t[meter] = tel(meter, site.id, "meter", grid_w=Reading(9e9, "bad"))
    s = build_state(small_cfg, t, 100.0).sites[site.id]
    assert s.grid_w is None and s.load_w is None and s.export_w is None


def test_a_stale_device_makes_its_site_uncontrollable_without_flexibility(small_cfg):
    site = small_cfg.sites[0]
    t = site_telemetry(site)
    pv = next(d.id for d in site.devices if d.kind == "pv_inverter")
    t[pv] = tel(pv, site.id, "pv_inverter", status="stale", pv_w=Reading(None, "missing"))
    s = build_state(small_cfg, t, 100.0).sites[site.id]
    assert not s.controllable and s.devices_stale == 1
    assert s.flex_up_w == 0.0 and s.flex_down_w == 0.0


def test_flexibility_respects_soc_power_and_the_meter_caps(small_cfg):
    site = small_cfg.sites[0]
    bat = site.battery
    kw = dict(pv_w=0.0, battery_w=0.0, grid_w=500.0, battery_controllable=True, pv_controllable=True)
    up, down = site_flexibility(site, soc=bat.soc_min, **kw)
    assert up == 0.0  # empty: nothing to discharge for an hour
    assert down == pytest.approx(bat.max_charge_w)
    up, down = site_flexibility(site, soc=bat.soc_max, **kw)
    assert down == 0.0
    cap = feed_in_cap_w(site)
    assert up == pytest.approx(min(bat.max_discharge_w, 500.0 + cap))
    # exporting at the cap already: no up-flexibility left
    up, _ = site_flexibility(site, soc=bat.soc_max, **{**kw, "grid_w": -cap})
    assert up == 0.0


@pytest.mark.parametrize(
    ("cap", "grid", "pv", "guard", "expected"),
    [
        (None, -9000, 9000, None, None),  # no cap: the guard never acts
        (3000, -2500, 4000, None, None),  # below the cap
        (3000, -3500, 4000, None, 4000 - (3500 - 0.98 * 3000)),  # above: tighten at once
        (3000, -2980, 4000, None, 4000 - (2980 - 0.98 * 3000)),  # within 1 % of the cap: tighten already
        (3000, -2960, 4000, None, None),  # between the target and 99 %: not yet
        (3000, -2000, 2000, 2000, 2000 + 0.98 * 3000 - 2000),  # acting: follow the meter (loosen)
        (3000, -1000, 1000, 3000, None),  # far below and not binding: let go
        (3000, None, 2000, 2500, 2500),  # meter unknown: keep the last limit
        # 0 W cap (negative price) while importing 600 W: loosen by the import, never hold PV where it is
        (0.0, 600, 310, 310, 910),
        (0.0, 600, 310, 2000, None),  # 0 W cap, importing, the limit does not bind: let go
    ],
)
def test_export_guard(cap, grid, pv, guard, expected):
    got = export_guard(cap_w=cap, grid_w=grid, pv_w=pv, guard_w=guard)
    assert got == (pytest.approx(expected) if expected is not None else None)


@pytest.mark.parametrize(
    ("grid", "pv", "guard", "expected"),
    [
        (-30, 3000, None, 3000 - 30 - 100),  # exporting a little: tighten to an import of the margin
        (40, 3000, None, 3000 + 40 - 100),  # importing less than half the margin: tighten already
        (60, 3000, None, None),  # importing more than half the margin: nothing to do
        (60, 3000, 3000, 3000 + 60 - 100),  # acting: follow the meter, holding the margin
        (300, 1000, 3000, None),  # the limit no longer binds: let go
    ],
)
def test_export_guard_keeps_an_import_margin_at_a_zero_cap(grid, pv, guard, expected):
    got = export_guard(cap_w=0.0, grid_w=grid, pv_w=pv, guard_w=guard, zero_cap_margin_w=100.0)
    assert got == (pytest.approx(expected) if expected is not None else None)


def facts(
    planned=None,
    *,
    controllable=True,
    paused=False,
    stage=None,
    guard=None,
    cap=6000.0,
    rating=5000.0,
    net_load=None,
    may_fill=False,
):
    return SiteFacts(planned, controllable, paused, stage, guard, cap, rating, net_load, may_fill)


@pytest.mark.parametrize(
    ("battery", "planned_grid", "net_load", "expected"),
    [
        (-3000.0, 0.0, -2000.0, -2000.0),  # charging from PV: at most the surplus now
        (-3000.0, -500.0, -5000.0, -3000.0),  # more surplus than planned: the plan's charge, the rest exported
        (-3000.0, 0.0, 400.0, 0.0),  # a cloud: no surplus, nothing bought for storage
        (-3000.0, 2500.0, 400.0, -3000.0),  # planned grid charging: as planned
        (2000.0, 0.0, 1500.0, 1500.0),  # covering the load: at most the deficit now
        (2000.0, 0.0, -300.0, 0.0),  # PV covers the load: nothing discharged for export
        (2000.0, -1800.0, 500.0, 2000.0),  # planned discharge for export: as planned
        (2000.0, None, 500.0, 2000.0),  # no planned grid (an edge's plan): as planned
        (-3000.0, 0.0, None, -3000.0),  # nothing measured: as planned
        (None, 0.0, 500.0, None),  # released stays released
    ],
)
def test_the_planned_battery_is_held_to_the_net_load_where_the_plan_meant_no_grid_flow(
    battery, planned_grid, net_load, expected
):
    assert battery_within_net_load(battery, planned_grid, net_load) == expected
    got = site_command(facts(PlannedSetpoint(None, battery, planned_grid), net_load=net_load))
    assert got == SiteCommand(None, expected)
    # under a PV limit the surplus is the limit's: the plan's power holds (a regression on the June day,
    # where clamping to it curtailed 32 kWh more at 12 sites and let rule sites export at 0 W caps)
    planned = PlannedSetpoint(None, battery, planned_grid)
    limited = site_command(facts(planned, guard=3000.0, net_load=net_load))
    assert limited == SiteCommand(3000.0, battery)


@pytest.mark.parametrize(
    ("available", "expected"),
    [
        (2800.0, 0.0),  # the plan's limit lies above the forecast PV: it holds back nothing, the rule applies
        (9000.0, -3000.0),  # the plan curtails (limit below the forecast PV): the surplus is the limit's
        (None, -3000.0),  # forecast unknown (an older central's plan): the limit may bind
    ],
)
def test_a_plan_limit_above_the_forecast_pv_does_not_stop_following_the_plan(available, expected):
    # The regression of the March dynamic-tariff day: every feed-in-capped site is planned with a limit
    # of export cap + load + charge (7,815 W at a 2.8 kW PV site), so the rule never applied and a
    # cloud turned the planned charge from PV into a charge bought at that quarter-hour's price.
    planned = PlannedSetpoint(7815.0, -3000.0, 0.0, available)
    got = site_command(facts(planned, cap=6000.0, rating=10_000.0, net_load=400.0))
    assert got == SiteCommand(7815.0, expected)
    # a stage ceiling, the guard or an uncontrolled cap always shapes the surplus
    assert site_command(facts(planned, stage=7000.0, net_load=400.0)).battery_w == -3000.0


@pytest.mark.parametrize(
    ("soc", "charge_w", "expected"),
    [
        (0.949, 757.0, True),  # 10 Wh of room, 14 Wh charged in 70 s: full before the next command
        (0.945, 757.0, False),  # 50 Wh of room
        (0.949, 0.0, False),  # not charging
        (0.949, -2000.0, False),  # discharging
        (None, 757.0, True),  # SoC unknown: it may
    ],
)
def test_a_battery_may_fill_within_the_age_of_its_reading(soc, charge_w, expected):
    got = battery_may_fill(
        soc=soc, soc_max=0.95, capacity_wh=10_000.0, charge_w=charge_w, eta_charge=0.95, within_s=70.0
    )
    assert got is expected


def test_a_plan_limit_stops_counting_on_a_charge_the_full_battery_will_not_take():
    # The regression of the K2 day: a capped site planned at export cap + load + charge (11.7 kW cap,
    # 757 W charge) exported 11.85 kW for one poll when its battery reached 95 % and stopped charging.
    planned = PlannedSetpoint(13_300.0, -757.0, -11_700.0, 14_000.0)
    full_soon = site_command(facts(planned, cap=11_700.0, rating=14_000.0, net_load=-12_000.0, may_fill=True))
    assert full_soon == SiteCommand(13_300.0 - 757.0, -757.0)  # the charge no longer counted, still planned
    assert site_command(facts(planned, cap=11_700.0, rating=14_000.0, net_load=-12_000.0)).pv_limit_w == 13_300.0
    # without a cap nothing goes over one; a discharge raises no limit
    assert site_command(facts(planned, cap=None, rating=14_000.0, may_fill=True)).pv_limit_w == 13_300.0
    discharging = PlannedSetpoint(9000.0, 500.0, 0.0, 9000.0)
    assert site_command(facts(discharging, cap=6000.0, may_fill=True)).pv_limit_w == 9000.0


def test_a_plan_answers_its_period_and_setpoint():
    plan = make_plan(0.0, [100.0, 900.0], {"a": ([5000, 2000], [1, 2])}, prices=[10.0, -5.0])
    assert plan.period_at(-1) is None and plan.period_at(50) == 0 and plan.period_at(150) == 1
    assert plan.period_at(100) == 1 and plan.period_at(1000) is None
    assert plan.setpoint("a", 150) == PlannedSetpoint(2000, 2, 0.0, 0.0) and plan.setpoint("b", 150) is None
    assert plan.price_at(150) == -5.0 and plan.price_at(1000) is None
    assert Plan.from_record(plan.to_record()).to_record() == plan.to_record()


def test_setpoints_take_the_lowest_limit(small_cfg):
    assert site_command(facts(PlannedSetpoint(2000, 2), stage=3000.0)) == SiteCommand(2000, 2)
    assert site_command(facts(PlannedSetpoint(5000, 1), stage=3000.0, guard=2500.0)) == SiteCommand(2500.0, 1)
    paused = site_command(facts(PlannedSetpoint(5000, 1), paused=True))
    assert paused == SiteCommand(None, None)  # released to the installer configuration
    outside = site_command(facts(PlannedSetpoint(5000, 1), controllable=False, guard=9000.0))
    assert outside == SiteCommand(6000.0, None)  # a site outside the plan: at most its cap, whatever the guard
    assert site_command(facts(None, controllable=False, cap=None)) == SiteCommand(None, None)
    margin = site_command(facts(PlannedSetpoint(2000, 2), cap=0.0))
    assert margin == SiteCommand(2000 - ZERO_CAP_MARGIN * 5000.0, 2)  # at a 0 W cap the plan keeps an import margin
    released = site_command(facts(PlannedSetpoint(None, 0), cap=0.0))
    assert released == SiteCommand(None, 0)  # where the plan does not curtail there is nothing to lower
    site = small_cfg.sites[0]
    per_dev = split_to_devices(site, SiteCommand(1200.0, -500.0))
    kinds = {d.id: d.kind for d in site.devices}
    assert all(kinds[d] != "meter" for d in per_dev)
    assert {v for d, v in per_dev.items() if kinds[d] == "pv_inverter"} == {(1200.0, None)}
    assert {v for d, v in per_dev.items() if kinds[d] == "battery"} == {(None, -500.0)}


def test_the_kept_export_ceiling_follows_every_change_of_cap_limit_and_pool_limit(small_cfg):
    """build_state keeps each export ceiling per value (controller/state.py): a reload that sets a site's
    feed-in cap or connection limit in place (controller/reload.py writes the model's fields directly),
    and a pool limit from a command, show at the next poll."""
    site = small_cfg.sites[0]
    bat = site.battery
    t = site_telemetry(site, bat=-1000.0, grid=-1000.0, soc=0.5)  # charging 1 kW, exporting 1 kW
    discharge = min(bat.max_discharge_w, (0.5 - bat.soc_min) * bat.capacity_kwh * 1000.0 * bat.eta_discharge) + 1000.0

    def up() -> float:
        return build_state(small_cfg, t, 100.0).sites[site.id].flex_up_w

    def up_pooled(limit_w: float) -> float:
        return build_state(small_cfg, t, 100.0, pool_limit_w={site.id: limit_w}).sites[site.id].flex_up_w

    site.grid.__dict__["feed_in_cap_pct"] = 100.0 * 3000.0 / (site.pv.kwp * 1000.0)  # a 3 kW cap
    assert up() == pytest.approx(min(discharge, 2000.0))
    site.grid.__dict__["feed_in_cap_pct"] = 100.0 * 1500.0 / (site.pv.kwp * 1000.0)  # reloaded: 1.5 kW
    assert up() == pytest.approx(min(discharge, 500.0))
    site.grid.__dict__["connection_limit_w"] = 1200.0  # reloaded: the connection is the lower bound
    assert up() == pytest.approx(min(discharge, 200.0))
    assert up_pooled(1100.0) == pytest.approx(min(discharge, 100.0))  # a pool limit in force
    assert up_pooled(1150.0) == pytest.approx(min(discharge, 150.0))  # another pool limit
    assert up() == pytest.approx(min(discharge, 200.0))  # the pool limit lapsed
