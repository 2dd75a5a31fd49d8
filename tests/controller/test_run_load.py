"""`sparcs run` under API load: many clients pulling the large answers, slow clients holding
connections, while four hundred simulated devices are polled over TCP. Polling keeps its cadence and
the data stays fresh; an operator command sent through the API during the load lands (201, audit
entry, in force at once) and survives kill -9.

The clients run niced, as the API does: they stand for other machines. Bounds are judged generously
(counts of polls, gaps between polls and data age against /readyz's own limit), never tight timing.
"""

from __future__ import annotations

import datetime as dt
import itertools
import multiprocessing
import os
import signal
import socket
import sqlite3
import time
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from sparcs.bench_load import clients_main
from sparcs.simulators.fleetgen import synthetic_fleet
from tests.controller.test_run import Running
from tests.ports import free_ports

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
POLL_S = 2.0
LOAD_S = 30.0
SITES = 150


def big_fleet_file(tmp_path: Path) -> Path:
    data = synthetic_fleet(SITES, seed=3)
    devices = [d for s in data["sites"] for d in s["devices"]]
    for d, port in zip(devices, free_ports(len(devices)), strict=True):
        d["port"] = port
    data["simulation"] = {"speed": 1.0}
    data["dispatch"] = {"poll_interval_s": POLL_S, "dispatch_interval_s": 3600, "solve_timeout_s": 30}
    data["storage"] = {"telemetry_resolution_s": 1}  # every poll leaves its fleet row: the test reads the cadence
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def polls(r: Running) -> float:
    text = httpx.get(f"http://127.0.0.1:{r.port}/metrics", timeout=60).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "sparcs_poll_cycle_duration_seconds_count":
                return s.value
    raise AssertionError("no poll count in the metrics")


def poll_times(data_dir: Path, since: float) -> list[float]:
    """When the control process polled (its fleet history rows, Unix s) since ``since``."""
    with sqlite3.connect(f"file:{data_dir / 'sparcs.db'}?mode=ro", uri=True) as db:
        return [ts for (ts,) in db.execute("SELECT ts FROM fleet WHERE ts >= ? ORDER BY ts", (since,))]


def slow_clients(port: int, n: int) -> list[socket.socket]:
    """Connections that send half a request and then nothing, and ones that never read their answer."""
    held = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        if i % 2:
            s.sendall(b"GET /api/v1/devices HTTP/1.1\r\nHost: x\r\n")  # the headers never end
        else:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(b"GET /api/v1/devices HTTP/1.1\r\nHost: x\r\n\r\n" * 20)  # pipelined, never read
        held.append(s)
    return held


def test_api_load_does_not_delay_polling_and_a_command_sent_under_load_lands(tmp_path):
    config, data_dir = big_fleet_file(tmp_path), tmp_path / "data"
    r = Running(config, data_dir)
    held: list[socket.socket] = []
    try:
        r.wait_for(lambda: r.http.get("/readyz").status_code == 200, timeout_s=180)
        r.wait_for(lambda: (n := r.http.get("/api/v1/fleet").json()["now"]) and n["online"] == n["total"], 120)
        ctx = multiprocessing.get_context("spawn")
        answer, theirs = ctx.Pipe(duplex=False)
        load = ctx.Process(target=clients_main, args=(str(r.http.base_url), r.token, 48, 100.0, LOAD_S, 10, theirs))
        load.start()
        theirs.close()
        assert answer.poll(120) and answer.recv() == "go"  # the clients run from now on
        polls_before = polls(r)
        t0, wall0 = time.monotonic(), time.time()
        held = slow_clients(r.port, 40)
        ages = []
        monitor = httpx.Client(base_url=str(r.http.base_url), headers=r.http.headers, timeout=60)
        expires = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
        acked = None
        while time.monotonic() - t0 < LOAD_S:
            fleet = monitor.get("/api/v1/fleet").json()
            ages.append(fleet["data_age_s"])
            if acked is None and time.monotonic() - t0 > LOAD_S / 2:
                acked = monitor.post("/api/v1/commands/stage", json={"stage": "K2", "expires_at": expires})
                assert acked.status_code == 201, acked.text
                cid = acked.json()["command"]["id"]
                assert cid in [c["id"] for c in monitor.get("/api/v1/commands").json()]  # in force at once
                assert all(c["stage"] == "K2" for c in monitor.get("/api/v1/caps").json()["sites"])
            time.sleep(0.25)
        elapsed = time.monotonic() - t0
        polled = polls(r) - polls_before
        assert answer.poll(120), "the load clients did not report"
        samples = answer.recv()
        load.join(30)
        monitor.close()
        assert sum(len(v) for v in samples.latencies_ms.values()) > 100  # the API was under load and answered
        # Polling kept its cadence: at least two thirds of the polls due, none late by a poll interval.
        assert polled >= (elapsed / POLL_S) * 2 / 3, (polled, elapsed)
        times = poll_times(data_dir, wall0)
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert max(gaps) <= 3 * POLL_S, gaps  # no gap in the polls /readyz would call stale, as the store shows
        assert max(ages) <= 3 * POLL_S, ages  # and the API never showed data /readyz would call stale
        audit = r.http.get("/api/v1/audit").json()
        assert audit[0]["action"] == "stage" and audit[0]["params"]["command_id"] == cid
        os.kill(r.proc.pid, signal.SIGKILL)
        r.proc.wait(timeout=30)
    finally:
        for s in held:
            s.close()
        r.close()

    again = Running(config, data_dir)
    try:
        assert cid in [c["id"] for c in again.http.get("/api/v1/commands").json()]
    finally:
        again.close()
