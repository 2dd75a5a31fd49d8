"""The simulators' ``garbage`` fault over real Modbus TCP: normal Modbus answers, implausible values.

The probe of 1,000 devices saw ``garbage`` fail to do its job: it wrote the type's largest raw
number into every live point, an int into model 122's string point ``TmSrc`` included, and with
the device's own scale factors a 25 kW inverter's or a meter's maximum (32767 W) lies inside the
physical bounds, so the poller rated it good. Garbage must be well-formed (every point decodes
as its type, no Modbus exception) and implausible (the poller reports ``bad``).
"""

from __future__ import annotations

import datetime as dt

import pytest
from pymodbus.client import AsyncModbusTcpClient

from sparcs.config.schema import DispatchConfig, FaultSpec
from sparcs.simulators.registers import decode
from tests.drivers.conftest import good, step_and_poll

pytestmark = pytest.mark.asyncio(loop_scope="module")

START = dt.datetime(2026, 6, 21, 10, 0, tzinfo=dt.UTC).timestamp()
SETTINGS = DispatchConfig(modbus_timeout_s=0.5, stale_after_polls=2, poll_interval_s=10)
FLEET = {
    "simulation": {"seed": 6, "variants": {"g-meter": {"meter_model": 201}}},
    "sites": [
        {
            "id": "g",
            "location": {"lat": 51.34, "lon": 12.37},
            "pv": {"kwp": 25.0},  # 25 kW: the old garbage, 32767 W, was within 1.5 × rating
            "grid": {"feed_in_cap_pct": 60},
            "battery": {"capacity_kwh": 10, "max_charge_w": 5000, "max_discharge_w": 5000},
            "devices": [
                {"id": "g-pv", "kind": "pv_inverter", "port": 37000, "unit": 1},
                {"id": "g-bat", "kind": "battery", "port": 37001, "unit": 1},
                {"id": "g-meter", "kind": "meter", "port": 37002, "unit": 1},
            ],
        }
    ],
}
REQUIRED = {"g-pv": ("pv_w",), "g-bat": ("battery_w", "soc"), "g-meter": ("grid_w",)}


async def _read_image(host, dev_id: str) -> list[int]:
    """The device's SunSpec image ('SunS' and every model), read with a plain pymodbus client."""
    ep = next(e for e in host.endpoints() if e.id == dev_id)
    image = host.devices[dev_id].image
    c = AsyncModbusTcpClient(ep.host, port=ep.port, timeout=2, retries=0)
    assert await c.connect()
    try:
        regs: list[int] = []
        end = image.base + len(image.registers) - 2  # up to the end model (0xFFFF, 0), not into it
        for addr in range(image.base, end, 100):
            count = min(100, end - addr)
            rr = await c.read_holding_registers(addr, count=count, device_id=ep.unit)
            assert not rr.isError(), (dev_id, addr, rr)  # garbage is data, not a Modbus exception
            regs += rr.registers
        return regs
    finally:
        c.close()


async def test_garbage_answers_normally_and_the_poller_rates_it_bad(fleet, poller) -> None:
    host, _ = fleet
    tel = await step_and_poll(host, poller)
    for dev_id, keys in REQUIRED.items():
        for key in keys:
            good(tel[dev_id], key)
    for dev_id in REQUIRED:
        host.inject_fault(FaultSpec(device=dev_id, mode="garbage"))
    try:
        tel = await step_and_poll(host, poller)
        for dev_id, keys in REQUIRED.items():
            t = tel[dev_id]
            assert t.status == "online" and t.error is None, (dev_id, t.error)
            for key in keys:
                assert t.values[key].quality == "bad", (dev_id, key, t.values[key])
            device = host.devices[dev_id]
            regs = await _read_image(host, dev_id)
            for mid, name, _ in device._live():
                p = device.image.points.get((mid, name))
                if p is None:
                    continue
                start = p.address - device.image.base
                value = decode(p.type, regs[start : start + p.size])
                assert value is not None, (dev_id, mid, name)  # well-formed: never the not-implemented value
                if p.type == "string":
                    assert isinstance(value, str) and value.isalnum() and not value.isdigit(), (dev_id, name, value)
    finally:
        for dev_id in REQUIRED:
            host.clear_fault(dev_id)
    tel = await step_and_poll(host, poller)
    for dev_id, keys in REQUIRED.items():
        for key in keys:  # the device's own scale factors are back
            assert good(tel[dev_id], key) == pytest.approx(host.truth(dev_id)[key], abs=5)
