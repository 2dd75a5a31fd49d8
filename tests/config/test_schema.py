"""The fleet schema: the demo file validates, and bad files are refused with one line per error."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sparcs.config.schema import CONFIG_DIR, ConfigError, load_config, validate_config

DEMO = CONFIG_DIR / "demo.yaml"


def demo_data() -> dict:
    return yaml.safe_load(DEMO.read_text())


def errors_of(data: dict) -> list[str]:
    with pytest.raises(ConfigError) as info:
        validate_config(data)
    return info.value.errors


def test_demo_fleet_is_valid_and_large_enough():
    cfg = load_config(DEMO)
    assert len(cfg.sites) >= 50
    assert sum(s.battery is not None for s in cfg.sites) > len(cfg.sites) / 2
    assert {s.grid.feed_in_cap_pct for s in cfg.sites} == {60, 70, None}
    assert len({(s.pv.tilt_deg, s.pv.azimuth_deg) for s in cfg.sites}) > 10


def test_each_error_is_one_line_naming_its_path():
    data = demo_data()
    site = data["sites"][0]
    site["pv"]["kwp"] = -3
    site["pv"]["colour"] = "blue"
    site["battery"] = {"capacity_kwh": 5, "max_charge_w": 2000, "max_discharge_w": 2000, "soc_min": 0.9, "soc_max": 0.2}
    lines = errors_of(data)
    sid = site["id"]
    assert f"sites[0:{sid}].pv.kwp: Input should be greater than 0" in lines
    assert f"sites[0:{sid}].pv.colour: unknown field; remove it or check its spelling" in lines
    assert any(line.startswith(f"sites[0:{sid}].battery: soc_min (0.9) must be below soc_max") for line in lines)
    assert len(lines) == 3


def test_a_port_used_twice_is_refused_but_a_gateway_is_not():
    data = demo_data()
    a, b = data["sites"][0], data["sites"][1]
    b["devices"][0]["port"] = a["devices"][0]["port"]
    lines = errors_of(data)
    assert len(lines) == 1 and lines[0].startswith(f"(file): port 127.0.0.1:{a['devices'][0]['port']} is used twice")

    gateway = copy.deepcopy(demo_data())
    devs = gateway["sites"][0]["devices"]
    for unit, dev in enumerate(devs, start=1):
        dev["port"], dev["unit"] = 16000, unit
    validate_config(gateway)


def test_timestamps_need_an_offset():
    data = demo_data()
    data["simulation"]["start"] = "2026-06-21T00:00:00"
    (line,) = errors_of(data)
    assert line.startswith("simulation.start:") and "needs a UTC offset" in line


def test_check_config_command_lists_errors_and_exits_2(tmp_path: Path):
    data = demo_data()
    data["sites"][2]["pv"]["kwp"] = 0
    data["dispatch"]["pol_interval_s"] = 5
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    run = subprocess.run([sys.executable, "-m", "sparcs", "check-config", str(bad)], capture_output=True, text=True)
    assert run.returncode == 2
    err = run.stderr.strip().splitlines()
    assert len(err) == 2
    assert any(".pv.kwp: Input should be greater than 0" in line for line in err)
    assert any("dispatch.pol_interval_s: unknown field" in line for line in err)
    assert "Traceback" not in run.stderr


def test_check_config_names_an_unknown_vendor_profile_with_the_known_ones(tmp_path: Path):
    data = demo_data()
    site_i, site = next((i, s) for i, s in enumerate(data["sites"]) if any(d.get("profile") for d in s["devices"]))
    dev_i, dev = next((j, d) for j, d in enumerate(site["devices"]) if d.get("profile"))
    dev["profile"] = "sma_sunny_bo"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    run = subprocess.run([sys.executable, "-m", "sparcs", "check-config", str(bad)], capture_output=True, text=True)
    assert run.returncode == 2
    (line,) = run.stderr.strip().splitlines()
    assert line.startswith(f"{bad}: sites[{site_i}:{site['id']}].devices[{dev_i}:{dev['id']}].profile: ")
    assert "profile 'sma_sunny_bo' not found" in line and "sma_sunny_boy" in line


def test_check_config_names_an_unknown_protocol_with_the_known_ones(tmp_path: Path):
    data = demo_data()
    site = data["sites"][1]
    site["devices"][0]["protocol"] = "sunspek"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    run = subprocess.run([sys.executable, "-m", "sparcs", "check-config", str(bad)], capture_output=True, text=True)
    assert run.returncode == 2
    (line,) = run.stderr.strip().splitlines()
    dev_id = site["devices"][0]["id"]
    assert line == (
        f"{bad}: sites[1:{site['id']}].devices[0:{dev_id}].protocol: unknown protocol 'sunspek'; "
        "known protocols: profile, sunspec"
    )


def test_the_schema_leaves_protocol_names_to_the_drivers_registry():
    data = demo_data()
    data["sites"][0]["devices"][0]["protocol"] = "mqtt-edge"
    assert validate_config(data).sites[0].devices[0].protocol == "mqtt-edge"
    data["sites"][0]["devices"][0]["protocol"] = "no spaces"
    (line,) = errors_of(data)
    assert line.startswith(f"sites[0:{data['sites'][0]['id']}].devices[0:") and ".protocol: String should match" in line
