"""Device clocks (SunSpec 122 ``Tms``) over Modbus TCP on the simulator's stepped clock
(docs/devices.md "Device clocks"): the poller reports each device's clock offset, a skewed clock is
an alarm, and revert timers are judged on the device's clock: a device whose clock runs fast is
refreshed before its own timer runs out, one that is merely set wrong is not refreshed early.
"""

from __future__ import annotations

import datetime as dt

import pytest

from sparcs.config.schema import DispatchConfig
from sparcs.controller.alarms import Alarms
from sparcs.controller.store import Store
from sparcs.drivers.writer import Setpoint, SetpointWriter
from tests.drivers.conftest import good, step_and_poll

pytestmark = pytest.mark.asyncio(loop_scope="module")

START = dt.datetime(2026, 6, 21, 10, 0, tzinfo=dt.UTC).timestamp()
SETTINGS = DispatchConfig(modbus_timeout_s=0.5, stale_after_polls=2, revert_timeout_s=120, poll_interval_s=10)
CLOCKS = {"true-pv": {}, "ahead-pv": {"clock_offset_s": 3600.0}, "fast-pv": {"clock_rate": 3.0}}


def _site(i: int, dev_id: str) -> dict:
    device = {"id": dev_id, "kind": "pv_inverter", "port": 10 * i + 1}
    return {"id": f"s{i}", "location": {"lat": 51.34, "lon": 12.37}, "pv": {"kwp": 6.0}, "devices": [device]}


FLEET = {
    "sites": [_site(i, dev_id) for i, dev_id in enumerate(CLOCKS)],
    "simulation": {"seed": 5, "weather": {"cloudiness": 0.0}, "variants": CLOCKS},
}


async def test_the_device_clock_offset_is_read_and_a_skewed_clock_is_an_alarm(fleet, poller, tmp_path) -> None:
    host, clock = fleet
    telemetry = await step_and_poll(host, poller)
    assert good(telemetry["true-pv"], "clock_offset_s") == pytest.approx(0.0, abs=1.5)
    assert good(telemetry["ahead-pv"], "clock_offset_s") == pytest.approx(3600.0, abs=1.5)
    store = Store(data_dir=tmp_path)
    try:
        alarms = Alarms(store)
        alarms.devices(telemetry, clock.now(), max_clock_skew_s=60.0)
        open_clock = {a["source"]: a["message"] for a in store.alarms(active_only=True) if "clock:" in a["source"]}
        assert set(open_clock) == {"clock:ahead-pv"}
        assert "+3600 s off ours" in open_clock["clock:ahead-pv"]
    finally:
        store.close()


async def test_revert_timers_are_judged_on_the_device_clock(fleet, poller) -> None:
    host, clock = fleet
    await step_and_poll(host, poller)
    writer = SetpointWriter(poller, SETTINGS, clock.now)
    ids = ["ahead-pv", "fast-pv"]
    results = await writer.apply({i: Setpoint(pv_limit_w=2400.0) for i in ids})
    assert all(r.ok and r.action == "limit" for r in results.values()), results
    refreshed: dict[str, list[float]] = {i: [clock.now()] for i in ids}
    for _ in range(30):  # five minutes, polled every 10 s
        await step_and_poll(host, poller)
        for dev_id, r in (await writer.refresh_due()).items():
            assert r.ok, r
            refreshed[dev_id].append(clock.now())
        # the fast clock's 120 s timer runs out after 40 s of ours: still refreshed in time
        assert host.truth("fast-pv")["limit_w"] == pytest.approx(2400.0, abs=10), clock.now() - START
        assert host.truth("ahead-pv")["limit_w"] == pytest.approx(2400.0, abs=10)
    fast = [b - a for a, b in zip(refreshed["fast-pv"], refreshed["fast-pv"][1:], strict=False)]
    ahead = [b - a for a, b in zip(refreshed["ahead-pv"], refreshed["ahead-pv"][1:], strict=False)]
    assert fast and max(fast) <= 30.0  # 40 % of 120 device seconds is 16 s of ours
    assert ahead and min(ahead) >= 0.4 * SETTINGS.revert_timeout_s  # an offset alone is no reason to hurry
