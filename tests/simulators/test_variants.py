"""Single/split-phase inverters, meters 201–204 and vendor profile devices over TCP, and ignore_writes.

SunSpec variants are checked with pysunspec2; profile devices with a raw pymodbus client, decoded
here per the vendor map (pymodbus's own register conversion, independent of the drivers' codec).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sunspec2.modbus.client as sclient
from pymodbus.client import ModbusTcpClient
from pymodbus.pdu import ExceptionResponse

from sparcs.config.register_map import PROFILE_DIR, Register, RegisterMap, load_register_map
from sparcs.config.schema import FaultSpec, validate_config
from sparcs.simulators.fleet import FleetHost
from tests.simulators.conftest import FleetThread, site

BATTERY_MAP = """\
name: test_battery
vendor: test
devices: a battery whose map exercises little byte and word order, input registers, kW, sign and a timer
source: this test
kind: battery
byte_order: little
word_order: little
registers:
  battery_w: {address: 100, type: int32, scale: 0.001, unit: kW, sign: -1, table: input}
  soc: {address: 102, type: uint16, scale: 0.1, unit: "%", table: input, not_implemented: [0xFFFF]}
  energy_wh: {address: 103, type: uint32, unit: Wh, table: input}
  capacity_wh: {address: 110, type: uint32, unit: Wh}
  battery_setpoint_w: {address: 200, type: int32, unit: W, access: rw}
  revert_timer_s: {address: 202, type: uint16, unit: s, access: rw}
battery_release:
  - {key: battery_setpoint_w, value: 0x7FFFFFFF}
