"""`sparcs bench poll`: JSON with the documented fields, simulators in a child process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sparcs.drivers.bench import add_latency, add_silent, trim_fleet
from sparcs.simulators.fleetgen import synthetic_fleet

FIELDS = {
    "devices",
    "devices_per_s",
    "cycle_p50_s",
    "cycle_p99_s",
    "cpu_s_per_device",
    "bare_devices_per_s",
    "ratio_to_bare",
    "silent_fraction",
}


def test_trim_and_silence_a_generated_fleet() -> None:
    fleet = trim_fleet(synthetic_fleet(10, 3), 7)
    ids = [d["id"] for s in fleet["sites"] for d in s["devices"]]
    assert len(ids) == 7 and all(s["devices"] for s in fleet["sites"])
    silent = add_silent(fleet, 0.3, seed=1)
    assert len(silent) == 2 and {f["device"] for f in fleet["simulation"]["faults"]} == set(silent)
    add_latency(fleet, 100.0, silent)
    slow = [f for f in fleet["simulation"]["faults"] if f["mode"] == "slow"]
    assert {f["device"] for f in slow} == set(ids) - set(silent) and {f["delay_s"] for f in slow} == {0.1}


@pytest.mark.slow
def test_bench_poll_prints_json_with_every_field() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "sparcs",
            "bench",
            "poll",
            "--devices",
            "8",
            "--cycles",
            "2",
            "--silent",
            "0.25",
            "--latency-ms",
            "20",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result.keys() >= FIELDS
    assert result["devices"] == 8 and result["silent_devices"] == 2 and result["devices_read_ok"] == 6
    assert result["latency_ms"] == 20
    assert result["devices_per_s"] > 0 and result["bare_devices_per_s"] > 0 and result["cycle_p99_s"] > 0
