"""`sparcs run` as a subprocess for the dashboard and Prometheus tests, and the checks for external tools.

The fleet is a few demo sites with one device offline from the start (a stale device, its alarm), on a
sim clock fixed to a summer noon so the chart shows PV whenever the tests run. The API, the simulators
and every tool the tests start listen on 127.0.0.1 only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml

from tests.controller.conftest import small_fleet_data
from tests.ports import free_ports

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
SPARCS = [sys.executable, "-m", "sparcs"]
SIM_START = "2026-06-21T10:00:00+00:00"  # 12:00 in Leipzig
OFFLINE_DEVICE_SITE = 2  # index of the site whose PV inverter is offline
GROUP = "feeder-1"  # a group of the first two sites
T = TypeVar("T")


def require_tool(path: str, package: str) -> str:
    """The tool's path; if it is missing, fail under CI (CI=true) and skip only on a developer's machine."""
    found = shutil.which(path)
    if found:
        return found
    message = f"{path} is not installed: install Debian's '{package}' package (it is listed in .ci/apt-packages)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def fleet_file(directory: Path, n_sites: int = 4) -> Path:
    data = small_fleet_data(n_sites)
    devices = [d for s in data["sites"] for d in s["devices"]]
    for d, port in zip(devices, free_ports(len(devices)), strict=True):
        d["port"] = port
    offline = next(d["id"] for d in data["sites"][OFFLINE_DEVICE_SITE]["devices"] if d["kind"] == "pv_inverter")
    data["simulation"]["start"] = SIM_START
    data["simulation"]["faults"] = [{"device": offline, "mode": "offline"}]
    data["dispatch"] = {"poll_interval_s": 2, "solve_timeout_s": 30}
    data["storage"] = {"telemetry_resolution_s": 10}
    data["groups"] = [
        {"id": GROUP, "name": "Feeder 1", "kind": "feeder", "sites": [s["id"] for s in data["sites"][:2]]}
    ]
    path = directory / "fleet.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def wait_for(what: Callable[[], T], timeout_s: float = 60.0, message: str = "condition") -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        got = what()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {message}")
        time.sleep(0.25)


class LiveController:
    """One `sparcs run` with the demo operator token it prints and a viewer token made with `sparcs token add`."""

    def __init__(self, directory: Path, config: Path | None = None, start_timeout_s: float = 90.0):
        """``config``: the fleet file (default: :func:`fleet_file`'s demo sites with one offline device)."""
        self.config = config or fleet_file(directory)
        self.data_dir = directory / "data"
        faults = yaml.safe_load(self.config.read_text())["simulation"].get("faults") or [{"device": None}]
        self.offline_device = faults[0]["device"]
        self.viewer_name = "vera-viewer"
        self.viewer_token = self._sparcs("token", "add", self.viewer_name, "--role", "viewer").strip()
        self.port = free_ports(1)[0]
        self.url = f"http://127.0.0.1:{self.port}"
        # its log goes to a file: a pipe nobody reads would stop a talkative run once it is full
        self.log = directory / "run.err"
        self._log = self.log.open("w")
        self.proc = subprocess.Popen(
            [*SPARCS, "run", "--config", str(self.config), "--port", str(self.port), "--data-dir", str(self.data_dir)],
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            cwd=REPO,
        )
        try:
            self._started(start_timeout_s)
        except BaseException:  # a timeout or an interrupt too: never leave the run behind
            self.close()
            raise

    def _started(self, timeout_s: float) -> None:
        lines: list[str] = []
        while not any(line.startswith("Stop with Ctrl-C") for line in lines):
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"sparcs run ended early: {lines} {self.log.read_text()[-2000:]}")
            lines.append(line.strip())
        self.operator_name = "demo-operator"
        self.operator_token = next(x.split()[-1] for x in lines if x.startswith("demo operator token:"))
        self.http = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.operator_token}"}, timeout=120
        )
        # the plan's totals, not the plan: a few KB at any fleet size
        wait_for(lambda: self.http.get("/api/v1/plan/totals").json()["plan"], timeout_s, "the first plan")
        wait_for(lambda: self.http.get("/readyz").status_code == 200, 60, "/readyz")

    def _sparcs(self, *args: str) -> str:
        done = subprocess.run(
            [*SPARCS, *args, "--data-dir", str(self.data_dir)], capture_output=True, text=True, cwd=REPO, check=False
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def get(self, path: str, **params: Any) -> Any:
        r = self.http.get(path, params=params)
        r.raise_for_status()
        return r.json()

    def close(self) -> None:
        if hasattr(self, "http"):
            self.http.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self.proc.stdout.close()
        self._log.close()
