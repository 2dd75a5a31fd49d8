"""Storage faults under a running `sparcs run`: the store full (SQLite: the controller process's file
size limit set to 0 with prlimit, so every write to its store fails with EFBIG, "database or disk is
full") or read-only (PostgreSQL: ``default_transaction_read_only`` for the whole server) for a minute.

Meanwhile, by the simulators' ground truth read over Modbus TCP: polling goes on (the controller's
meter readings follow the meters), writes go on (a K1 stage keeps an inverter at 0 W although its
revert timer is 20 s, so it is rewritten all along) and the export guard goes on (the controller is
paused, so the guard alone holds a site's export at its feed-in cap). An alarm says the store fails
(and /readyz and the metrics), commands are refused (503), and when the store returns the alarm is
cleared and the history of the outage is caught up from the writer's queue.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import resource
import time
from pathlib import Path

import httpx
import pytest
import yaml

from sparcs.config.grid_rules import feed_in_cap_w
from sparcs.config.schema import validate_config
from sparcs.drivers.scan import run_scan
from tests.controller.conftest import small_fleet_data
from tests.controller.test_run import Running
from tests.ports import free_ports

pytestmark = pytest.mark.slow
OUTAGE_S = 60.0
NOON = "2026-06-21T10:00:00+00:00"  # 12:00 in Leipzig


def fault_fleet(tmp_path: Path, url: str | None) -> tuple[Path, dict]:
    data = small_fleet_data(2)
    devices = [d for s in data["sites"] for d in s["devices"]]
    *ports, control = free_ports(len(devices) + 1)
    for d, port in zip(devices, ports, strict=True):
        d["port"] = port
    sim = data["simulation"]
    sim["control_port"], sim["start"], sim["weather"]["cloudiness"] = control, NOON, 0.0
    guarded = data["sites"][1]
    guarded["battery"]["soc_initial"] = 0.95  # full, and facing south: at noon it would export above its feed-in cap
    guarded["pv"]["azimuth_deg"], guarded["pv"]["tilt_deg"] = 180, 35
    data["dispatch"] = {"poll_interval_s": 1, "dispatch_interval_s": 30, "solve_timeout_s": 20, "revert_timeout_s": 20}
    data["storage"] = {"telemetry_resolution_s": 5, "write_retry_s": 1, **({"url": url} if url else {})}
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(data))
    return path, data


def modbus_points(port: int) -> dict[int, dict]:
    """Every SunSpec model of the device on ``port``, read over Modbus TCP: model id → points."""
    report = asyncio.run(run_scan("127.0.0.1", port, 1, 5.0))
    return {m["id"]: {k: p["value"] for k, p in m["points"].items()} for m in report["models"]}


def truth(data: dict) -> dict[str, float]:
    """Ground truth over Modbus: the K1 inverter's output and whether it is held (limit or stop), the
    guarded site's meter (W, + import)."""
    k1_pv, _k1_bat, k1_meter = data["sites"][0]["devices"]
    g_meter = data["sites"][1]["devices"][2]
    pv = modbus_points(k1_pv["port"])
    return {
        "k1_pv_w": pv[103]["W"],
        # K1 is a stop where the inverter has one (model 123 Conn = 0), else the lowest limit
        "k1_limit_on": pv[123]["WMaxLim_Ena"] == 1 or pv[123]["Conn"] == 0,
        "guarded_grid_w": modbus_points(g_meter["port"])[203]["W"],
        "k1_grid_w": modbus_points(k1_meter["port"])[203]["W"],
    }


