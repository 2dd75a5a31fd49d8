"""Every shipped vendor profile over Modbus TCP: the simulators serve it (their own encoding), the
drivers read it against the simulators' ground truth, and every control it maps is written and
takes effect at the simulator (then released). One site per profile.
"""

from __future__ import annotations

import datetime as dt

import pytest

from sparcs.config.schema import DispatchConfig
from sparcs.drivers.profiles import PROFILE_DIR, load_profile_file
from sparcs.drivers.writer import Setpoint, SetpointWriter
from tests.drivers.conftest import good, step_and_poll

pytestmark = pytest.mark.asyncio(loop_scope="module")

START = dt.datetime(2026, 6, 21, 10, 0, tzinfo=dt.UTC).timestamp()
SETTINGS = DispatchConfig(modbus_timeout_s=0.5, stale_after_polls=2, revert_timeout_s=120, poll_interval_s=10)
PROFILES = {p.stem: load_profile_file(p) for p in sorted(PROFILE_DIR.glob("*.yaml"))}
UNITS = {"sma_sunny_boy": 3, "sma_sunny_boy_storage": 3, "kostal_plenticore_battery": 71, "goodwe_et": 247}


def _site(i: int, name: str) -> dict:
    kind = PROFILES[name].kind
    dev = {
        "id": name,
        "kind": kind,
        "port": 10 * i + 1,
        "unit": UNITS.get(name, 1),
        "protocol": "profile",
        "profile": name,
        # devices without a fail-safe are written here too (the fleet accepts the risk), but for
        # the one that maps no control at all
        "accept_no_fail_safe": name != "huawei_luna2000",
    }
    alone = kind in ("pv_inverter", "hybrid")  # a hybrid is the site's PV inverter too
    devices = [dev] if alone else [{"id": f"{name}-pv", "kind": "pv_inverter", "port": 10 * i + 2}, dev]
    site = {"id": f"s{i}", "location": {"lat": 51.34, "lon": 12.37}, "pv": {"kwp": 6.0}, "devices": devices}
    if kind in ("battery", "hybrid"):
        site["battery"] = {"capacity_kwh": 10, "max_charge_w": 4000, "max_discharge_w": 4000}
    return site


FLEET = {
    "sites": [_site(i, name) for i, name in enumerate(PROFILES)],
    "simulation": {"seed": 3, "weather": {"cloudiness": 0.0}},
}


@pytest.mark.parametrize("name", list(PROFILES))
async def test_each_profile_reads_its_truth_and_its_controls_take_effect(fleet, poller, name) -> None:
    host, clock = fleet
    p = PROFILES[name]
    t = (await step_and_poll(host, poller))[name]
    assert t.status == "online", t.error
    truth = host.truth(name)
    derived_pv = p.kind == "hybrid"  # mapped, or from the inverter's output or the strings
    for key in ("pv_w", "battery_w", "grid_w", "soc", "import_wh", "export_wh", "capacity_wh"):
        if key in p.registers or (key == "pv_w" and derived_pv):
            tolerance = 0.006 if key == "soc" else 60.0 if key.endswith("_wh") else 2.0  # whole % or kWh × 0.01
            assert good(t, key) == pytest.approx(truth[key], abs=tolerance), key
    writer = SetpointWriter(poller, SETTINGS, clock.now)
    if p.kind == "pv_inverter":
        r = (await writer.apply({name: Setpoint(pv_limit_w=2400.0)}))[name]
        assert r.ok and r.action == "limit", r
        await host.step(60)  # ramped down at the inverter's gradient
        assert host.truth(name)["limit_w"] == pytest.approx(2400.0, abs=10)
        assert (await writer.apply({name: Setpoint(pv_limit_w=None)}))[name].ok
    elif "battery_setpoint_w" in p.registers or "battery_command" in p.registers:
        r = (await writer.apply({name: Setpoint(battery_w=-1000.0)}))[name]
        assert r.ok and r.action == "battery", r
        await host.step(5)
        assert host.truth(name)["commanded_w"] == pytest.approx(-1000.0, abs=1)
        charging = (await step_and_poll(host, poller, 5.0))[name]  # read back with the vendor's sign
        assert good(charging, "battery_w") == pytest.approx(host.truth(name)["battery_w"], abs=2.0)
        assert host.truth(name)["battery_w"] < -500.0
        r = (await writer.apply({name: Setpoint(battery_w=None)}))[name]
        assert r.ok and r.action == "release", r
        if p.battery_release:  # released at once; without release steps the watchdog hands it back
            assert host.truth(name)["commanded_w"] is None
        else:
            assert p.fail_safe.kind == "watchdog" and p.fail_safe.interval_s is not None
            await host.step(p.fail_safe.interval_s * 1.5)
            assert host.truth(name)["commanded_w"] is None
    elif p.kind == "battery":
        r = (await writer.apply({name: Setpoint(battery_w=-1000.0)}))[name]
        assert r.action == "skipped" and "monitor only" in r.detail, r
    else:
        r = (await writer.apply({name: Setpoint(pv_limit_w=0.0)}))[name]
        assert r.action == "skipped" and "meters take no setpoints" in r.detail
