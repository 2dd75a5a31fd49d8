"""What-if overrides change the fleet the twin builds (or send commands), each named, errors naming their field."""

from __future__ import annotations

import pytest

from sparcs.config.schema import validate_config
from sparcs.controller.commands import PoolLimitRequest, StageRequest
from sparcs.twin.overrides import Override, apply_overrides
from sparcs.twin.scenario import Scenario, ScenarioError, apply_what_ifs, day_bounds
from tests.controller.conftest import small_fleet_data

DAY = day_bounds(Scenario(date="2026-05-12").date)


@pytest.fixture
def cfg():
    return validate_config(small_fleet_data(6))


def what_if(**kw) -> Override:
    return Override.model_validate({"name": "w", **kw})


def test_battery_pv_cap_tariff_and_offline_change_the_fleet(cfg):
    bare = next(s for s in cfg.sites if s.battery is None)
    with_bat = next(s for s in cfg.sites if s.battery is not None)
    overrides = [
        what_if(sites=[bare.id], battery={"capacity_kwh": 8, "max_charge_w": 4000, "max_discharge_w": 4000}),
        what_if(sites=[with_bat.id], battery="none"),
        what_if(sites=[bare.id], pv_scale=2),
        what_if(feed_in_cap_pct="none"),
        what_if(sites=[with_bat.id], offline=True),
    ]
    out, sends, report = apply_overrides(cfg, overrides, DAY)
    assert sends == []
    added = out.site(bare.id)
    assert added.battery is not None and added.battery.capacity_kwh == 8
    assert [d.kind for d in added.devices].count("battery") == 1
    new = next(d for d in added.devices if d.kind == "battery")
    assert [d.id for s in out.sites for d in s.devices if d.endpoint == new.endpoint] == [new.id]  # a port of its own
    assert added.pv.kwp == pytest.approx(2 * bare.pv.kwp)
    removed = out.site(with_bat.id)
    assert removed.battery is None and all(d.kind != "battery" for d in removed.devices)
    assert all(s.grid.feed_in_cap_pct is None for s in out.sites)
    assert {f.device for f in out.simulation.faults} == {d.id for d in removed.devices}
    assert [r["kind"] for r in report] == ["battery", "battery", "pv_scale", "feed_in_cap_pct", "offline"]
    assert cfg.site(bare.id).battery is None  # the fleet file itself is untouched


def test_stage_and_export_limit_are_commands_over_the_day(cfg):
    ids = [cfg.sites[0].id]
    scenario = Scenario.model_validate(
        {
            "date": "2026-05-12",
            "overrides": [
                {"name": "K2 all day", "stage": "K2"},
                {"name": "half", "sites": ids, "export_limit_pct": 50},
            ],
        }
    )
    out, applied, report = apply_what_ifs(cfg, scenario, DAY)
    assert [type(a.stage or a.pool_limit) for a in applied.actions] == [StageRequest, PoolLimitRequest]
    assert applied.actions[1].pool_limit.group in {g.id for g in out.groups}
    assert [r["name"] for r in report] == ["K2 all day", "half"]


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"name": "x", "sites": ["nowhere"], "pv_scale": 2}, "overrides[0].sites[0]"),
        ({"name": "x", "group": "nowhere", "stage": "K1"}, "overrides[0].group"),
        ({"name": "x", "offline": True, "devices": ["ghost"]}, "overrides[0].devices[0]"),
    ],
)
def test_an_override_that_does_not_fit_names_its_field(cfg, override, field):
    scenario = Scenario.model_validate({"date": "2026-05-12", "overrides": [override]})
    with pytest.raises(ScenarioError) as err:
        apply_what_ifs(cfg, scenario, DAY)
    assert err.value.errors[0].startswith(field)


def test_an_override_changes_exactly_one_thing():
    with pytest.raises(ValueError, match="exactly one"):
        what_if(stage="K1", pv_scale=2)
    with pytest.raises(ValueError, match="exactly one"):
        what_if()
