"""Modbus round trips of one setpoint write, counted on the device's link, against simulated devices.

One stepped-clock fleet serves the module, one device per port so that a link's requests are one
device's: classic (103/123/124), DER (701/704/713), an SMA profile inverter, and a classic pair that
ignores writes. A write reuses the control model of the latest poll and reads the device once after
its writes; that one read must still catch every register the device did not take.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest

from sparcs.config.schema import DispatchConfig, FaultSpec
from sparcs.drivers.link import Link
from sparcs.drivers.writer import Setpoint, SetpointWriter
from tests.drivers.conftest import step_and_poll

pytestmark = pytest.mark.asyncio(loop_scope="module")

START = dt.datetime(2026, 6, 21, 10, 0, tzinfo=dt.UTC).timestamp()  # noon in Leipzig
SETTINGS = DispatchConfig(modbus_timeout_s=0.5, stale_after_polls=2, revert_timeout_s=60, poll_interval_s=10)


def _site(sid: str, devices: list[dict], battery: bool = False, kwp: float = 6.0) -> dict:
    site = {"id": sid, "location": {"lat": 51.34, "lon": 12.37}, "pv": {"kwp": kwp}, "devices": devices}
    if battery:
        site["battery"] = {"capacity_kwh": 10, "max_charge_w": 4000, "max_discharge_w": 4000}
    return site


def _dev(did: str, kind: str, port: int, profile: str | None = None) -> dict:
    out = {"id": did, "kind": kind, "port": port, "unit": 3 if profile else 1}
    return out | {"protocol": "profile", "profile": profile} if profile else out


FLEET = {
    "sites": [
        _site("c", [_dev("c-pv", "pv_inverter", 3001), _dev("c-bat", "battery", 3002)], battery=True),
        _site("d", [_dev("d-pv", "pv_inverter", 3011), _dev("d-bat", "battery", 3012)], battery=True),
        _site("s", [_dev("s-pv", "pv_inverter", 3021, "sma_sunny_boy")], kwp=5.0),
        _site("ig", [_dev("ig-pv", "pv_inverter", 3031), _dev("ig-bat", "battery", 3032)], battery=True),
    ],
    "simulation": {
        "seed": 3,
        "weather": {"cloudiness": 0.0},
        "variants": {
            "c-pv": {"models": "classic"},
            "c-bat": {"models": "classic"},
            "d-pv": {"models": "der"},
            "d-bat": {"models": "der"},
            "ig-pv": {"models": "classic"},
            "ig-bat": {"models": "classic"},
        },
    },
}


def _count_requests(link: Link, monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Count the link's requests from now on: "reads" (holding and input) and "writes"."""
    counts: Counter[str] = Counter()
    for method, kind in (("read_holding", "reads"), ("read_input", "reads"), ("write", "writes")):
        real = getattr(link, method)

        async def counted(*args, _real=real, _kind=kind):
            counts[_kind] += 1
            return await _real(*args)

        monkeypatch.setattr(link, method, counted)
    return counts


async def _in_force(host, poller, dev_id: str) -> float | None:
    """The battery power the simulator applies, or the PV limit the inverter reports in force (W)."""
    if dev_id.endswith("bat"):
        return host.truth(dev_id)["commanded_w"]
    return (await poller.poll_once())[dev_id].values["pv_limit_w"].value  # the simulator ramps to a limit


@pytest.mark.parametrize(
    ("dev_id", "setpoint_w", "writes", "reads"),
    [
        # 124: OutWRte + InWRte (next to each other: one FC 16), timer, StorCtl_Mod; the scale factor and
        # WChaMax from the poll (was 10 requests, then 4 writes)
        ("c-bat", -1500.0, 3, 1),
        # a DER battery polls 701 + 713, not 704: WSet_SF is read before the writes; timer, WSetMod + WSet
        # (one FC 16), WSetEna (was 10 requests, then 4 writes)
        ("d-bat", 1200.0, 3, 2),
        # 123: WMaxLimPct, timer, WMaxLim_Ena (was 8 requests)
        ("c-pv", 2000.0, 3, 1),
        # 704: WMaxLimPct, timer, WMaxLimPctEna (was 8 requests)
        ("d-pv", 1500.0, 3, 1),
    ],
)
async def test_a_setpoint_costs_its_writes_and_one_read_back(
    fleet, poller, monkeypatch, dev_id, setpoint_w, writes, reads
) -> None:
    host, clock = fleet
    await step_and_poll(host, poller)
    counts = _count_requests(poller.state(dev_id).driver.link, monkeypatch)
    writer = SetpointWriter(poller, SETTINGS, clock.now)
    battery = dev_id.endswith("bat")
    sp = Setpoint(battery_w=setpoint_w) if battery else Setpoint(pv_limit_w=setpoint_w)
    r = (await writer.apply({dev_id: sp}))[dev_id]
    assert r.ok and not r.mismatch and r.action == ("battery" if battery else "limit"), r
    assert counts == {"writes": writes, "reads": reads}
    assert r.readback_w == pytest.approx(setpoint_w, abs=0.01 * 4000)
    assert await _in_force(host, poller, dev_id) == pytest.approx(setpoint_w, abs=0.01 * 4000)

    counts.clear()
    release = Setpoint(battery_w=None) if battery else Setpoint(pv_limit_w=None)
    r = (await writer.apply({dev_id: release}))[dev_id]
    assert r.ok and r.action == "release" and r.readback_w is None, r
    assert counts == {"writes": 1, "reads": 1}  # the enable (mode) point, then one read back (was 4)
    assert await _in_force(host, poller, dev_id) is None


