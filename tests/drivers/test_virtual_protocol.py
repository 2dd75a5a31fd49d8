"""A protocol registered from outside the drivers (tests/drivers/virtual_device.py) runs through the
unchanged poller and writer: poll → telemetry, a PV limit written and confirmed in force, release."""

from __future__ import annotations

import pytest

from sparcs.config.schema import DispatchConfig, validate_config
from sparcs.drivers.poller import FleetPoller
from sparcs.drivers.writer import Setpoint, SetpointWriter
from tests.drivers.virtual_device import BANK, LIMIT, Registers

SETTINGS = DispatchConfig(stale_after_polls=2, revert_timeout_s=60, poll_interval_s=10, min_pv_limit_pct=5)
FLEET = {
    "sites": [
        {
            "id": "v",
            "location": {"lat": 51.34, "lon": 12.37},
            "pv": {"kwp": 4.0, "installer_limit_pct": 90},
            "devices": [{"id": "v-pv", "kind": "pv_inverter", "port": 1, "protocol": "virtual"}],
        }
    ]
}


class Clock:
    def __init__(self) -> None:
        self.t = 1_782_000_000.0

    def now(self) -> float:
        return self.t


async def test_poller_and_writer_drive_a_registered_protocol() -> None:
    BANK["v-pv"] = bank = Registers(regs=[3000, 4000, 0, 0, 0])
    clock = Clock()
    poller = FleetPoller(validate_config(FLEET).devices(), SETTINGS, clock.now)
    writer = SetpointWriter(poller, SETTINGS, clock.now)
    assert poller.links == {}  # the device asked for no Modbus link

    t = (await poller.poll_once())["v-pv"]
    assert t.status == "online" and t.value("pv_w") == 3000.0 and t.values["pv_limit_w"].value is None

    r = (await writer.apply({"v-pv": Setpoint(pv_limit_w=1200.0)}))["v-pv"]
    assert (r.action, r.ok, r.written_w, r.readback_w) == ("limit", True, 1200.0, 1200.0), r
    assert bank.regs[LIMIT:] == [1200, 1, 60]  # the limit, its enable and the revert timer
    clock.t += 10
    t = (await poller.poll_once())["v-pv"]
    assert t.value("pv_w") == 1200.0 and t.value("pv_limit_w") == 1200.0

    writes = bank.writes
    r = (await writer.apply({"v-pv": Setpoint(pv_limit_w=1200.0)}))["v-pv"]
    assert r.action == "unchanged" and bank.writes == writes  # confirmed in force by the poll: not rewritten

    # the writer's policy holds for any protocol: the installer ceiling (90 % of 4 kW) and the floor (5 %)
    r = (await writer.apply({"v-pv": Setpoint(pv_limit_w=9000.0)}))["v-pv"]
    assert r.ok and r.clamped and r.written_w == pytest.approx(3600.0)
    r = (await writer.apply({"v-pv": Setpoint(pv_limit_w=0.0)}))["v-pv"]
    assert r.ok and r.clamped and r.written_w == pytest.approx(200.0)

    # a release under an installer ceiling below WMax writes that ceiling, never lifts it
    r = (await writer.apply({"v-pv": Setpoint(pv_limit_w=None)}))["v-pv"]
    assert r.action == "limit" and r.written_w == pytest.approx(3600.0), r

    # the refresh at 40 % of the revert timer rewrites what is in force
    clock.t += 0.4 * 60
    refreshed = await writer.refresh_due()
    assert refreshed["v-pv"].ok and refreshed["v-pv"].written_w == pytest.approx(3600.0)
    await poller.close()


async def test_a_release_and_an_ignored_write_on_a_registered_protocol() -> None:
    BANK["v-pv"] = bank = Registers(regs=[3000, 4000, 0, 0, 0])
    fleet = validate_config(FLEET)
    fleet.sites[0].pv.installer_limit_pct = 100.0
    clock = Clock()
    poller = FleetPoller(fleet.devices(), SETTINGS, clock.now)
    writer = SetpointWriter(poller, SETTINGS, clock.now)
    await poller.poll_once()
    assert (await writer.apply({"v-pv": Setpoint(pv_limit_w=2000.0)}))["v-pv"].ok

    r = (await writer.apply({"v-pv": Setpoint(pv_limit_w=None)}))["v-pv"]
    assert (r.action, r.ok, r.readback_w) == ("release", True, None), r
    t = (await poller.poll_once())["v-pv"]
    assert t.values["pv_limit_w"].value is None and t.value("pv_w") == 3000.0

    bank.ignore_writes = True
    r = (await writer.apply({"v-pv": Setpoint(pv_limit_w=1000.0)}))["v-pv"]
    assert r.mismatch and not r.ok and r.readback_w is None
    assert r.detail == "registers 2 read back [2000] instead of [1000]; registers 3 read back [0] instead of [1]"
    await poller.close()
