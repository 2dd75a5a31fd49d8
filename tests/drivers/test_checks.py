"""`sparcs check-config` on devices: profile kinds, a user's profiles folder, fail-safes (drivers/checks.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from typer.testing import CliRunner

from sparcs.cli import app

PROFILES = Path(__file__).parent / "profiles"


def _fleet(devices: list[dict], **top) -> dict:
    site = {
        "id": "s1",
        "location": {"lat": 51.34, "lon": 12.37},
        "pv": {"kwp": 6.0},
        "battery": {"capacity_kwh": 10, "max_charge_w": 4000, "max_discharge_w": 4000},
        "devices": devices,
    }
    return {"sites": [site], **top}


def _check(tmp_path: Path, data: dict) -> tuple[int, list[str], list[str]]:
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(data))
    run = CliRunner().invoke(app, ["check-config", str(path)])
    return run.exit_code, run.stdout.splitlines(), run.stderr.splitlines()


def test_a_pv_profile_on_a_battery_is_refused_with_a_line_naming_it(tmp_path: Path) -> None:
    devices = [
        {"id": "s1-pv", "kind": "pv_inverter", "port": 1},
        {"id": "s1-bat", "kind": "battery", "port": 2, "protocol": "profile", "profile": "sma_sunny_boy"},
    ]
    code, _out, err = _check(tmp_path, _fleet(devices))
    assert code == 2
    (line,) = err
    assert line == (
        f"{tmp_path / 'fleet.yaml'}: sites[0:s1].devices[1:s1-bat].profile: profile 'sma_sunny_boy' describes a "
        "pv_inverter, not a battery; name a battery profile, or correct the device's kind"
    )


def test_profiles_load_from_the_fleets_own_folder(tmp_path: Path) -> None:
    mine = tmp_path / "my-profiles"
    mine.mkdir()
    shutil.copy(PROFILES / "test_watchdog_pv.yaml", mine)
    devices = [{"id": "s1-pv", "kind": "pv_inverter", "port": 1, "protocol": "profile", "profile": "test_watchdog_pv"}]
    code, out, err = _check(tmp_path, _fleet(devices, profiles_dir="my-profiles"))  # relative to the fleet file
    assert code == 0 and not err and out[-1].endswith("OK (1 sites, 1 devices)"), (out, err)
    code, _out, err = _check(tmp_path, _fleet(devices))  # without the folder the profile is unknown
    assert code == 2 and "profile 'test_watchdog_pv' not found" in err[0] and "sma_sunny_boy" in err[0]
    code, _out, err = _check(tmp_path, _fleet(devices, profiles_dir="nowhere"))
    assert code == 2 and any(line.endswith("nowhere is not a folder; create it or correct the path") for line in err)


def test_a_device_without_fail_safe_is_named_as_monitor_only_with_what_to_write(tmp_path: Path) -> None:
    hw = {"id": "s1-pv", "kind": "pv_inverter", "port": 1, "protocol": "profile", "profile": "huawei_sun2000"}
    code, out, _err = _check(tmp_path, _fleet([hw]))
    assert code == 0
    assert out[0] == (
        f"{tmp_path / 'fleet.yaml'}: sites[0:s1].devices[0:s1-pv]: monitor-only: device s1-pv has no fail-safe "
        "(no revert timer or watchdog), so a limit would stay in force if the controller stopped; to control it "
        "anyway write 'accept_no_fail_safe: true' on device s1-pv"
    )
    code, out, _err = _check(tmp_path, _fleet([hw | {"accept_no_fail_safe": True}]))
    assert code == 0 and "controlled without a fail-safe" in out[0]
    code, out, _err = _check(tmp_path, _fleet([hw | {"control": False}]))
    assert code == 0 and len(out) == 1  # monitor-only by choice: nothing to say


def test_a_watchdog_the_poll_interval_cannot_refresh_is_an_error(tmp_path: Path) -> None:
    kostal = {
        "id": "s1-bat",
        "kind": "battery",
        "port": 1,
        "unit": 71,
        "protocol": "profile",
        "profile": "kostal_plenticore_battery",
    }
    code, _out, err = _check(tmp_path, _fleet([kostal], dispatch={"poll_interval_s": 30}))
    assert code == 2
    assert err[0].endswith(
        "sites[0:s1].devices[0:s1-bat]: its watchdog falls back after 60 s without a heartbeat; "
        "dispatch.poll_interval_s 30 s cannot refresh it in time: set it to at most 21 s"
    )
    code, _out, err = _check(tmp_path, _fleet([kostal], dispatch={"poll_interval_s": 10}))
    assert code == 0, err


def test_start_refuses_a_wrong_kind_profile_with_the_same_line_not_a_traceback(tmp_path: Path) -> None:
    devices = [
        {"id": "s1-pv", "kind": "pv_inverter", "port": 1},
        {"id": "s1-bat", "kind": "battery", "port": 2, "protocol": "profile", "profile": "sma_sunny_boy"},
    ]
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(_fleet(devices)))
    run = subprocess.run(
        [sys.executable, "-m", "sparcs", "run", "--config", str(path), "--data-dir", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.strip() == (
        "sites[0:s1].devices[1:s1-bat].profile: profile 'sma_sunny_boy' describes a pv_inverter, not a battery; "
        "name a battery profile, or correct the device's kind"
    )


def test_a_devices_own_watchdog_interval_is_checked_against_the_poll_interval(tmp_path: Path) -> None:
    sma = {
        "id": "s1-pv",
        "kind": "pv_inverter",
        "port": 1,
        "unit": 3,
        "protocol": "profile",
        "profile": "sma_sunny_boy",
    }
    code, _out, err = _check(tmp_path, _fleet([sma | {"watchdog_s": 20}], dispatch={"poll_interval_s": 10}))
    assert code == 2 and err[0].endswith(
        "its watchdog falls back after 20 s without a heartbeat; dispatch.poll_interval_s 10 s cannot refresh it "
        "in time: set it to at most 7 s"
    )
    hw = {"id": "s1-pv", "kind": "pv_inverter", "port": 1, "protocol": "profile", "profile": "huawei_sun2000"}
    code, _out, err = _check(tmp_path, _fleet([hw | {"watchdog_s": 60}]))
    assert code == 2 and "watchdog_s: device s1-pv's fail-safe is 'none', not a watchdog" in err[0]