async def test_ignored_writes_are_mismatches_found_in_the_one_read_back(fleet, poller, monkeypatch) -> None:
    host, clock = fleet
    await step_and_poll(host, poller)
    writer = SetpointWriter(poller, SETTINGS, clock.now)
    assert (await writer.apply({"ig-pv": Setpoint(pv_limit_w=3000.0)}))["ig-pv"].ok
    await step_and_poll(host, poller)
    for dev_id in ("ig-pv", "ig-bat"):
        host.inject_fault(FaultSpec(device=dev_id, mode="ignore_writes"))
    counts = {i: _count_requests(poller.state(i).driver.link, monkeypatch) for i in ("ig-pv", "ig-bat")}
    res = await writer.apply({"ig-pv": Setpoint(pv_limit_w=1000.0), "ig-bat": Setpoint(battery_w=2000.0)})
    # 124: OutWRte + InWRte in one FC 16, the timer, StorCtl_Mod
    assert counts == {"ig-pv": {"writes": 3, "reads": 1}, "ig-bat": {"writes": 3, "reads": 1}}
    pv, bat = res["ig-pv"], res["ig-bat"]
    assert pv.mismatch and not pv.ok and bat.mismatch and not bat.ok, res
    pv_ctl = poller.state("ig-pv").driver.map.find(123).addr
    wmax = host.truth("ig-pv")["wmax_w"]
    # 123 WMaxLimPct (SF -1) at offset 5 still holds the old limit; timer and enable were already as asked.
    assert pv.detail == (
        f"registers {pv_ctl + 5} read back [{round(3000.0 / wmax * 1000)}] instead of [{round(1000.0 / wmax * 1000)}]"
    )
    assert pv.readback_w == pytest.approx(3000.0, rel=0.01)  # the limit in force, not the one asked for
    bat_ctl = poller.state("ig-bat").driver.map.find(124).addr
    assert f"registers {bat_ctl + 5} read back [0] instead of [2]" in bat.detail  # StorCtl_Mod: discharge
    assert bat.readback_w is None  # still in its own mode
    assert host.truth("ig-pv")["limit_w"] == pytest.approx(3000.0, rel=0.01)
    assert host.truth("ig-bat")["commanded_w"] is None


async def test_profile_write_checks_registers_from_its_own_read_all(fleet, poller, monkeypatch) -> None:
    host, clock = fleet
    await step_and_poll(host, poller)
    driver = poller.state("s-pv").driver
    counts = _count_requests(driver.link, monkeypatch)
    writer = SetpointWriter(poller, SETTINGS, clock.now)
    r = (await writer.apply({"s-pv": Setpoint(pv_limit_w=3000.0)}))["s-pv"]
    assert r.ok and not r.mismatch and r.readback_w == pytest.approx(3000.0), r  # 60 % of 5 kW
    # one write of pv_limit_pct, then read_all's requests and no read of the written register on its own
    assert counts == {"writes": 1, "reads": len(driver.blocks)}

    host.inject_fault(FaultSpec(device="s-pv", mode="ignore_writes"))
    counts.clear()
    r = (await writer.apply({"s-pv": Setpoint(pv_limit_w=2000.0)}))["s-pv"]
    assert r.mismatch and not r.ok and r.detail == "registers 40016 read back [60] instead of [40]", r
    assert r.readback_w == pytest.approx(3000.0)
    assert counts == {"writes": 1, "reads": len(driver.blocks)}
