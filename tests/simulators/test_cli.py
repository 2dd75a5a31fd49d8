"""`sparcs simulate` as a user runs it: bad configs refused before anything starts; --json; SIGTERM."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from sparcs.simulators.fleetgen import synthetic_fleet

SPARCS = [sys.executable, "-c", "from app.cli import main; main()"]


def with_free_ports(data: dict) -> dict:
    """Give every endpoint (a device, or a gateway's shared port) a distinct port that is free right now."""
    held: list[socket.socket] = []

    def free_port() -> int:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        held.append(s)  # kept bound until all are chosen, so the OS cannot hand out one twice
        return s.getsockname()[1]

    try:
        fresh: dict[int, int] = {}
        for site in data["sites"]:
            for dev in site["devices"]:
                dev["port"] = fresh.setdefault(dev["port"], free_port())
        data["simulation"]["control_port"] = free_port()
    finally:
        for s in held:
            s.close()
    return data


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def kwp_negative(data: dict) -> str:
    data["sites"][0]["pv"]["kwp"] = -5
    return "sites[0:syn-00000].pv.kwp: Input should be greater than 0"


def unknown_field(data: dict) -> str:
    data["sites"][0]["pv"]["colour"] = "blue"
    return "sites[0:syn-00000].pv.colour: unknown field"


def soc_reversed(data: dict) -> str:
    data["sites"][1]["battery"] = {"capacity_kwh": 5, "max_charge_w": 1000, "max_discharge_w": 1000,
                                   "soc_min": 0.9, "soc_max": 0.2, "soc_initial": 0.5}  # fmt: skip
    return "sites[1:syn-00001].battery: soc_min (0.9) must be below soc_max (0.2)"


def port_twice(data: dict) -> str:
    data["sites"][1]["devices"][0]["port"] = data["sites"][2]["devices"][0]["port"]
    return "is used twice"


def unknown_profile(data: dict) -> str:
    data["sites"][0]["devices"][0] |= {"protocol": "profile", "profile": "no_such_vendor"}
    return "profile 'no_such_vendor' not found"


def run_simulate(tmp_path: Path, data: dict) -> subprocess.CompletedProcess:
    path = write(tmp_path, data)
    return subprocess.run([*SPARCS, "simulate", "--config", str(path)], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("breaks", [kwp_negative, unknown_field, soc_reversed, port_twice, unknown_profile])
def test_bad_config_exits_2_naming_the_field_and_starts_nothing(tmp_path, breaks):
    data = with_free_ports(synthetic_fleet(3, seed=1, port_start=20000))
    port = data["sites"][0]["devices"][0]["port"]
    expected = breaks(data)
    proc = run_simulate(tmp_path, data)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    assert any(expected in line for line in proc.stderr.splitlines()), proc.stderr
    with socket.socket() as s:  # nothing listens on the first device port
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_several_errors_give_one_line_each(tmp_path):
    data = with_free_ports(synthetic_fleet(3, seed=1, port_start=20000))
    expected = [kwp_negative(data), unknown_field(data), soc_reversed(data)]
    proc = run_simulate(tmp_path, data)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 3
    for line, want in zip(lines, expected, strict=True):
        assert want in line


def test_a_device_port_in_use_exits_2_naming_the_device(tmp_path):
    data = with_free_ports(synthetic_fleet(2, seed=1, port_start=20000))
    taken = data["sites"][1]["devices"][0]
    with socket.socket() as s:
        s.bind(("127.0.0.1", taken["port"]))
        s.listen()
        proc = run_simulate(tmp_path, data)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith(f"{taken['id']}: cannot listen on 127.0.0.1:{taken['port']}")
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_json_lists_endpoints_and_sigterm_stops_cleanly(tmp_path):
    data = with_free_ports(synthetic_fleet(4, seed=2, port_start=20000, gateway_every=2))
    proc = subprocess.Popen([*SPARCS, "simulate", "--config", str(write(tmp_path, data)), "--json", "--speed", "60"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        n_devices = sum(len(s["devices"]) for s in data["sites"])
        lines = [json.loads(proc.stdout.readline()) for _ in range(n_devices + 1)]
        endpoints, control = lines[:-1], lines[-1]
        assert {tuple(sorted(e)) for e in endpoints} == {("host", "id", "kind", "port", "site", "unit")}
        assert {e["kind"] for e in endpoints} == {"pv_inverter", "battery", "meter"}
        assert control == {"control": f"http://127.0.0.1:{data['simulation']['control_port']}"}
        assert len(httpx.get(control["control"] + "/devices", timeout=10).json()) == n_devices
        with socket.create_connection(("127.0.0.1", endpoints[0]["port"]), timeout=5):
            pass
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert "Traceback" not in proc.stderr.read()
        time.sleep(0.1)
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", endpoints[0]["port"])) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