fail_safe: {kind: revert_timer}
"""


def _with(data: dict, kind: str, **fields) -> dict:
    """``data`` (a site) with ``fields`` set on its device of ``kind``."""
    for dev in data["devices"]:
        if dev["kind"] == kind:
            dev.update(fields)
    return data


def variants_fleet() -> dict:
    return {
        "simulation": {
            "seed": 11,
            "weather": {"cloudiness": 0.0},
            "variants": {
                "p1-pv": {"phases": 1},
                "p1-meter": {"meter_model": 201},
                "p2-pv": {"phases": 2, "base_address": 0, "common_len": 65},
                "p2-meter": {"meter_model": 202},
                "f1-pv": {"models": "float", "phases": 1},
                "f1-meter": {"meter_model": 204, "base_address": 50000},
                "f2-pv": {"models": "float", "phases": 2, "base_address": 50000},
            },
        },
        "sites": [
            site("p1", 31000, battery=False),
            site("p2", 31010, battery=False),
            site("f1", 31020, battery=False),
            site("f2", 31030, battery=False, meter=False),
            _with(site("sma", 31040, battery=False), "pv_inverter", protocol="profile", profile="sma_sunny_boy"),
            _with(
                site("hw", 31050, battery=False, cap=None), "pv_inverter", protocol="profile", profile="huawei_sun2000"
            ),
            _with(site("tb", 31060, cap=None), "battery", protocol="profile", profile="test_battery"),
        ],
    }


@pytest.fixture(scope="module")
def profile_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("profiles")
    for p in PROFILE_DIR.glob("*.yaml"):
        (d / p.name).write_text(p.read_text())
    (d / "test_battery.yaml").write_text(BATTERY_MAP)
    return d


@pytest.fixture(scope="module")
def vfleet(profile_dir):
    f = FleetThread(variants_fleet(), profile_dir=profile_dir)
    try:
        yield f
    finally:
        f.close()


@pytest.fixture
def client(vfleet):
    clients: list[ModbusTcpClient] = []

    def connect(dev_id: str) -> tuple[ModbusTcpClient, int]:
        ep = vfleet.endpoints[dev_id]
        c = ModbusTcpClient(ep.host, port=ep.port, timeout=5)
        assert c.connect()
        clients.append(c)
        return c, ep.unit

    yield connect
    for c in clients:
        c.close()


def scanned(fleet: FleetThread, dev_id: str) -> sclient.SunSpecModbusClientDeviceTCP:
    ep = fleet.endpoints[dev_id]
    d = sclient.SunSpecModbusClientDeviceTCP(slave_id=ep.unit, ipaddr=ep.host, ipport=ep.port, timeout=5)
    d.scan()
    return d


@pytest.mark.parametrize(
    ("dev_id", "model", "base", "phases"),
    [("p1-pv", 101, 40000, 1), ("p2-pv", 102, 0, 2), ("f1-pv", 111, 40000, 1), ("f2-pv", 112, 50000, 2)],
)
def test_single_and_split_phase_inverters_scan_and_match_truth(vfleet, dev_id, model, base, phases):
    vfleet.step(30)
    d = scanned(vfleet, dev_id)
    assert {k for k in d.models if isinstance(k, int)} == {1, model, 120, 121, 122, 123}
    assert d.base_addr == base
    inv = d.models[model][0]
    inv.read()
    truth = vfleet.truth(dev_id)
    assert truth["pv_w"] > 500
    assert inv.W.cvalue == pytest.approx(truth["pv_w"], abs=1.0)
    assert inv.WH.cvalue == pytest.approx(truth["energy_wh"], abs=1.0, rel=1e-7)  # float32 on 11x
    assert inv.A.cvalue == pytest.approx(truth["pv_w"] / 230.0, abs=0.05)  # the total over its phases
    assert inv.AphA.cvalue == pytest.approx(truth["pv_w"] / 230.0 / phases, abs=0.05)
    assert inv.AphC.cvalue is None  # the phases a device lacks read as not implemented
    assert (inv.AphB.cvalue is None) == (phases == 1)


@pytest.mark.parametrize(
    ("dev_id", "model", "phases"), [("p1-meter", 201, 1), ("p2-meter", 202, 2), ("f1-meter", 204, 3)]
)
def test_meters_201_202_204_scan_and_match_truth(vfleet, dev_id, model, phases):
    vfleet.step(30)
    d = scanned(vfleet, dev_id)
    assert {k for k in d.models if isinstance(k, int)} == {1, model}
    m = d.models[model][0]
    m.read()
    truth = vfleet.truth(dev_id)
    assert m.W.cvalue == pytest.approx(truth["grid_w"], abs=1.0)
    assert m.TotWhImp.cvalue == pytest.approx(truth["import_wh"], abs=1.0)
    assert m.TotWhExp.cvalue == pytest.approx(truth["export_wh"], abs=1.0)
    per_phase = [m.WphA.cvalue, m.WphB.cvalue, m.WphC.cvalue]
    assert [w is not None for w in per_phase] == [i < phases for i in range(3)]
    assert sum(w for w in per_phase if w is not None) == pytest.approx(truth["grid_w"], abs=phases * 1.0)


_TYPES = {"int16": "INT16", "uint16": "UINT16", "int32": "INT32", "uint32": "UINT32", "float32": "FLOAT32"}


def _swap_bytes(words: list[int]) -> list[int]:
    return [((w & 0xFF) << 8) | (w >> 8) for w in words]


def read_key(c: ModbusTcpClient, unit: int, regmap: RegisterMap, key: str) -> float | None:
    """Read one key and decode it per the map (SI; None for a not-implemented value)."""
    reg: Register = regmap.registers[key]
    read = c.read_input_registers if reg.table == "input" else c.read_holding_registers
    rr = read(reg.address, count=reg.size, device_id=unit)
    assert not rr.isError(), (key, rr)
    words = _swap_bytes(rr.registers) if regmap.byte_order == "little" else rr.registers
    in_order = words[::-1] if regmap.word_order == "little" else words
    if int.from_bytes(b"".join(w.to_bytes(2, "big") for w in in_order), "big") in reg.not_implemented:
        return None
    raw = c.convert_from_registers(words, getattr(c.DATATYPE, _TYPES[reg.type]), word_order=regmap.word_order)
    value = raw * reg.scale * reg.sign * {"kW": 1000.0, "kWh": 1000.0}.get(reg.unit, 1.0)
    return value / 100.0 if key == "soc" else value


def write_key(c: ModbusTcpClient, unit: int, regmap: RegisterMap, key: str, raw: int) -> object:
    reg = regmap.registers[key]
    words = c.convert_to_registers(raw, getattr(c.DATATYPE, _TYPES[reg.type]), word_order=regmap.word_order)
    if regmap.byte_order == "little":
        words = _swap_bytes(words)
    return c.write_registers(reg.address, words, device_id=unit)


def test_sma_profile_device_serves_its_map_with_truth(vfleet, client):
    sma = load_register_map("sma_sunny_boy")
    vfleet.step(30)
    c, unit = client("sma-pv")
    truth = vfleet.truth("sma-pv")
    assert truth["pv_w"] > 500
    assert read_key(c, unit, sma, "pv_w") == pytest.approx(truth["pv_w"], abs=1.0)
    assert read_key(c, unit, sma, "energy_wh") == pytest.approx(truth["energy_wh"], abs=1.0)
    assert read_key(c, unit, sma, "rating_w") == pytest.approx(truth["rating_w"])
    assert read_key(c, unit, sma, "operating_state") == 307
    assert read_key(c, unit, sma, "pv_limit_pct") == 100
    gap = c.read_holding_registers(30201, count=40, device_id=unit)  # spans unmapped registers, as SMA refuses
    assert isinstance(gap, ExceptionResponse) and gap.exception_code == 2


def test_sma_limit_write_takes_effect_after_a_step(vfleet, client):
    sma = load_register_map("sma_sunny_boy")
    c, unit = client("sma-pv")
    assert not write_key(c, unit, sma, "pv_limit_pct", 10).isError()
    vfleet.step(60)
    truth = vfleet.truth("sma-pv")
    assert truth["limit_w"] == pytest.approx(0.1 * truth["rating_w"])
    assert read_key(c, unit, sma, "pv_w") == pytest.approx(0.1 * truth["rating_w"], abs=1.0)
    assert read_key(c, unit, sma, "pv_limit_pct") == 10
    refused = write_key(c, unit, sma, "pv_limit_pct", 150)
    assert isinstance(refused, ExceptionResponse) and refused.exception_code == 3
    measurement = c.write_registers(30775, [0, 5], device_id=unit)
    assert isinstance(measurement, ExceptionResponse) and measurement.exception_code == 2
    assert not write_key(c, unit, sma, "pv_limit_pct", 100).isError()  # the map's release
    vfleet.step(60)
    assert vfleet.truth("sma-pv")["limit_w"] is None
    assert read_key(c, unit, sma, "pv_w") > 0.5 * truth["rating_w"]


def test_huawei_limit_in_tenths_of_a_percent(vfleet, client):
    hw = load_register_map("huawei_sun2000")
    c, unit = client("hw-pv")
    truth = vfleet.truth("hw-pv")
    assert read_key(c, unit, hw, "wmax_w") == pytest.approx(truth["wmax_w"])
    assert read_key(c, unit, hw, "operating_state") == 0x0200
    assert not write_key(c, unit, hw, "pv_limit_pct", 300).isError()  # 30.0 %
    vfleet.step(60)
    assert read_key(c, unit, hw, "pv_w") == pytest.approx(0.3 * truth["wmax_w"], abs=1.0)
    assert read_key(c, unit, hw, "operating_state") == 0x0201  # power limited
    assert not write_key(c, unit, hw, "pv_limit_pct", 1000).isError()


def test_battery_profile_setpoint_timer_and_release(vfleet, client, profile_dir):
    tb = load_register_map("test_battery", profile_dir)
    c, unit = client("tb-bat")
    assert read_key(c, unit, tb, "soc") == pytest.approx(vfleet.truth("tb-bat")["soc"], abs=0.001)
    assert read_key(c, unit, tb, "battery_setpoint_w") is not None
    assert not write_key(c, unit, tb, "revert_timer_s", 120).isError()
    assert not write_key(c, unit, tb, "battery_setpoint_w", 1500).isError()
    vfleet.step(60)
    truth = vfleet.truth("tb-bat")
    assert truth["battery_w"] == pytest.approx(1500.0) and truth["commanded_w"] == pytest.approx(1500.0)
    assert read_key(c, unit, tb, "battery_w") == pytest.approx(1500.0, abs=1.0)  # vendor sign inverted, kW
    raw = c.read_input_registers(100, count=2, device_id=unit).registers
    assert raw == [0x24FA, 0xFFFF]  # -1.500 kW = 0xFFFFFA24: low word first, each word's low byte first
    assert read_key(c, unit, tb, "battery_setpoint_w") == 1500
    assert read_key(c, unit, tb, "capacity_wh") == pytest.approx(truth["capacity_wh"])
    vfleet.step(61)  # the timer (120 s) expires: back to self-consumption
    assert vfleet.truth("tb-bat")["commanded_w"] is None
    assert read_key(c, unit, tb, "battery_setpoint_w") == 0x7FFFFFFF  # reads as the map's release value
    too_much = write_key(c, unit, tb, "battery_setpoint_w", 99_000)
    assert isinstance(too_much, ExceptionResponse) and too_much.exception_code == 3


def test_sentinel_fault_on_a_profile_device_publishes_the_vendor_nan(vfleet, client):
    sma = load_register_map("sma_sunny_boy")
    c, unit = client("sma-pv")
    vfleet.call(vfleet.host.inject_fault, FaultSpec(device="sma-pv", mode="sentinel"))
    try:
        assert read_key(c, unit, sma, "pv_w") is None
        assert c.read_holding_registers(30775, count=2, device_id=unit).registers == [0x8000, 0]
    finally:
        vfleet.call(vfleet.host.clear_fault, "sma-pv")
    assert read_key(c, unit, sma, "pv_w") is not None


def test_ignore_writes_acknowledges_and_changes_nothing(vfleet, client):
    sma = load_register_map("sma_sunny_boy")
    c, unit = client("sma-pv")
    vfleet.call(vfleet.host.inject_fault, FaultSpec(device="sma-pv", mode="ignore_writes"))
    try:
        before = vfleet.truth("sma-pv")
        assert not write_key(c, unit, sma, "pv_limit_pct", 5).isError()  # acknowledged
        assert read_key(c, unit, sma, "pv_limit_pct") == 100  # the old value reads back
        vfleet.step(60)
        assert vfleet.truth("sma-pv")["limit_w"] is None
        assert read_key(c, unit, sma, "pv_w") == pytest.approx(vfleet.truth("sma-pv")["pv_w"], abs=1.0)
        assert vfleet.truth("sma-pv")["pv_w"] > 0.05 * before["rating_w"] + 100
        # A SunSpec device too: 123 WMaxLimPct written, the old value reads back, nothing changes.
        vfleet.call(vfleet.host.inject_fault, FaultSpec(device="p1-pv", mode="ignore_writes"))
        d = scanned(vfleet, "p1-pv")
        ctl = d.models[123][0]
        ctl.read()
        ctl.WMaxLimPct.cvalue = 5.0
        ctl.WMaxLim_Ena.value = 1
        ctl.write()
        ctl.read()
        assert ctl.WMaxLim_Ena.value == 0 and ctl.WMaxLimPct.cvalue == pytest.approx(100.0)
        vfleet.step(60)
        assert vfleet.truth("p1-pv")["limit_w"] is None
    finally:
        vfleet.call(vfleet.host.clear_fault, "sma-pv")
        vfleet.call(vfleet.host.clear_fault, "p1-pv")


def test_a_profile_of_another_kind_is_refused_with_the_device_named(profile_dir):
    data = {"sites": [_with(site("x", 31100, battery=False), "meter", protocol="profile", profile="sma_sunny_boy")]}
    with pytest.raises(ValueError, match=r"device 'x-meter': profile 'sma_sunny_boy' describes a pv_inverter"):
        FleetHost(validate_config(data), profile_dir=profile_dir)
