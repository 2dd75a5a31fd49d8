"""Scenario files: the shipped ones load, mistakes are named by field, the scenario reaches the fleet config."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sparcs.config.schema import CONFIG_DIR, validate_config
from sparcs.twin.run import TwinError, check_strategies, parse_day, prepare
from sparcs.twin.scenario import Scenario, ScenarioError, apply_scenario, cadence, load_scenario, pick_share
from tests.controller.conftest import DEMO as DEMO_DATA
from tests.controller.conftest import small_fleet_data

SCENARIOS = sorted((CONFIG_DIR / "scenarios").glob("*.yaml"))


def write(tmp_path: Path, data: dict, name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data), encoding="utf-8")
    return p


def test_the_four_required_scenarios_ship_and_load():
    assert len(SCENARIOS) >= 4
    loaded = {p.stem: load_scenario(p) for p in SCENARIOS}
    june = loaded["june-sunny-negative-prices"]
    assert june.date.month == 6 and june.prices_csv is not None and june.prices_csv.exists()
    assert loaded["winter-cloudy"].weather.clearness_csv.exists()
    k2 = loaded["k2-stage-export-schedule"]
    assert [a.stage.stage for a in k2.actions if a.stage] == ["K2"]
    assert any(a.schedule_csv for a in k2.actions)
    assert loaded["devices-fail-at-noon"].faults[0].share == pytest.approx(0.1)


def test_june_prices_go_negative_at_midday():
    import csv
    import datetime as dt

    with open(CONFIG_DIR / "scenarios" / "prices_2026-06-21.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    negative = [dt.datetime.fromisoformat(r["timestamp"]).hour for r in rows if float(r["eur_per_mwh"]) < 0]
    assert negative and min(negative) >= 10 and max(negative) <= 16
    assert len(rows) == 96


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"date": "2026-06-21", "faults": [{"at": "2026-06-21T12:00:00", "share": 0.1}]}, "faults[0].at"),
        ({"date": "2026-06-21", "wether": {}}, "wether"),
        ({"date": "2026-06-21", "faults": [{"at": "2026-06-21T12:00:00+02:00"}]}, "faults[0]"),
        ({"date": "2026-06-21", "faults": [{"at": "2026-06-22T12:00:00+02:00", "share": 0.1}]}, "faults[0].at"),
        ({"date": "2026-06-21", "actions": [{"at": "2026-06-21T12:00:00+02:00"}]}, "actions[0]"),
        ({"date": "2026-06-21", "prices_csv": "missing.csv"}, "prices_csv"),
        ({"date": "2026-06-21", "weather": {"cloudiness": 0.2, "clearness_csv": "x.csv"}}, "weather"),
    ],
)
def test_mistakes_name_their_field(tmp_path, data, field):
    with pytest.raises(ScenarioError) as err:
        load_scenario(write(tmp_path, data))
    assert any(line.startswith(field) for line in err.value.errors), err.value.errors


def test_csv_without_offsets_is_rejected(tmp_path):
    (tmp_path / "p.csv").write_text("timestamp,eur_per_mwh\n2026-06-21T00:00:00,50\n")
    with pytest.raises(ScenarioError) as err:
        load_scenario(write(tmp_path, {"date": "2026-06-21", "prices_csv": "p.csv"}))
    assert "needs a UTC offset" in err.value.errors[0]


def test_scenario_changes_weather_prices_and_faults():
    cfg = validate_config(small_fleet_data(4))
    scenario = load_scenario(CONFIG_DIR / "scenarios" / "devices-fail-at-noon.yaml")
    applied = apply_scenario(cfg, scenario)
    assert applied.simulation.weather.cloudiness == pytest.approx(0.2)
    assert applied.market.prices_csv == scenario.prices_csv
    faulty = [f for f in applied.simulation.faults if f.mode == "offline"]
    assert len(faulty) == 1  # 10 % of 12 devices, rounded, at least one
    assert faulty[0].start == scenario.faults[0].at
    assert cfg.simulation.faults == []  # the fleet file's config is not changed


def test_share_picks_the_same_devices_every_time():
    ids = [f"d{i}" for i in range(149)]
    first = pick_share(ids, 0.1, 42)
    assert len(first) == 15 and first == pick_share(ids, 0.1, 42)
    assert first != pick_share(ids, 0.1, 43)


def test_unknown_fault_device_is_named():
    cfg = validate_config(small_fleet_data(2))
    data = {"date": "2026-06-21", "faults": [{"at": "2026-06-21T12:00:00+02:00", "devices": ["nope"]}]}
    with pytest.raises(ScenarioError) as err:
        apply_scenario(cfg, Scenario.model_validate(data))
    assert err.value.errors == ["faults[0].devices[0]: unknown device 'nope' in this fleet"]


def test_date_must_match_and_options_are_checked():
    cfg = validate_config(small_fleet_data(2))
    path = CONFIG_DIR / "scenarios" / "june-sunny-negative-prices.yaml"
    with pytest.raises(TwinError) as err:
        prepare(cfg, parse_day("2026-06-22"), path)
    applied, scenario, notes = prepare(validate_config(DEMO_DATA), parse_day("2026-06-21"), path)
    assert scenario is not None and applied.simulation.weather.cloudiness == pytest.approx(0.05)
    assert not [f for f in applied.simulation.faults if f.mode == "slow"]  # 0.4 s < 1 s timeout: not replayed
    assert len(notes) == 1 and "lej-017-pv" in notes[0]
    assert "date: the scenario describes 2026-06-21, but --date is 2026-06-22" in err.value.lines[0]
    with pytest.raises(TwinError, match="--date"):
        parse_day("21.06.2026")
    with pytest.raises(TwinError, match="--strategy: unknown 'greedy'"):
        check_strategies(["optimizer", "greedy"])
    assert check_strategies([]) == ["optimizer", "self-consumption", "none"]


def test_slow_replies_keep_their_production_meaning_on_the_stepped_clock():
    from sparcs.twin.scenario import drop_invisible_delays

    data = small_fleet_data(2)
    data["simulation"]["faults"] = [
        {"device": "lej-001-pv", "mode": "slow", "delay_s": 0.4},
        {"device": "lej-002-pv", "mode": "slow", "delay_s": 3.0},
        {"device": "lej-002-bat", "mode": "offline"},
    ]
    cfg = validate_config(data)  # Modbus timeout 1 s
    out, notes = drop_invisible_delays(cfg)
    kept = [(f.device, f.mode) for f in out.simulation.faults]
    assert kept == [("lej-002-pv", "no_reply"), ("lej-002-bat", "offline")]
    assert len(notes) == 2 and "lej-001-pv" in notes[0] and "no_reply" in notes[1]


def test_the_shipped_scenarios_follow_the_fleet_files_cadence():
    cfg = validate_config(DEMO_DATA)
    for path in SCENARIOS:
        s = load_scenario(path)
        assert s.poll_interval_s is None and s.dispatch_interval_s is None, path
        c = cadence(cfg, s)
        assert (c.poll_interval_s, c.dispatch_interval_s) == (10.0, 300.0)  # demo.yaml's dispatch section
        assert (c.poll_source, c.dispatch_source) == ("config", "config")


def test_a_scenario_cadence_replaces_the_config_interval_by_interval():
    cfg = validate_config(small_fleet_data(2))
    only_poll = Scenario.model_validate({"date": "2026-06-21", "poll_interval_s": 60})
    c = cadence(cfg, only_poll)
    assert (c.poll_interval_s, c.poll_source, c.dispatch_interval_s, c.dispatch_source) == (
        60.0,
        "scenario",
        300.0,
        "config",
    )
    applied = apply_scenario(cfg, only_poll)
    assert (applied.dispatch.poll_interval_s, applied.dispatch.dispatch_interval_s) == (60.0, 300.0)
    assert cfg.dispatch.poll_interval_s == 10.0  # the fleet file's config is not changed
    both = Scenario.model_validate({"date": "2026-06-21", "poll_interval_s": 30, "dispatch_interval_s": 3600})
    assert cadence(cfg, both).as_report() == {
        "poll_interval_s": 30.0,
        "dispatch_interval_s": 3600.0,  # need not divide 900 s: an hourly dispatch fires on the hour
        "poll_interval_source": "scenario",
        "dispatch_interval_source": "scenario",
    }


@pytest.mark.parametrize(
    ("data", "line"),
    [
        ({"poll_interval_s": 7}, "poll_interval_s: 7 s does not divide the quarter-hour"),
        ({"poll_interval_s": 0}, "poll_interval_s: "),
        ({"dispatch_interval_s": 90000}, "dispatch_interval_s: "),
    ],
)
def test_a_scenario_cadence_that_does_not_fit_is_named(tmp_path, data, line):
    with pytest.raises(ScenarioError) as err:
        load_scenario(write(tmp_path, {"date": "2026-06-21", **data}))
    assert any(line in e for e in err.value.errors), err.value.errors


@pytest.mark.parametrize(
    ("dispatch", "scenario", "line"),
    [
        ({"poll_interval_s": 7}, {}, "dispatch.poll_interval_s (config): 7 s does not divide the quarter-hour"),
        ({}, {"poll_interval_s": 180}, "dispatch.dispatch_interval_s (config): 300 s is not a whole multiple"),
        ({}, {"dispatch_interval_s": 95}, "dispatch_interval_s (scenario): 95 s is not a whole multiple of the poll"),
    ],
)
def test_a_cadence_that_does_not_fit_names_its_field_and_source(dispatch, scenario, line):
    data = small_fleet_data(2)
    data["dispatch"].update(dispatch)
    s = Scenario.model_validate({"date": "2026-06-21", **scenario})
    with pytest.raises(ScenarioError) as err:
        apply_scenario(validate_config(data), s)
    assert err.value.errors[0].startswith(line), err.value.errors


def test_the_dynamic_tariff_scenario_puts_every_site_on_it_and_names_an_unknown_tariff(tmp_path):
    from sparcs.config.tariffs import site_tariff

    scenario = load_scenario(CONFIG_DIR / "scenarios" / "march-dynamic-tariff.yaml")
    cfg = apply_scenario(validate_config(small_fleet_data(3)), scenario)
    for site in cfg.sites:
        t = site_tariff(cfg, site)
        assert t.dynamic and t.grid_fees is not None and t.grid_fees.windows
    assert cfg.simulation is not None and cfg.simulation.weather.cloudiness == scenario.weather.cloudiness
    bad = scenario.model_copy(update={"site_tariffs": {"lej-001": "nope", "no-such-site": "dynamic-14a"}})
    with pytest.raises(ScenarioError) as exc:
        apply_scenario(validate_config(small_fleet_data(3)), bad)
    assert "site_tariffs.no-such-site: unknown site in this fleet" in exc.value.errors
