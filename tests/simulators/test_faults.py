"""Every fault mode, injected at run time or from config, seen by a plain Modbus TCP client."""

from __future__ import annotations

import datetime as dt

import pytest
from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ModbusException

from sparcs.config.schema import FaultSpec
from tests.simulators.conftest import SUMMER_NOON_S, FleetThread, site

FAULT_START = dt.datetime.fromtimestamp(SUMMER_NOON_S + 7200, dt.UTC).isoformat()
FAULT_END = dt.datetime.fromtimestamp(SUMMER_NOON_S + 7800, dt.UTC).isoformat()


@pytest.fixture(scope="module")
def fleet():
    f = FleetThread(
        {
            "simulation": {
                "seed": 5,
                "faults": [
                    {"device": "win-pv", "mode": "exception", "code": 6, "start": FAULT_START, "end": FAULT_END}
                ],
            },
            "sites": [
                site("a", 32000, cap=None),
                site("gw", 32010, gateway=True),
                site("win", 32020, battery=False),
            ],
        }
    )
    try:
        yield f
    finally:
        f.close()


def client(fleet: FleetThread, dev_id: str, timeout: float = 2.0) -> tuple[ModbusTcpClient, int]:
    ep = fleet.endpoints[dev_id]
    c = ModbusTcpClient(ep.host, port=ep.port, timeout=timeout, retries=0, reconnect_delay=0)
    return c, ep.unit


def w_address(fleet: FleetThread, dev_id: str) -> int:
    """Protocol address of the device's AC power point (103 W or 203 W)."""
    device = fleet.host.devices[dev_id]
    model = 203 if device.kind == "meter" else 103
    return device.image.point(model, "W").address


def read_regs(fleet: FleetThread, dev_id: str, address: int, count: int = 1, timeout: float = 2.0):
    c, unit = client(fleet, dev_id, timeout)
    try:
        assert c.connect()
        return c.read_holding_registers(address, count=count, device_id=unit)
    finally:
        c.close()


def read_w(fleet: FleetThread, dev_id: str) -> int:
    rr = read_regs(fleet, dev_id, w_address(fleet, dev_id))
    assert not rr.isError(), rr
    return rr.registers[0]


@pytest.fixture
def inject(fleet):
    """Inject faults; clear every one the test injected afterwards."""
    injected: list[str] = []

    def do(**kw) -> None:
        fleet.call(fleet.host.inject_fault, FaultSpec(**kw))
        injected.append(kw["device"])

    yield do
    for dev in injected:
        fleet.call(fleet.host.clear_fault, dev)


def test_offline_closes_the_port_and_clearing_reopens_it(fleet, inject):
    inject(device="a-pv", mode="offline")
    c, _ = client(fleet, "a-pv")
    assert not c.connect()
    c.close()
    assert read_w(fleet, "a-bat") is not None  # the rest of the site still answers
    fleet.call(fleet.host.clear_fault, "a-pv")
    assert read_w(fleet, "a-pv") >= 0


def test_offline_unit_behind_a_gateway_answers_exception_11_and_its_neighbours_answer(fleet, inject):
    inject(device="gw-bat", mode="offline")
    rr = read_regs(fleet, "gw-bat", w_address(fleet, "gw-bat"))
    assert rr.isError() and rr.exception_code == 11
    assert read_w(fleet, "gw-pv") >= 0


def test_no_reply_times_out_only_the_silent_unit(fleet, inject):
    inject(device="gw-pv", mode="no_reply")
    with pytest.raises(ModbusException):
        read_regs(fleet, "gw-pv", w_address(fleet, "gw-pv"), timeout=0.3)
    assert read_w(fleet, "gw-meter") is not None


def test_slow_replies_arrive_late(fleet, inject):
    inject(device="a-meter", mode="slow", delay_s=0.6)
    with pytest.raises(ModbusException):
        read_regs(fleet, "a-meter", w_address(fleet, "a-meter"), timeout=0.15)
    rr = read_regs(fleet, "a-meter", w_address(fleet, "a-meter"), timeout=5.0)
    assert not rr.isError()


@pytest.mark.parametrize("code", [4, 6, 9, 11])
def test_exception_fault_answers_its_code(fleet, inject, code):
    inject(device="a-bat", mode="exception", code=code)
    rr = read_regs(fleet, "a-bat", w_address(fleet, "a-bat"))
    assert rr.isError() and rr.exception_code == code


def test_frozen_values_stop_changing_while_the_physics_moves(fleet, inject):
    fleet.step(60)
    regs_before = read_regs(fleet, "a-pv", w_address(fleet, "a-pv"), count=12).registers
    inject(device="a-pv", mode="frozen")
    fleet.step(600)
    assert fleet.truth("a-pv")["energy_wh"] > 0
    assert read_regs(fleet, "a-pv", w_address(fleet, "a-pv"), count=12).registers == regs_before
    fleet.call(fleet.host.clear_fault, "a-pv")
    assert read_regs(fleet, "a-pv", w_address(fleet, "a-pv"), count=12).registers != regs_before


def test_sentinel_values_read_as_not_implemented(fleet, inject):
    inject(device="a-meter", mode="sentinel")
    assert read_w(fleet, "a-meter") == 0x8000
    soc = fleet.host.devices["a-bat"].image.point(124, "ChaState").address
    inject(device="a-bat", mode="sentinel")
    assert read_regs(fleet, "a-bat", soc).registers == [0xFFFF]


def test_garbage_values_are_out_of_range(fleet, inject):
    inject(device="a-bat", mode="garbage")
    soc_address = fleet.host.devices["a-bat"].image.point(124, "ChaState").address
    raw = read_regs(fleet, "a-bat", soc_address).registers[0]
    assert raw * 0.1 > 100.0  # ChaState_SF = -1: far above 100 %
    assert read_w(fleet, "a-bat") == 0x7FFF


def test_reboot_resets_controls_and_is_unavailable_for_its_duration(fleet, inject):
    dev = fleet.host.devices["a-pv"]
    ena = dev.image.point(123, "WMaxLim_Ena").address
    pct = dev.image.point(123, "WMaxLimPct").address
    c, unit = client(fleet, "a-pv")
    assert c.connect()
    assert not c.write_register(pct, 300, device_id=unit).isError()  # 30.0 % (SF -1)
    assert not c.write_register(ena, 1, device_id=unit).isError()
    c.close()
    fleet.step(10)
    assert fleet.truth("a-pv")["limit_w"] is not None
    inject(device="a-pv", mode="reboot", duration_s=60)
    c, _ = client(fleet, "a-pv")
    assert not c.connect()
    c.close()
    fleet.step(61)
    assert read_regs(fleet, "a-pv", ena).registers == [0]
    assert read_regs(fleet, "a-pv", pct).registers == [1000]
    assert fleet.truth("a-pv")["limit_w"] is None


def test_config_fault_acts_only_inside_its_time_window(fleet):
    start = fleet.clock.now()
    assert start < SUMMER_NOON_S + 7200
    assert not read_regs(fleet, "win-pv", w_address(fleet, "win-pv")).isError()
    fleet.step(SUMMER_NOON_S + 7200 - start)
    rr = read_regs(fleet, "win-pv", w_address(fleet, "win-pv"))
    assert rr.isError() and rr.exception_code == 6
    fleet.step(600)
    assert not read_regs(fleet, "win-pv", w_address(fleet, "win-pv")).isError()
