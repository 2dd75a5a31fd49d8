"""Profile driver: the shipped vendor maps validate, errors name the field, the codec round-trips.

Reading and writing profile devices over TCP runs against the simulator in test_variants_integration.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sparcs.drivers.profiles import PROFILE_DIR, Profile, ProfileError, load_profile, load_profile_file


@pytest.mark.parametrize("path", sorted(PROFILE_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_profiles_validate(path: Path) -> None:
    p = load_profile_file(path)
    assert p.name == path.stem
    if p.kind == "pv_inverter":
        assert "pv_w" in p.registers and ("pv_limit_pct" in p.registers or "pv_limit_w" in p.registers)
        assert p.pv_limit_release, "a PV profile must say how to lift our limit"
    elif p.kind == "battery":
        assert {"battery_w", "soc"} <= set(p.registers)
    elif p.kind == "hybrid":  # PV mapped or derived (inverter output less battery, or the strings)
        assert {"battery_w", "soc"} <= set(p.registers)
        assert p.registers.keys() & {"pv_w", "inverter_w", "mppt_1_dc_w"}
        assert p.battery_release, "a hybrid profile must say how to hand the battery back"
    else:
        assert "grid_w" in p.registers and p.fail_safe.kind == "none"


def test_shipped_profiles_cover_the_field() -> None:
    """Ten vendor families at least, batteries and meters beside PV inverters."""
    kinds = [load_profile_file(p).kind for p in PROFILE_DIR.glob("*.yaml")]
    assert len(kinds) >= 10 and kinds.count("battery") >= 3 and kinds.count("hybrid") >= 3
    assert kinds.count("meter") >= 2 and kinds.count("pv_inverter") >= 2


def _pv_map(**extra) -> dict:
    return {
        "name": "t",
        "vendor": "t",
        "devices": "t",
        "source": "t",
        "kind": "pv_inverter",
        "registers": {
            "pv_w": {"address": 0, "type": "int32", "unit": "W"},
            "pv_limit_pct": {"address": 2, "type": "uint16", "unit": "%", "access": "rw"},
        },
    } | extra


def test_every_profile_declares_its_fail_safe() -> None:
    with pytest.raises(ValueError, match="fail_safe"):
        Profile.model_validate(_pv_map())
    with pytest.raises(ValueError, match="'revert_timer' needs a revert_timer_s register"):
        Profile.model_validate(_pv_map(fail_safe={"kind": "revert_timer"}))
    with pytest.raises(ValueError, match="a watchdog needs its interval"):
        Profile.model_validate(_pv_map(fail_safe={"kind": "watchdog", "heartbeat": "pv_limit_pct"}))
    with pytest.raises(ValueError, match="heartbeat register in registers"):
        Profile.model_validate(_pv_map(fail_safe={"kind": "watchdog", "interval_s": 60, "heartbeat": "nope"}))
    ok = Profile.model_validate(_pv_map(fail_safe={"kind": "watchdog", "interval_s": 60, "heartbeat": "pv_limit_pct"}))
    assert ok.fail_safe.interval_s == 60


def test_profile_errors_name_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\nvendor: x\ndevices: x\nsource: x\nkind: pv_inverter\n"
        "fail_safe: {kind: none}\n"
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
            "fail_safe": {"kind": "none"},
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


def _hybrid(registers: dict, **extra) -> Profile:
    base = {"name": "t", "vendor": "t", "devices": "t", "source": "t", "kind": "hybrid", "fail_safe": {"kind": "none"}}
    return Profile.model_validate(base | extra | {"registers": registers})


def test_a_scale_factor_register_and_direction_bits_apply_to_the_values_read() -> None:
    p = _hybrid(
        {
            "inverter_w": {"address": 10, "type": "int16", "unit": "W", "scale_factor": 11},
            "battery_status": {"address": 0, "type": "uint16"},
            "battery_w": {
                "address": 1,
                "type": "uint16",
                "unit": "W",
                "negative_if": {"key": "battery_status", "mask": 2},
            },
        }
    )
    assert p.blocks() == [("holding", 0, 2, ["battery_status", "battery_w"]), ("holding", 10, 2, ["inverter_w"])]
    seen = {"holding": {0: 0b010, 1: 1500, 10: 432, 11: 0xFFFF}, "input": {}}  # sf -1; bit 1: charging
    assert p.values_from(seen) == {"inverter_w": pytest.approx(43.2), "battery_status": 2.0, "battery_w": -1500.0}
    seen["holding"][0] = 0b100  # discharging
    assert p.values_from(seen)["battery_w"] == 1500.0
    seen["holding"][11] = 0x8000  # a not-implemented scale factor: no value
    assert p.values_from(seen)["inverter_w"] is None


def test_command_and_unsigned_power_need_their_registers_together() -> None:
    command = {"address": 0, "type": "uint16", "access": "rw"}
    with pytest.raises(ValueError, match="battery_commands: give the battery_command register and its values"):
        _hybrid(
            {
                "battery_command": command,
                "battery_power_w": {"address": 1, "type": "uint16", "unit": "W", "access": "rw"},
            }
        )
    with pytest.raises(ValueError, match="command \\+ unsigned power needs battery_power_w"):
        _hybrid({"battery_command": command}, battery_commands={"charge": 1, "discharge": 2, "stop": 3})
    with pytest.raises(ValueError, match="scale_factor and negative_if are for read-only registers"):
        _hybrid({"pv_limit_w": {"address": 0, "type": "uint16", "unit": "W", "access": "rw", "scale_factor": 1}})
