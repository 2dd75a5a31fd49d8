"""SunSpec 160 (MPPT per string) and 802 (SunSpec 2 battery) over Modbus TCP: discovery, codec and
telemetry against the simulators' ground truth, which serve them from pysunspec2's definitions.
"""

from __future__ import annotations

import datetime as dt

import pytest

from sparcs.config.schema import DispatchConfig
from sparcs.drivers.scan import run_scan
from sparcs.drivers.writer import Setpoint, SetpointWriter
from tests.drivers.conftest import good, step_and_poll

pytestmark = pytest.mark.asyncio(loop_scope="module")

START = dt.datetime(2026, 6, 21, 10, 0, tzinfo=dt.UTC).timestamp()
SETTINGS = DispatchConfig(modbus_timeout_s=0.5, stale_after_polls=2, poll_interval_s=10)
FLEET = {
    "sites": [
        {
            "id": "s",
            "location": {"lat": 51.34, "lon": 12.37},
            "pv": {"kwp": 6.0},
            "battery": {"capacity_kwh": 10, "max_charge_w": 4000, "max_discharge_w": 3000},
            "devices": [
                {"id": "s-pv", "kind": "pv_inverter", "port": 1},
                {"id": "s-bat", "kind": "battery", "port": 2},
                {"id": "s-m", "kind": "meter", "port": 3},
            ],
        }
    ],
    "simulation": {
        "weather": {"cloudiness": 0.0},
        "variants": {"s-pv": {"mppt_strings": 3}, "s-bat": {"models": "802", "base_address": 0}},
    },
}


async def test_mppt_strings_are_read_per_string(fleet, poller) -> None:
    host, _ = fleet
    t = (await step_and_poll(host, poller))["s-pv"]
    assert 160 in t.models
    truth = host.truth("s-pv")
    strings = [good(t, f"mppt_{i}_dc_w") for i in (1, 2, 3)]
    assert "mppt_4_dc_w" not in t.values
    assert strings == pytest.approx([truth["pv_w"] / 0.97 / 3] * 3, abs=2.0)
    assert good(t, "dc_w") == pytest.approx(sum(strings))
    assert good(t, "pv_w") == pytest.approx(truth["pv_w"], abs=2.0)


async def test_a_battery_with_only_model_802_is_usable(fleet, poller) -> None:
    host, clock = fleet
    t = (await step_and_poll(host, poller))["s-bat"]
    assert t.status == "online" and t.models == [1, 802]
    truth = host.truth("s-bat")
    assert good(t, "battery_w") == pytest.approx(truth["battery_w"], abs=2.0)
    assert good(t, "soc") == pytest.approx(truth["soc"], abs=0.001)
    assert good(t, "capacity_wh") == 10_000.0
    assert good(t, "max_charge_w") == 4000.0 and good(t, "max_discharge_w") == 3000.0
    assert good(t, "operating_state") == 3.0  # 802 State CONNECTED
    r = (await SetpointWriter(poller, SETTINGS, clock.now).apply({"s-bat": Setpoint(battery_w=500.0)}))["s-bat"]
    assert r.action == "skipped" and "monitor only" in r.detail, r  # 802 has no power setpoint


async def test_scan_names_the_kind_an_802_bank_describes(fleet) -> None:
    host, _ = fleet
    ep = next(e for e in host.endpoints() if e.id == "s-bat")
    report = await run_scan(ep.host, ep.port, ep.unit)
    assert report["kind"] == "battery" and report["base"] == 0
    soc = next(m for m in report["models"] if m["id"] == 802)["points"]["SoC"]
    assert soc["units"] == "%WHRtg" and soc["value"] == pytest.approx(host.truth("s-bat")["soc"] * 100, abs=0.2)
