"""A SunSpec inverter that silently caps a written limit: the writer reports the mismatch."""

from __future__ import annotations

import pytest

from config.schema import DispatchConfig, validate_config
from drivers.poller import FleetPoller
from drivers.writer import Setpoint, SetpointWriter
from tests.drivers.register_server import RegisterServer, sunspec_image

CONTROLS_123 = {
    "Conn": 1,
    "WMaxLimPct": 1000,
    "WMaxLimPct_SF": -1,
    "WMaxLim_Ena": 0,
    "WMaxLimPct_RvrtTms": 0,
    "OutPFSet": 1000,
    "OutPFSet_SF": -3,
    "OutPFSet_Ena": 0,
    "VArPct_Ena": 0,
}


@pytest.fixture
async def capped_inverter():
    img = sunspec_image(
        40000,
        {
            1: {"Mn": "ACME", "Md": "capper", "SN": "7"},
            103: {"W": 2500, "W_SF": 0, "WH": 5000, "WH_SF": 0, "St": 4},
            120: {"DERTyp": 4, "WRtg": 5000, "WRtg_SF": 0},
            121: {"WMax": 5000, "WMax_SF": 0},
            123: CONTROLS_123,
        },
    )
    pct_addr = 40000 + 2 + 68 + 52 + 28 + 32 + 5  # SunS, 1, 103, 120, 121, then WMaxLimPct at 123 + 5

    def cap(addr: int, values: list[int]) -> list[int]:
        # Firmware that never goes below 50 % and says nothing about it.
        return [max(values[0], 500)] if addr == pct_addr else values

    server = RegisterServer({1: img}, on_write=cap)
    await server.start()
    cfg = validate_config(
        {
            "sites": [
                {
                    "id": "s",
                    "location": {"lat": 51.3, "lon": 12.4},
                    "pv": {"kwp": 5.0},
                    "devices": [{"id": "inv", "kind": "pv_inverter", "port": server.port}],
                }
            ]
        }
    )
    clock = lambda: 1_780_000_000.0  # noqa: E731
    poller = FleetPoller(cfg.devices(), DispatchConfig(), clock)
    try:
        yield poller, SetpointWriter(poller, DispatchConfig(), clock), server, pct_addr
    finally:
        await poller.close()
        await server.stop()


async def test_readback_mismatch_is_reported(capped_inverter) -> None:
    poller, writer, server, pct_addr = capped_inverter
    await poller.poll_once()
    ok = (await writer.apply({"inv": Setpoint(pv_limit_w=3000.0)}))["inv"]
    assert ok.ok and not ok.mismatch and await server.get(1, pct_addr, 1) == [600]
    capped = (await writer.apply({"inv": Setpoint(pv_limit_w=1000.0)}))["inv"]
    assert capped.mismatch and not capped.ok
    assert f"registers {pct_addr} read back [500] instead of [200]" in capped.detail
    assert capped.readback_w == pytest.approx(2500.0)
    tel = (await poller.poll_once())["inv"]
    assert tel.values["pv_limit_w"].value == pytest.approx(2500.0)  # the limit in force, not the one asked for
