"""The control channel over real HTTP on loopback: clock, devices, truth, faults."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from sparcs.config.schema import validate_config
from sparcs.simulators.clock import SimClock
from sparcs.simulators.control import ControlServer
from sparcs.simulators.fleet import FleetHost
from tests.simulators.conftest import SUMMER_NOON_S, FleetThread, site


@pytest.fixture(scope="module")
def api():
    fleet = FleetThread({"simulation": {"seed": 2}, "sites": [site("c", 35000)]})
    server = ControlServer(fleet.host)
    try:
        url = fleet.run(server.start())
        with httpx.Client(base_url=url, timeout=10) as client:
            yield fleet, client
    finally:
        fleet.run(server.stop())
        fleet.close()


def test_clock_steps_and_truth_follows(api):
    fleet, client = api
    assert client.get("/clock").json()["now_s"] == pytest.approx(fleet.clock.now())
    before = client.get("/truth/c-pv").json()["energy_wh"]
    r = client.post("/clock/step", json={"seconds": 600})
    assert r.status_code == 200 and r.json()["stepped"] is True
    assert fleet.clock.now() >= SUMMER_NOON_S + 600
    assert client.get("/truth/c-pv").json()["energy_wh"] > before
    site_truth = client.get("/sites/c/truth").json()
    assert site_truth["grid_w"] == pytest.approx(
        site_truth["load_w"] - site_truth["pv_w"] - site_truth["battery_w"], abs=1e-6
    )


def test_devices_lists_the_endpoints(api):
    fleet, client = api
    devices = client.get("/devices").json()
    assert {d["id"] for d in devices} == {"c-pv", "c-bat", "c-meter"}
    assert all(d["port"] == fleet.endpoints[d["id"]].port for d in devices)


def test_faults_are_injected_listed_and_cleared(api):
    fleet, client = api
    r = client.post("/faults", json={"device": "c-meter", "mode": "sentinel"})
    assert r.status_code == 200
    assert [f["mode"] for f in client.get("/faults").json()] == ["sentinel"]
    assert fleet.call(fleet.host.active_fault, "c-meter").mode == "sentinel"
    assert client.delete("/faults/c-meter").status_code == 200
    assert client.get("/faults").json() == []


def test_bad_requests_name_what_is_wrong(api):
    _, client = api
    r = client.get("/truth/nope")
    assert r.status_code == 404 and "nope" in r.json()["detail"]
    assert client.post("/faults", json={"device": "nope", "mode": "offline"}).status_code == 404
    assert client.post("/faults", json={"device": "c-pv", "mode": "melt"}).status_code == 422
    assert client.post("/clock/step", json={"seconds": -5}).status_code == 422


def test_free_running_clock_advances_the_physics_without_steps():
    wall = [0.0]
    clock = SimClock(SUMMER_NOON_S, speed=600.0, wall=lambda: wall[0])
    cfg = validate_config({"simulation": {"seed": 2}, "sites": [site("rt", 35100)]})

    async def run() -> tuple[float, float]:
        async with FleetHost(cfg, clock=clock, auto_ports=True) as host:
            with pytest.raises(RuntimeError):
                await host.step(10)
            wall[0] = 3.0  # three wall seconds later: 1,800 sim seconds
            for _ in range(100):
                await asyncio.sleep(0.05)
                if host.site_truth("rt")["t"] == clock.now():
                    break
            return host.site_truth("rt")["t"], host.truth("rt-pv")["energy_wh"]

    t, energy = asyncio.run(run())
    assert t == SUMMER_NOON_S + 1800.0
    assert energy > FleetHost(cfg, clock=SimClock(SUMMER_NOON_S, stepped=True)).truth("rt-pv")["energy_wh"]
