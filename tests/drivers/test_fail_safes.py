"""Fail-safes and K1 over Modbus TCP on the simulator's stepped clock (docs/devices.md "Fail-safes").

One fleet: a SunSpec PV inverter (123 revert timer and Conn stop) with a meter, a PV inverter of a
user's own profile with a heartbeat watchdog (60 s, from the fleet's ``profiles_dir``), a KOSTAL
battery whose setpoint is its own heartbeat, a Huawei inverter without any fail-safe (monitor-only),
and a DER (704) inverter that has no stop. Each fail-safe must release the limit at the simulator
(its ground truth), not just in the drivers' view.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from sparcs.config.schema import DispatchConfig, FaultSpec
from sparcs.drivers.sunspec_codec import encode_point, model_def
from sparcs.drivers.sunspec_device import SunSpecDevice
from sparcs.drivers.writer import Setpoint, SetpointWriter
from tests.drivers.conftest import good, step_and_poll

pytestmark = pytest.mark.asyncio(loop_scope="module")

START = dt.datetime(2026, 6, 21, 10, 0, tzinfo=dt.UTC).timestamp()  # noon in Leipzig
SETTINGS = DispatchConfig(modbus_timeout_s=0.5, stale_after_polls=2, revert_timeout_s=60, poll_interval_s=10)
PROFILES = Path(__file__).parent / "profiles"


def _site(sid: str, devices: list[dict], battery: bool = False) -> dict:
    site: dict = {"id": sid, "location": {"lat": 51.34, "lon": 12.37}, "pv": {"kwp": 6.0}, "devices": devices}
    if battery:
        site["battery"] = {"capacity_kwh": 10, "max_charge_w": 4000, "max_discharge_w": 4000}
    return site


def _dev(did: str, kind: str, port: int, profile: str | None = None, unit: int = 1) -> dict:
    out = {"id": did, "kind": kind, "port": port, "unit": unit}
    return out | ({"protocol": "profile", "profile": profile} if profile else {})


FLEET = {
    "profiles_dir": str(PROFILES),
    "sites": [
        _site("ss", [_dev("ss-pv", "pv_inverter", 1), _dev("ss-m", "meter", 2)]),
        _site("wd", [_dev("wd-pv", "pv_inverter", 3, "test_watchdog_pv")]),
        _site(
            "ko",
            [_dev("ko-pv", "pv_inverter", 4), _dev("ko-bat", "battery", 5, "kostal_plenticore_battery", 71)],
            battery=True,
        ),
        _site("hw", [_dev("hw-pv", "pv_inverter", 6, "huawei_sun2000")]),
        _site(  # the installer set this KOSTAL's fallback to 30 s, not the profile's 60 s
            "k30",
            [
                _dev("k30-pv", "pv_inverter", 8),
                _dev("k30-bat", "battery", 9, "kostal_plenticore_battery", 71) | {"watchdog_s": 30},
            ],
            battery=True,
        ),
        _site("der", [_dev("der-pv", "pv_inverter", 7)]),
    ],
    "simulation": {"seed": 5, "weather": {"cloudiness": 0.0}, "variants": {"der-pv": {"models": "der"}}},
}


async def test_revert_timer_expiry_releases_the_limit_at_the_simulator(fleet, poller) -> None:
    host, _clock = fleet
    writer = SetpointWriter(poller, SETTINGS, host.clock.now)
    await step_and_poll(host, poller)
    r = (await writer.apply({"ss-pv": Setpoint(pv_limit_w=1500.0)}))["ss-pv"]
    assert r.ok and r.action == "limit", r
    await host.step(50)
    assert host.truth("ss-pv")["limit_w"] == pytest.approx(1500.0, abs=10)  # the 60 s timer still runs
    await host.step(15)  # 65 s after the write, no refresh: the timer expired
    assert host.truth("ss-pv")["revert_s"] is None
    await host.step(10)  # the output ramps back at the inverter's gradient
    assert host.truth("ss-pv")["limit_w"] is None, host.truth("ss-pv")


async def test_missed_heartbeat_releases_the_limit_late_as_field_watchdogs_do(fleet, poller) -> None:
    host, clock = fleet
    writer = SetpointWriter(poller, SETTINGS, clock.now)
    await step_and_poll(host, poller)
    r = (await writer.apply({"wd-pv": Setpoint(pv_limit_w=2000.0)}))["wd-pv"]
    assert r.ok and r.action == "limit", r
    assert writer.active[("wd-pv", "pv")].revert_s == 60.0  # refreshed against the watchdog, not the revert timer
    await step_and_poll(host, poller, 30)
    beats = await writer.refresh_due()  # 30 s > 40 % of 60 s: the heartbeat is due
    assert beats["wd-pv"].ok, beats
    await host.step(55)  # 85 s after the first write, 55 s after the heartbeat: still limited
    assert host.truth("wd-pv")["limit_w"] == pytest.approx(2000.0, abs=10)
    await host.step(15)  # 70 s without a heartbeat: past the interval, but the watchdog fires late
    assert host.truth("wd-pv")["limit_w"] == pytest.approx(2000.0, abs=10)
    await host.step(15)  # 85 s without a heartbeat (a 60 s watchdog fires at 80 s)
    truth = host.truth("wd-pv")
    assert truth["revert_s"] is None and truth["limit_w"] > 2000.0 + 10, truth  # released, ramping back
    await host.step(10)
    assert host.truth("wd-pv")["limit_w"] is None, host.truth("wd-pv")


async def test_a_battery_whose_setpoint_is_its_heartbeat_falls_back_when_it_stops(fleet, poller) -> None:
    host, clock = fleet
    writer = SetpointWriter(poller, SETTINGS, clock.now)
    await step_and_poll(host, poller)
    r = (await writer.apply({"ko-bat": Setpoint(battery_w=-1500.0)}))["ko-bat"]
    assert r.ok and r.action == "battery", r
    await host.step(20)
    assert host.truth("ko-bat")["commanded_w"] == pytest.approx(-1500.0)
    await step_and_poll(host, poller, 10)
    await writer.refresh_due()  # 30 s: the setpoint is rewritten, which is the heartbeat
    await host.step(70)
    assert host.truth("ko-bat")["commanded_w"] == pytest.approx(-1500.0)  # 70 s after the last beat
    await host.step(15)
    assert host.truth("ko-bat")["commanded_w"] is None  # back to the battery's own management


async def test_a_device_without_fail_safe_is_monitor_only_unless_accepted(fleet, poller) -> None:
    host, clock = fleet
    writer = SetpointWriter(poller, SETTINGS, clock.now)
    await step_and_poll(host, poller)
    r = (await writer.apply({"hw-pv": Setpoint(pv_limit_w=1000.0)}))["hw-pv"]
    assert r.action == "skipped" and "hw-pv" in r.detail and "accept_no_fail_safe: true" in r.detail, r
    assert host.truth("hw-pv")["limit_w"] is None  # nothing was written
    poller.state("hw-pv").cfg.accept_no_fail_safe = True
    try:
        r = (await writer.apply({"hw-pv": Setpoint(pv_limit_w=1000.0)}))["hw-pv"]
        assert r.ok and r.action == "limit", r
        await host.step(10)  # ramped down at the inverter's gradient
        assert host.truth("hw-pv")["limit_w"] == pytest.approx(1000.0, abs=10)
        assert (await writer.apply({"hw-pv": Setpoint(pv_limit_w=None)}))["hw-pv"].ok
    finally:
        poller.state("hw-pv").cfg.accept_no_fail_safe = False


async def test_k1_stops_a_sunspec_inverter_at_0_w_at_the_meter(fleet, poller) -> None:
    host, clock = fleet
    writer = SetpointWriter(poller, SETTINGS, clock.now)
    await step_and_poll(host, poller)
    assert host.truth("ss-pv")["pv_w"] > 1000.0  # noon: the inverter produces
    r = (await writer.apply({"ss-pv": Setpoint(pv_limit_w=0.0)}))["ss-pv"]
    assert r.ok and r.written_w == 0.0 and r.readback_w == 0.0 and r.shortfall_w is None, r
    tel = await step_and_poll(host, poller)
    assert host.truth("ss-pv")["pv_w"] == 0.0
    site = host.site_truth("ss")
    assert site["grid_w"] == pytest.approx(site["load_w"])  # the meter sees the load alone: no PV, no export
    assert good(tel["ss-m"], "grid_w") == pytest.approx(site["grid_w"], abs=5.0)
    assert good(tel["ss-pv"], "pv_limit_w") == 0.0
    again = (await writer.apply({"ss-pv": Setpoint(pv_limit_w=0.0)}))["ss-pv"]
    assert again.action == "unchanged", again  # the stop is seen in force
    r = (await writer.apply({"ss-pv": Setpoint(pv_limit_w=None)}))["ss-pv"]
    assert r.ok and r.action == "release", r
    await host.step(30)
    assert host.truth("ss-pv")["pv_w"] > 1000.0  # reconnected and ramped back


async def test_k1_on_a_device_without_stop_holds_the_floor_and_names_the_shortfall(fleet, poller) -> None:
    host, clock = fleet
    writer = SetpointWriter(poller, SETTINGS, clock.now)
    await step_and_poll(host, poller)
    r = (await writer.apply({"der-pv": Setpoint(pv_limit_w=0.0)}))["der-pv"]
    floor = SETTINGS.min_pv_limit_pct / 100.0 * host.truth("der-pv")["wmax_w"]
    assert r.ok and r.written_w == pytest.approx(floor) and r.shortfall_w == pytest.approx(floor), r
    assert f"{floor:.0f} W above the 0 W asked for" in r.detail, r
    await step_and_poll(host, poller)
    again = (await writer.apply({"der-pv": Setpoint(pv_limit_w=0.0)}))["der-pv"]
    assert again.action == "unchanged" and again.shortfall_w == pytest.approx(floor), again  # still named
    assert (await writer.apply({"der-pv": Setpoint(pv_limit_w=None)}))["der-pv"].ok


async def test_a_device_that_never_answered_is_not_online_and_gets_no_writes(fleet, poller) -> None:
    host, clock = fleet
    host.inject_fault(FaultSpec(device="der-pv", mode="offline"))
    writer = SetpointWriter(poller, SETTINGS, clock.now)
    tel = await step_and_poll(host, poller)  # the first poll of this poller fails
    assert tel["der-pv"].status == "stale" and tel["der-pv"].last_good_at is None
    r = (await writer.apply({"der-pv": Setpoint(pv_limit_w=1000.0)}))["der-pv"]
    assert r.action == "failed" and "not read yet" in r.detail, r


async def test_a_timer_the_device_reports_shorter_is_refreshed_on_the_devices_count(fleet, poller) -> None:
    """704 reports what its revert timer has left: when another client shortened it to 20 s, the
    refresh follows the device's count down, not the 60 s the writer wrote."""
    host, clock = fleet
    writer = SetpointWriter(poller, SETTINGS, clock.now)
    await step_and_poll(host, poller)
    r = (await writer.apply({"der-pv": Setpoint(pv_limit_w=3000.0)}))["der-pv"]
    assert r.ok and r.action == "limit", r
    assert await writer.refresh_due() == {}  # the poll before the write says nothing about this timer
    d = poller.state("der-pv").driver
    assert isinstance(d, SunSpecDevice) and d.map is not None
    loc = d.map.find(704)
    assert loc is not None
    p = model_def(704).point("WMaxLimPctRvrtTms")
    await d.write(loc.addr + p.offset, encode_point(p, 20))  # an installer's app shortens the timer
    await step_and_poll(host, poller, 5)
    assert host.truth("der-pv")["revert_s"] == pytest.approx(15.0, abs=1)
    refreshed = await writer.refresh_due()  # 5 s of 60 on our clock, 15 s of 20 left on the device's
    assert refreshed["der-pv"].ok, refreshed
    assert host.truth("der-pv")["revert_s"] == pytest.approx(60.0, abs=1)
    await host.step(30)
    assert host.truth("der-pv")["limit_w"] == pytest.approx(3000.0, abs=10)  # did not lapse at 20 s
    assert (await writer.apply({"der-pv": Setpoint(pv_limit_w=None)}))["der-pv"].ok


async def test_the_watchdog_interval_set_on_the_device_is_the_one_both_sides_use(fleet, poller) -> None:
    host, clock = fleet
    writer = SetpointWriter(poller, SETTINGS, clock.now)
    await step_and_poll(host, poller)
    r = (await writer.apply({"k30-bat": Setpoint(battery_w=800.0)}))["k30-bat"]
    assert r.ok and writer.active[("k30-bat", "battery")].revert_s == 30.0, r  # refreshed every 12 s
    await host.step(35)
    assert host.truth("k30-bat")["commanded_w"] == pytest.approx(800.0)  # 30 s, fired late
    await host.step(10)
    assert host.truth("k30-bat")["commanded_w"] is None  # 45 s without a heartbeat: fallen back
