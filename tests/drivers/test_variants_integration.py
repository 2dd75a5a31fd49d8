"""Drivers against the simulator's further variants over Modbus TCP on loopback.

One stepped-clock fleet serves the module: single- and split-phase inverters (101, 102, 111,
112), meters 201/202/204, vendor profile devices (SMA and Huawei register maps from
config/profiles/), and devices that acknowledge writes without applying them (``ignore_writes``),
against which the setpoint writer must report a read-back mismatch.
"""

from __future__ import annotations

import datetime as dt

import pytest
import yaml

from sparcs.config.schema import DispatchConfig, FaultSpec
from sparcs.drivers.scan import config_snippet, format_scan, run_scan
from sparcs.drivers.writer import Setpoint, SetpointWriter
from tests.drivers.conftest import good, step_and_poll

pytestmark = pytest.mark.asyncio(loop_scope="module")

START = dt.datetime(2026, 6, 21, 10, 0, tzinfo=dt.UTC).timestamp()  # noon in Leipzig
SETTINGS = DispatchConfig(modbus_timeout_s=0.5, stale_after_polls=2, revert_timeout_s=120, poll_interval_s=10)


def _site(sid: str, kwp: float, devices: list[dict], battery: bool = False) -> dict:
    site = {
        "id": sid,
        "location": {"lat": 51.34, "lon": 12.37},
        "pv": {"kwp": kwp},
        "devices": devices,
    }
    if battery:
        site["battery"] = {"capacity_kwh": 10, "max_charge_w": 4000, "max_discharge_w": 4000}
    return site


def _dev(did: str, kind: str, port: int, unit: int = 1, profile: str | None = None) -> dict:
    out = {"id": did, "kind": kind, "port": port, "unit": unit}
    if profile is not None:
        out |= {"protocol": "profile", "profile": profile}
    return out


FLEET = {
    "sites": [
        _site("v1", 6.0, [_dev("v1-pv", "pv_inverter", 2001), _dev("v1-m", "meter", 2002)]),
        _site(
            "v2",
            8.0,
            [_dev("v2-pv", "pv_inverter", 2011), _dev("v2-bat", "battery", 2012), _dev("v2-m", "meter", 2013)],
            battery=True,
        ),
        _site("v3", 5.0, [_dev("v3-pv", "pv_inverter", 2021), _dev("v3-m", "meter", 2022)]),
        # profile devices: an SMA inverter (unit 3, as SMA ships it) with a SunSpec meter, a Huawei one
        _site("sma", 5.0, [_dev("sma-pv", "pv_inverter", 2031, 3, "sma_sunny_boy"), _dev("sma-m", "meter", 2032)]),
        # Huawei's derating has no fail-safe: this fleet accepts the risk, so the writer controls it
        _site("hw", 6.0, [_dev("hw-pv", "pv_inverter", 2041, 1, "huawei_sun2000") | {"accept_no_fail_safe": True}]),
        # a site whose devices will ignore writes
        _site("ig", 5.0, [_dev("ig-pv", "pv_inverter", 2051), _dev("ig-bat", "battery", 2052)], battery=True),
    ],
    "simulation": {
        "seed": 9,
        "weather": {"cloudiness": 0.0},
        "variants": {
            "v1-pv": {"phases": 1},
            "v1-m": {"meter_model": 201},
            "v2-pv": {"models": "float", "phases": 2, "base_address": 0, "common_len": 65},
            "v2-bat": {"phases": 2, "base_address": 50000},
            "v2-m": {"meter_model": 202},
            "v3-pv": {"models": "float", "phases": 1, "base_address": 50000},
            "v3-m": {"meter_model": 204, "base_address": 0},
        },
    },
}
EXPECTED_MODELS = {
    "v1-pv": 101,
    "v1-m": 201,
    "v2-pv": 112,
    "v2-bat": 102,
    "v2-m": 202,
    "v3-pv": 111,
    "v3-m": 204,
}