class Fault:
    """Make the store fail, and return, by a real mechanism."""

    def __init__(self, backend: str, r: Running, pg_cluster=None):
        self.backend, self.r, self.pg = backend, r, pg_cluster

    def start(self) -> None:
        if self.backend == "sqlite":  # no write of the controller's to a regular file gets past byte 0
            _soft, hard = resource.prlimit(self.r.proc.pid, resource.RLIMIT_FSIZE)
            resource.prlimit(self.r.proc.pid, resource.RLIMIT_FSIZE, (0, hard))
        else:
            self.pg.sql("ALTER SYSTEM SET default_transaction_read_only = on")
            self.pg.sql("SELECT pg_reload_conf()")

    def stop(self) -> None:
        if self.backend == "sqlite":
            resource.prlimit(self.r.proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        else:
            self.pg.sql("ALTER SYSTEM RESET default_transaction_read_only")
            self.pg.sql("SELECT pg_reload_conf()")


def iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_full_or_read_only_store_for_a_minute_does_not_stop_control(backend, tmp_path, request):
    pg = request.getfixturevalue("pg_cluster") if backend == "postgresql" else None
    config, data = fault_fleet(tmp_path, pg.new_database() if pg else None)
    cap_w = feed_in_cap_w(validate_config(data).sites[1])
    k1_site, guarded_site = data["sites"][0]["id"], data["sites"][1]["id"]
    r = Running(config, tmp_path / "data")
    fault = Fault(backend, r, pg)
    try:
        assert r.wait_for(lambda: r.http.get("/readyz").status_code == 200)
        control = next(line.split()[-1] for line in r.lines if line.startswith("simulator control channel:"))
        sim_offset_s = httpx.get(f"{control}/clock").json()["now_s"] - time.time()  # the demo's clock runs at speed 1
        until = iso(time.time() + sim_offset_s + 3600)
        assert r.http.post("/api/v1/commands/pause", json={"reason": "the guard alone"}).status_code == 201
        stage = {"stage": "K1", "sites": [k1_site], "expires_at": until}
        assert r.http.post("/api/v1/commands/stage", json=stage).status_code == 201
        k1_max_w = 0.02 * data["sites"][0]["pv"]["inverter_w"]  # K1: 0 % (the simulator settles at 1 %)
        r.wait_for(lambda: truth(data)["k1_pv_w"] <= k1_max_w, 60)
        r.wait_for(lambda: r.http.get(f"/api/v1/sites/{guarded_site}").json()["guard_limit_w"] is not None, 60)
        r.wait_for(lambda: -truth(data)["guarded_grid_w"] <= cap_w * 1.02, 60)  # the guard has settled
        time.sleep(5)

        fault.start()
        t0 = time.time()
        samples = []
        try:
            alarm = r.wait_for(
                lambda: [
                    a
                    for a in r.http.get("/api/v1/alarms", params={"active_only": True}).json()
                    if a["source"] == "store"
                ],
                30,
            )
            assert "fails" in alarm[0]["message"] and alarm[0]["severity"] == "critical"
            ready = r.http.get("/readyz")
            assert ready.status_code == 503 and any("history writes fail" in p for p in ready.json()["problems"])
            assert "sparcs_store_ok 0.0" in r.http.get("/metrics").text
            refused = r.http.post("/api/v1/commands/dispatch-now")
            assert refused.status_code == 503  # not acknowledged: it could not be stored
            while time.time() - t0 < OUTAGE_S:
                seen = r.http.get(f"/api/v1/sites/{k1_site}").json()
                g = r.http.get(f"/api/v1/sites/{guarded_site}").json()
                samples.append((time.time(), truth(data), seen, g))
                time.sleep(2)
        finally:
            fault.stop()
        t1 = time.time()

        # Polling went on: the controller's reading of the guarded site's meter is fresh at every sample
        # and agrees with the meter read over Modbus.
        assert len(samples) >= 15
        read_at = [next(d["read_at"] for d in g["devices"] if d["kind"] == "meter") for _ts, _t, _s, g in samples]
        assert read_at == sorted(read_at) and len(set(read_at)) == len(read_at)
        for _ts, t, _seen, g in samples:
            assert g["now"]["grid_w"] == pytest.approx(t["guarded_grid_w"], abs=300.0)
        # Writes went on: the K1 inverter stayed limited, at 0 W, past its 20 s revert timer three times over.
        assert all(t["k1_limit_on"] and t["k1_pv_w"] <= k1_max_w for _ts, t, _s, _g in samples)
        # The guard went on: paused, it alone held the guarded site's export at its feed-in cap.
        assert all(g["guard_limit_w"] is not None for _ts, _t, _s, g in samples)
        assert all(-t["guarded_grid_w"] <= cap_w * 1.02 for _ts, t, _s, _g in samples)

        # The store is back: the alarm is cleared (and stored with both times), /readyz is 200 again.
        r.wait_for(lambda: r.http.get("/readyz").status_code == 200, 60)
        stored = [a for a in r.http.get("/api/v1/alarms").json() if a["source"] == "store"]
        assert len(stored) == 1 and stored[0]["cleared_at"] is not None
        assert "sparcs_store_ok 1.0" in r.http.get("/metrics").text
        # History resumed, and what was polled during the outage was caught up from the queue.
        q = {"start": iso(t0 + sim_offset_s), "end": iso(t1 + sim_offset_s), "resolution_s": 5}
        expected = OUTAGE_S / 5 * 0.7  # a fleet row per 5 s (storage.telemetry_resolution_s), allowing for load
        r.wait_for(lambda: len(r.http.get("/api/v1/history", params=q).json()["points"]) >= expected, 60)
        after = {"start": iso(t1 + sim_offset_s + 5), "end": iso(time.time() + sim_offset_s + 600), "resolution_s": 5}
        r.wait_for(lambda: r.http.get("/api/v1/history", params=after).json()["points"], 30)
        assert r.http.post("/api/v1/commands/dispatch-now").status_code == 202
    finally:
        if r.proc.poll() is not None:
            print("sparcs run ended:", r.proc.returncode, r.proc.stderr.read()[-4000:])
        r.close()
