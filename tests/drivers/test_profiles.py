"""Profile driver: the shipped vendor maps validate, and a profile device is read and written over TCP."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.schema import DispatchConfig, validate_config
from drivers.poller import FleetPoller
from drivers.profiles import PROFILE_DIR, Profile, ProfileError, load_profile, load_profile_file
from drivers.scan import format_scan, run_scan
from drivers.writer import Setpoint, SetpointWriter
from tests.drivers.register_server import RegisterServer


class Clock:
    def __init__(self, t: float = 1_780_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def _image(p: Profile, values: dict[str, float]) -> dict[int, int]:
    """A register map serving ``values`` (SI) at the profile's addresses."""
    regs: dict[int, int] = {}
    for key, reg in p.registers.items():
        for i, w in enumerate(p.encode(key, values.get(key, 0.0))):
            regs[reg.address + i] = w
    return regs


@pytest.mark.parametrize("path", sorted(PROFILE_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_profiles_validate(path: Path) -> None:
    p = load_profile_file(path)
    assert p.name == path.stem
    assert "pv_w" in p.registers and ("pv_limit_pct" in p.registers or "pv_limit_w" in p.registers)
    assert p.pv_limit_release, "a PV profile must say how to lift our limit"


def test_profile_errors_name_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\nvendor: x\ndevices: x\nsource: x\nkind: pv_inverter\n"
        "registers:\n"
        "  pv_w: {address: 1, type: int32, unit: Wh}\n"
        "  pv_limit_pct: {address: 3, type: uint16, unit: '%'}\n"
        "  pv_pwr: {address: 5, type: int16}\n"
        "  energy_wh: {address: 7, type: int128, unit: Wh}\n"
        "pv_limit_release: [{key: nope, value: 1}]\n"
    )
    with pytest.raises(ProfileError) as err:
        load_profile_file(bad)
    assert "registers.energy_wh.type" in str(err.value)  # a type error stops before the consistency checks
    bad.write_text(bad.read_text().replace("int128", "uint32"))
    with pytest.raises(ProfileError) as err:
        load_profile_file(bad)
    text = str(err.value)
    assert "registers.pv_w.unit: 'Wh' is not one of ['W', 'kW']" in text
    assert "registers.pv_limit_pct.access: a control register must be 'rw'" in text
    assert "registers.pv_pwr: unknown key" in text
    assert "pv_limit_release[0].key: 'nope' is not in registers" in text
    with pytest.raises(ProfileError, match=r"known profiles: .*sma_sunny_boy"):
        load_profile("no_such_vendor")


def test_decode_encode_orders_and_sentinels() -> None:
    p = Profile.model_validate(
        {
            "name": "t",
            "vendor": "t",
            "devices": "t",
            "source": "t",
            "kind": "battery",
            "word_order": "little",
            "registers": {
                "battery_w": {"address": 0, "type": "int32", "unit": "W", "sign": -1},
                "soc": {"address": 2, "type": "uint16", "scale": 0.1, "unit": "%", "not_implemented": [0xFFFF]},
                "energy_wh": {"address": 3, "type": "uint32", "scale": 0.01, "unit": "kWh"},
            },
        }
    )
    regs = p.encode("battery_w", -1500.0)
    assert regs == [1500, 0]  # vendor sign inverted (charging positive), low word first
    assert p.decode("battery_w", regs) == -1500.0
    assert p.decode("soc", [875]) == pytest.approx(0.875)
    assert p.decode("soc", [0xFFFF]) is None
    assert p.decode("energy_wh", p.encode("energy_wh", 12340.0)) == pytest.approx(12340.0)  # 10 Wh resolution
    assert p.blocks() == [("holding", 0, 5, ["battery_w", "soc", "energy_wh"])]


@pytest.fixture
async def sma():
    p = load_profile("sma_sunny_boy")
    img = _image(p, {"operating_state": 307, "rating_w": 5000, "energy_wh": 123456, "pv_w": 3210, "pv_limit_pct": 100})
    clamp = {"on": False}

    def on_write(addr: int, values: list[int]) -> list[int]:
        # A device that silently caps the normalized limit at 50 % (as a grid-operator setting would).
        if clamp["on"] and addr == 40016:
            return [min(values[0], 50)]
        return values

    server = RegisterServer({3: img}, on_write=on_write)
    await server.start()
    cfg = validate_config(
        {
            "sites": [
                {
                    "id": "s1",
                    "location": {"lat": 51.3, "lon": 12.4},
                    "pv": {"kwp": 5.0},
                    "devices": [
                        {
                            "id": "sb",
                            "kind": "pv_inverter",
                            "port": server.port,
                            "unit": 3,
                            "protocol": "profile",
                            "profile": "sma_sunny_boy",
                        },
                    ],
                }
            ]
        }
    )
    clock = Clock()
    poller = FleetPoller(cfg.devices(), DispatchConfig(), clock)
    try:
        yield server, poller, clock, clamp
    finally:
        await poller.close()
        await server.stop()


async def test_profile_device_reads_values_in_si(sma) -> None:
    server, poller, _, _ = sma
    t = (await poller.poll_once())["sb"]
    v = {k: r.value for k, r in t.values.items()}
    assert t.status == "online"
    assert v["pv_w"] == 3210 and v["energy_wh"] == 123456 and v["rating_w"] == 5000 and v["operating_state"] == 307
    assert v["wmax_w"] == 5000 and t.values["pv_limit_w"].quality == "good" and v["pv_limit_w"] is None
    await server.set(3, 30775, [0x8000, 0x0000])  # SMA NaN: no value at night
    t = (await poller.poll_once())["sb"]
    assert t.values["pv_w"].quality == "missing" and t.values["pv_w"].value is None


async def test_profile_limit_write_release_and_mismatch(sma) -> None:
    server, poller, clock, clamp = sma
    await poller.poll_once()
    writer = SetpointWriter(poller, DispatchConfig(), clock)
    r = (await writer.apply({"sb": Setpoint(pv_limit_w=3000)}))["sb"]
    assert r.ok and r.action == "limit" and r.written_w == 3000 and r.readback_w == pytest.approx(3000)
    assert await server.get(3, 40016, 1) == [60]
    r = (await writer.apply({"sb": Setpoint(pv_limit_w=None)}))["sb"]
    assert r.ok and r.action == "release" and await server.get(3, 40016, 1) == [100]
    clamp["on"] = True
    r = (await writer.apply({"sb": Setpoint(pv_limit_w=4000)}))["sb"]
    assert not r.ok and r.mismatch and "40016" in r.detail and r.readback_w == pytest.approx(2500)


async def test_scan_with_a_profile_lists_registers(sma) -> None:
    server, _, _, _ = sma
    report = await run_scan("127.0.0.1", server.port, 3, profile="sma_sunny_boy")
    points = report["models"][0]["points"]
    assert points["pv_w"] == {"value": 3210.0, "units": "W", "address": 30775, "access": "R"}
    assert points["pv_limit_pct"]["access"] == "RW"
    assert "pv_w                   3210 W" in format_scan(report)