async def test_phase_and_meter_variants_discovered_and_equal_truth(fleet, poller) -> None:
    host, _ = fleet
    tel = await step_and_poll(host, poller)
    for dev_id, model in EXPECTED_MODELS.items():
        t = tel[dev_id]
        assert t.status == "online" and t.error is None, (dev_id, t.error)
        assert model in t.models, (dev_id, t.models)
        truth = host.truth(dev_id)
        if t.kind == "pv_inverter":
            assert truth["pv_w"] > 500
            assert good(t, "pv_w") == pytest.approx(truth["pv_w"], abs=1.0 + 1e-3 * truth["rating_w"])
            assert good(t, "energy_wh") == pytest.approx(truth["energy_wh"], abs=1.0, rel=1e-7)  # float32 on 11x
            assert good(t, "wmax_w") == pytest.approx(truth["wmax_w"], rel=1e-3)
        elif t.kind == "battery":
            assert good(t, "battery_w") == pytest.approx(truth["battery_w"], abs=1.0 + 1e-3 * truth["max_charge_w"])
            assert good(t, "soc") == pytest.approx(truth["soc"], abs=0.001)
        else:
            assert good(t, "grid_w") == pytest.approx(truth["grid_w"], abs=1.0)
            assert good(t, "import_wh") == pytest.approx(truth["import_wh"], abs=1.0)
            assert good(t, "export_wh") == pytest.approx(truth["export_wh"], abs=1.0)
    assert {poller.devices[i].driver.map.base for i in EXPECTED_MODELS} == {0, 40000, 50000}


@pytest.mark.parametrize(("dev_id", "energy_step_wh", "state"), [("sma-pv", 1.0, 307), ("hw-pv", 10.0, 0x0200)])
async def test_profile_devices_decode_to_truth(fleet, poller, dev_id, energy_step_wh, state) -> None:
    host, _ = fleet
    t = (await step_and_poll(host, poller))[dev_id]
    truth = host.truth(dev_id)
    assert t.status == "online" and t.error is None
    assert good(t, "pv_w") == pytest.approx(truth["pv_w"], abs=1.0)
    assert good(t, "energy_wh") == pytest.approx(truth["energy_wh"], abs=energy_step_wh)
    assert good(t, "rating_w") == pytest.approx(truth["rating_w"], abs=1.0)
    assert good(t, "wmax_w") == pytest.approx(truth["wmax_w"], abs=1.0)
    assert good(t, "operating_state") == state
    assert t.values["pv_limit_w"].quality == "good" and t.values["pv_limit_w"].value is None


async def test_profile_limit_write_takes_effect_and_releases(fleet, poller) -> None:
    host, clock = fleet
    await step_and_poll(host, poller)
    writer = SetpointWriter(poller, SETTINGS, clock.now)
    res = await writer.apply({"sma-pv": Setpoint(pv_limit_w=3000.0), "hw-pv": Setpoint(pv_limit_w=1500.0)})
    assert all(r.ok and r.action == "limit" and not r.mismatch for r in res.values()), res
    assert res["sma-pv"].readback_w == pytest.approx(3000.0)  # 60 % of 5 kW in SMA's whole percent
    assert res["hw-pv"].readback_w == pytest.approx(1500.0)  # 25.0 % of 6 kW in Huawei's tenths
    tel = await step_and_poll(host, poller, 60)
    for dev_id, limit in (("sma-pv", 3000.0), ("hw-pv", 1500.0)):
        assert host.truth(dev_id)["limit_w"] == pytest.approx(limit)
        assert good(tel[dev_id], "pv_w") == pytest.approx(limit, abs=1.0)
        assert good(tel[dev_id], "pv_limit_w") == pytest.approx(limit)
    res = await writer.apply({"sma-pv": Setpoint(pv_limit_w=None), "hw-pv": Setpoint(pv_limit_w=None)})
    assert all(r.ok and r.action == "release" for r in res.values()), res
    tel = await step_and_poll(host, poller, 60)
    for dev_id in ("sma-pv", "hw-pv"):
        assert host.truth(dev_id)["limit_w"] is None
        assert tel[dev_id].values["pv_limit_w"].value is None


