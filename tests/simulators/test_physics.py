"""Pure physics: batteries, the meter identity, counters, seeded weather, register images, fleetgen."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from sparcs.config.schema import SimulationConfig, validate_config
from sparcs.simulators.clock import SimClock
from sparcs.simulators.fleet import FleetHost
from sparcs.simulators.fleetgen import fleet_of_devices, synthetic_fleet
from sparcs.simulators.physics import BatteryCell, battery_step, site_signals
from sparcs.simulators.registers import build_image, decode, encode
from sparcs.simulators.site import SiteSim
from sparcs.simulators.weather import clearness, load_factor
from tests.simulators.conftest import SUMMER_NOON_S, site

CELL = BatteryCell(capacity_wh=10_000.0, eta_charge=0.9, eta_discharge=0.8, soc_min=0.1, soc_max=0.9)


def test_charging_stores_power_times_eta_charge():
    power, soc = battery_step(CELL, 0.5, -1000.0, 3600.0)
    assert power == -1000.0
    assert soc == pytest.approx(0.5 + 900.0 / 10_000.0)


def test_discharging_draws_power_over_eta_discharge():
    power, soc = battery_step(CELL, 0.5, 1000.0, 3600.0)
    assert power == 1000.0
    assert soc == pytest.approx(0.5 - 1250.0 / 10_000.0)


def test_soc_stops_exactly_at_its_bounds_and_power_is_reduced():
    power, soc = battery_step(CELL, 0.89, -5000.0, 3600.0)
    assert soc == pytest.approx(0.9)
    assert power == pytest.approx(-100.0 / 0.9)
    power, soc = battery_step(CELL, 0.1, 2000.0, 60.0)
    assert (power, soc) == (0.0, 0.1)


def one_site_config(**kw) -> dict:
    return validate_config({"simulation": {"seed": 11}, "sites": [site("s", 33000, **kw)]}).sites[0]


def test_a_day_keeps_the_meter_identity_soc_bounds_and_rising_counters():
    cfg = one_site_config(kwp=9.0, cap=None)
    s = SiteSim.create(cfg, SimulationConfig(seed=11), SUMMER_NOON_S - 43_200, set())
    bat = s.batteries[0]
    last = (s.pv[0].energy_wh, bat.charged_wh, bat.discharged_wh, s.import_wh, s.export_wh)
    assert all(v > 0 for v in last)  # counters start non-zero
    socs = []
    for k in range(1, 24 * 12 + 1):
        s.advance(SUMMER_NOON_S - 43_200 + k * 300)
        t = s.truth()
        assert t["grid_w"] == pytest.approx(t["load_w"] - t["pv_w"] - t["battery_w"], abs=1e-9)
        now = (s.pv[0].energy_wh, bat.charged_wh, bat.discharged_wh, s.import_wh, s.export_wh)
        assert all(b >= a for a, b in zip(last, now, strict=True))
        last = now
        socs.append(bat.soc)
    assert min(socs) >= bat.cell.soc_min - 1e-12 and max(socs) <= bat.cell.soc_max + 1e-12
    assert max(socs) - min(socs) > 0.2  # the battery actually cycled in self-consumption


def test_weather_and_load_are_pure_functions_of_seed_site_and_time():
    t = SUMMER_NOON_S + np.arange(0, 86_400, 97.0)
    a = clearness(1, "x", t, 0.5)
    assert np.array_equal(a, clearness(1, "x", t, 0.5))
    assert np.array_equal(a[5:6], clearness(1, "x", t[5], 0.5))
    assert not np.array_equal(a, clearness(2, "x", t, 0.5))
    assert not np.array_equal(a, clearness(1, "y", t, 0.5))
    assert a.min() >= 0.25 and a.max() <= 1.0
    assert np.all(clearness(1, "x", t, 0.0) == 1.0)
    assert np.all(clearness(1, "x", t, 1.0) == pytest.approx(0.25))
    noise = load_factor(1, "x", SUMMER_NOON_S + np.arange(0, 30 * 86_400, 60.0), 0.1)
    assert noise.mean() == pytest.approx(1.0, abs=0.02)
    assert noise.std() == pytest.approx(0.1, abs=0.03)


def test_step_size_does_not_change_the_day():
    cfg = one_site_config()
    sim = SimulationConfig(seed=11)
    coarse = SiteSim.create(cfg, sim, SUMMER_NOON_S, set())
    fine = SiteSim.create(cfg, sim, SUMMER_NOON_S, set())
    coarse.advance(SUMMER_NOON_S + 3600)
    for k in range(1, 3600 // 7 + 2):
        fine.advance(min(SUMMER_NOON_S + k * 7, SUMMER_NOON_S + 3600))
    assert coarse.truth()["load_w"] == fine.truth()["load_w"]
    assert coarse.pv[0].available_w == fine.pv[0].available_w
    assert coarse.batteries[0].soc == pytest.approx(fine.batteries[0].soc, abs=0.01)
    signals = site_signals(cfg, sim)
    assert signals.pv_potential_w(SUMMER_NOON_S + 3600)[0] == pytest.approx(coarse.pv[0].available_w)
    assert signals.load_w(SUMMER_NOON_S + 3600)[0] == pytest.approx(coarse.load_w)


def test_one_seed_reproduces_a_run_exactly():
    data = synthetic_fleet(3, seed=4, port_start=34000)

    def run() -> list[dict]:
        host = FleetHost(validate_config(data), clock=SimClock(SUMMER_NOON_S, stepped=True))
        host.clock.step(5400)
        host.advance()
        return [host.truth(d) for d in host.devices]

    assert run() == run()


@pytest.mark.parametrize(
    ("typ", "size", "value"),
    [("int16", 1, -1234), ("uint16", 1, 65534), ("acc32", 2, 123456789), ("int32", 2, -5), ("uint32", 2, 7),
     ("acc64", 4, 2**40 + 3), ("float32", 2, 12.5), ("string", 4, "SPARCS"), ("sunssf", 1, -2)],
)  # fmt: skip
def test_point_encoding_round_trips(typ, size, value):
    assert decode(typ, encode(typ, size, value)) == value
    assert decode(typ, encode(typ, size, None)) is None


def test_image_starts_with_suns_and_ends_with_the_end_model():
    image = build_image([1, 103], base=50000, common_len=65)
    assert image.registers[:2] == [0x5375, 0x6E53]
    assert image.registers[2:4] == [1, 65]
    assert image.registers[-2:] == [0xFFFF, 0]
    assert image.model_addresses == {1: 50002, 103: 50002 + 2 + 65}
    assert image.point(103, "W").address == 50002 + 67 + 14


def test_synthetic_fleet_is_a_valid_config_with_gateways_and_unique_ports():
    data = synthetic_fleet(40, seed=9, port_start=40000, gateway_every=4)
    cfg = validate_config(data)
    devices = [d for s in cfg.sites for d in s.devices]
    assert len(cfg.sites) == 40 and len(devices) >= 80
    assert any(d.unit > 1 for d in devices)
    assert any(s.battery is not None for s in cfg.sites) and any(s.battery is None for s in cfg.sites)
    caps = {s.grid.feed_in_cap_pct for s in cfg.sites}
    assert caps == {60, 70, None}


@pytest.mark.parametrize("n", [1, 2, 100, 257])
def test_fleet_of_devices_has_exactly_n_devices(n):
    cfg = validate_config(fleet_of_devices(n, seed=3, port_start=40000, gateway_every=5))
    assert sum(len(s.devices) for s in cfg.sites) == n


def test_clock_runs_free_accelerated_or_stepped():
    wall = [100.0]
    free = SimClock(SUMMER_NOON_S, speed=60.0, wall=lambda: wall[0])
    wall[0] += 2.0
    assert free.now() == SUMMER_NOON_S + 120.0
    with pytest.raises(RuntimeError):
        free.step(1.0)
    stepped = SimClock(SUMMER_NOON_S, stepped=True, wall=lambda: wall[0])
    wall[0] += 50.0
    assert stepped.now() == SUMMER_NOON_S
    stepped.step(30.5)
    assert stepped.now() == SUMMER_NOON_S + 30.5


def test_measured_clearness_from_csv_replaces_the_seeded_weather(tmp_path):
    csv = tmp_path / "clearness.csv"
    csv.write_text("timestamp,clearness\n2026-06-21T00:00:00+00:00,0.5\n2026-06-22T00:00:00+00:00,0.5\n")
    cfg = one_site_config()
    clear = site_signals(cfg, SimulationConfig(seed=11, weather={"cloudiness": 0.0}))
    measured = site_signals(cfg, SimulationConfig(seed=11, weather={"irradiance_csv": csv}))
    t = SUMMER_NOON_S + np.arange(0, 3600, 300.0)
    assert measured.pv_potential_w(t) == pytest.approx(0.5 * clear.pv_potential_w(t))


def test_a_clearness_csv_is_served_at_its_own_times(tmp_path):
    noon = dt.datetime.fromtimestamp(SUMMER_NOON_S, dt.UTC)
    csv = tmp_path / "clearness.csv"
    csv.write_text(f"timestamp,clearness\n{noon.isoformat()},0.2\n{(noon + dt.timedelta(hours=1)).isoformat()},0.8\n")
    cfg = one_site_config()
    clear = site_signals(cfg, SimulationConfig(seed=11, weather={"cloudiness": 0.0}))
    measured = site_signals(cfg, SimulationConfig(seed=11, weather={"irradiance_csv": csv}))
    t = SUMMER_NOON_S + np.array([0.0, 1800.0, 3600.0])
    assert measured.pv_potential_w(t) == pytest.approx([0.2, 0.5, 0.8] * clear.pv_potential_w(t))


def test_a_recorded_day_replaces_the_seeded_weather_and_load(tmp_path):
    noon = dt.datetime.fromtimestamp(SUMMER_NOON_S, dt.UTC)
    cfg = one_site_config()
    rows = [f"{(noon + dt.timedelta(minutes=m)).isoformat()},{0.1 + m / 100},{300 + 10 * m}" for m in range(61)]
    (tmp_path / f"{cfg.id}.csv").write_text("timestamp,clearness,load_w\n" + "\n".join(rows) + "\n")
    clear = site_signals(cfg, SimulationConfig(seed=11, weather={"cloudiness": 0.0}))
    recorded = site_signals(cfg, SimulationConfig(seed=11, recorded_dir=tmp_path))
    t = SUMMER_NOON_S + 60.0 * np.array([0, 30, 60])
    assert recorded.pv_potential_w(t) == pytest.approx(np.array([0.1, 0.4, 0.7]) * clear.pv_potential_w(t))
    assert recorded.load_w(t) == pytest.approx([300.0, 600.0, 900.0])


def test_without_a_command_the_battery_covers_surplus_and_load():
    cfg = one_site_config(kwp=5.0, cap=None)
    s = SiteSim.create(cfg, SimulationConfig(seed=11, weather={"cloudiness": 0.0}), SUMMER_NOON_S, set())
    s.advance(SUMMER_NOON_S + 600)
    noon = s.truth()
    assert noon["pv_w"] > noon["load_w"] + 1000.0  # a sunny noon: surplus
    assert noon["battery_w"] == pytest.approx(noon["load_w"] - noon["pv_w"])  # charges exactly the surplus
    assert noon["grid_w"] == pytest.approx(0.0, abs=1e-6)
    s.advance(SUMMER_NOON_S + 12 * 3600)  # 22:00 local: no sun, the battery covers the load
    night = s.truth()
    assert night["pv_w"] == 0.0
    assert night["battery_w"] == pytest.approx(night["load_w"])
    assert night["grid_w"] == pytest.approx(0.0, abs=1e-6)
