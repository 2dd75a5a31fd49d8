"""`sparcs run` as a subprocess: it serves, stops cleanly on SIGTERM, and after kill -9 a restart brings back
every acknowledged command and the last plan."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
import yaml

from tests.controller.conftest import small_fleet_data
from tests.ports import free_ports

pytestmark = pytest.mark.slow
SPARCS = [sys.executable, "-m", "sparcs"]


def fleet_file(tmp_path: Path) -> Path:
    data = small_fleet_data(2)
    devices = [d for s in data["sites"] for d in s["devices"]]
    *ports, control = free_ports(len(devices) + 1)
    for d, port in zip(devices, ports, strict=True):
        d["port"] = port
    data["simulation"]["control_port"] = control
    data["dispatch"] = {"poll_interval_s": 1, "dispatch_interval_s": 5, "solve_timeout_s": 20}
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


class Running:
    """One `sparcs run` process; reads its start-up lines (URL and token)."""

    def __init__(self, config: Path, data_dir: Path):
        self.port = free_ports(1)[0]
        self.proc = subprocess.Popen(
            [*SPARCS, "run", "--config", str(config), "--port", str(self.port), "--data-dir", str(data_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
            start_new_session=True,  # its own process group, like a shell job: Ctrl-C reaches the group
        )
        self.lines: list[str] = []
        while not any(line.startswith("Stop with Ctrl-C") for line in self.lines):
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"sparcs run ended early: {self.lines} {self.proc.stderr.read()}")
            self.lines.append(line.strip())
        self.token = next(line.split()[-1] for line in self.lines if line.startswith("demo operator token:"))
        self.http = httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}", headers={"Authorization": f"Bearer {self.token}"}, timeout=30
        )

    def wait_for(self, what, timeout_s: float = 60.0):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            got = what()
            if got:
                return got
            time.sleep(0.2)
        raise AssertionError("timed out waiting")

    def close(self) -> None:
        self.http.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        self.proc.stdout.close()
        self.proc.stderr.close()


@pytest.mark.parametrize("how", ["SIGTERM", "Ctrl-C"])
def test_run_serves_and_stops_cleanly(tmp_path, how):
    r = Running(fleet_file(tmp_path), tmp_path / "data")
    try:
        assert r.lines[0].startswith(f"SPARCS controller: http://127.0.0.1:{r.port}/  (dashboard")
        assert r.http.get("/healthz").json() == {"status": "ok"}
        assert r.wait_for(lambda: r.http.get("/readyz").status_code == 200)
        plan = r.wait_for(lambda: r.http.get("/api/v1/plan").json()["plan"])
        assert plan["path"] == "optimal"
        fleet = r.http.get("/api/v1/fleet").json()
        assert fleet["now"]["online"] == fleet["now"]["total"] > 0
        control = next(line.split()[-1] for line in r.lines if line.startswith("simulator control channel:"))
        assert httpx.get(f"{control}/clock").status_code == 200  # the demo's simulators take faults and steps
        children = psutil.Process(r.proc.pid).children(recursive=True)
        if how == "SIGTERM":
            r.proc.send_signal(signal.SIGTERM)
        else:  # a terminal's Ctrl-C: SIGINT to the whole process group, the solver process included
            os.killpg(r.proc.pid, signal.SIGINT)
        assert r.proc.wait(timeout=60) == 0
        assert r.proc.stdout.read().strip().endswith("stopped")
        err = r.proc.stderr.read()
        assert "Traceback" not in err, err
        psutil.wait_procs(children, timeout=10)
        assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    finally:
        r.close()


def test_restart_after_kill_9_brings_back_commands_and_the_last_plan(tmp_path):
    config, data_dir = fleet_file(tmp_path), tmp_path / "data"
    r = Running(config, data_dir)
    try:
        plan = r.wait_for(lambda: r.http.get("/api/v1/plan").json()["plan"])
        sites = [s["id"] for s in r.http.get("/api/v1/sites").json()]
        expires = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)).isoformat()
        acked = []
        # pause first, so that no new plan replaces the last one before the kill or after the restart
        acked.append(r.http.post("/api/v1/commands/pause", json={"reason": "kill test"}))
        plan = r.http.get("/api/v1/plan").json()["plan"]
        acked.append(r.http.post("/api/v1/commands/stage", json={"stage": "K3", "expires_at": expires}))
        acked.append(
            r.http.post("/api/v1/commands/stage", json={"stage": "K1", "sites": sites[:1], "expires_at": expires})
        )
        acked.append(r.http.post("/api/v1/commands/para14a", json={"expires_at": expires}))
        assert all(a.status_code == 201 for a in acked), [a.text for a in acked]
        ids = sorted(a.json()["command"]["id"] for a in acked)
        os.kill(r.proc.pid, signal.SIGKILL)  # right after the last acknowledgement
        r.proc.wait(timeout=30)
    finally:
        r.close()

    again = Running(config, data_dir)
    try:
        active = again.http.get("/api/v1/commands").json()
        assert sorted(c["id"] for c in active) == ids
        assert again.http.get("/api/v1/fleet").json()["paused"] is True
        back = again.http.get("/api/v1/plan").json()["plan"]
        assert back["start"] == plan["start"] and back["sites"].keys() == plan["sites"].keys()
        for sid, series in plan["sites"].items():  # the stored plan keeps float32 (docs/storage.md "Plans")
            for key, values in series.items():
                assert back["sites"][sid][key] == pytest.approx(values, rel=1e-6, abs=1e-3), (sid, key)
        caps = {c["site"]: c for c in again.http.get("/api/v1/caps").json()["sites"]}
        assert caps[sites[0]]["stage"] == "K1" and caps[sites[1]]["stage"] == "K3"
        assert all(c["para14a_limit_w"] is not None for c in caps.values())
        audit = [a["action"] for a in again.http.get("/api/v1/audit").json()]
        assert audit[:4] == ["para14a", "stage", "stage", "pause"]
    finally:
        again.close()