async def test_profile_not_implemented_value_is_missing(fleet, poller) -> None:
    host, _ = fleet
    host.inject_fault(FaultSpec(device="sma-pv", mode="sentinel"))  # SMA's NaN, as at night
    t = (await step_and_poll(host, poller))["sma-pv"]
    assert t.values["pv_w"].quality == "missing" and t.values["pv_w"].value is None
    host.clear_fault("sma-pv")
    assert (await step_and_poll(host, poller))["sma-pv"].values["pv_w"].quality == "good"


async def test_scan_with_a_profile_lists_registers(fleet) -> None:
    host, _ = fleet
    ep = next(e for e in host.endpoints() if e.id == "sma-pv")
    report = await run_scan(ep.host, ep.port, ep.unit, profile="sma_sunny_boy")
    points = report["models"][0]["points"]
    assert points["pv_w"]["value"] == pytest.approx(host.truth("sma-pv")["pv_w"], abs=1.0)
    assert points["pv_w"]["address"] == 30775 and points["pv_w"]["units"] == "W" and points["pv_w"]["access"] == "R"
    assert points["pv_limit_pct"] == {"value": 100.0, "units": "%", "address": 40016, "access": "RW"}
    assert "pv_limit_pct" in format_scan(report)
    (entry,) = yaml.safe_load(config_snippet(report, "roof-pv"))
    assert entry == {
        "id": "roof-pv",
        "kind": "pv_inverter",
        "host": ep.host,
        "port": ep.port,
        "unit": 3,
        "protocol": "profile",
        "profile": "sma_sunny_boy",
    }


async def test_writes_ignored_by_the_device_are_reported_as_mismatch(fleet, poller) -> None:
    host, clock = fleet
    await step_and_poll(host, poller)
    writer = SetpointWriter(poller, SETTINGS, clock.now)
    ok = (await writer.apply({"ig-pv": Setpoint(pv_limit_w=3000.0)}))["ig-pv"]
    assert ok.ok and not ok.mismatch  # the device applies writes until the fault starts
    for dev_id in ("ig-pv", "ig-bat", "sma-pv"):
        host.inject_fault(FaultSpec(device=dev_id, mode="ignore_writes"))
    asked = {
        "ig-pv": Setpoint(pv_limit_w=1000.0),
        "ig-bat": Setpoint(battery_w=2000.0),
        "sma-pv": Setpoint(pv_limit_w=2000.0),
    }
    res = await writer.apply(asked)
    for dev_id, r in res.items():
        assert r.mismatch and not r.ok, (dev_id, r)
    wmax = host.truth("ig-pv")["wmax_w"]
    pct_reg = f"read back [{round(3000.0 / wmax * 1000)}] instead of [{round(1000.0 / wmax * 1000)}]"
    assert pct_reg in res["ig-pv"].detail  # 123 WMaxLimPct (SF -1): the old limit is still there
    assert res["ig-pv"].readback_w == pytest.approx(3000.0)
    assert "registers 40016 read back [100] instead of [40]" in res["sma-pv"].detail
    assert res["ig-bat"].readback_w is None  # still in its own self-consumption mode
    await host.step(60)
    assert host.truth("ig-pv")["limit_w"] == pytest.approx(3000.0)
    assert host.truth("ig-bat")["commanded_w"] is None
    assert host.truth("sma-pv")["limit_w"] is None
    tel = await poller.poll_once()
    assert good(tel["ig-pv"], "pv_limit_w") == pytest.approx(3000.0)  # the limit in force, not the one asked for
