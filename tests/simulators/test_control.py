"""The control channel over real HTTP on loopback: clock, devices, truth, faults."""

from __future__ import annotations

import asyncio
import socket
import struct

import httpx
import pytest

from sparcs.config.schema import validate_config
from sparcs.simulators.clock import SimClock
from sparcs.simulators.control import ControlServer
from sparcs.simulators.fleet import FleetHost
from tests.simulators.conftest import SUMMER_NOON_S, FleetThread, site


@pytest.fixture(scope="module")
def served():
    fleet = FleetThread({"simulation": {"seed": 2}, "sites": [site("c", 35000)]})
    server = ControlServer(fleet.host)
    try:
        url = fleet.run(server.start())
        with httpx.Client(base_url=url, timeout=10) as client:
            yield fleet, server, client
    finally:
        fleet.run(server.stop())
        fleet.close()


@pytest.fixture(scope="module")
def api(served):
    fleet, _, client = served
    return fleet, client


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


def _nodelay(transport: asyncio.BaseTransport) -> int:
    sock = transport.get_extra_info("socket")
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_control_connections_are_tcp_nodelay_and_kept_alive(served):
    """Nagle on the server side holds a keep-alive reply back ~40 ms (delayed ACK): TCP_NODELAY must be on.

    Asserted on the accepted socket itself (server side), not by timing: 20 sequential requests over
    one kept-alive connection, and that connection has TCP_NODELAY set.
    """
    fleet, server, client = served
    for _ in range(20):
        assert client.get("/clock").status_code == 200

    def accepted() -> list[int]:
        return [_nodelay(p.transport) for p in server._server.server_state.connections]

    flags = fleet.call(accepted)
    assert len(flags) == 1  # one keep-alive connection served all 20 requests
    assert all(flags), flags


def test_modbus_proxy_connections_are_tcp_nodelay(api):
    """The fault proxy in front of every device accepts its connections with TCP_NODELAY as well."""
    fleet, _ = api
    ep = fleet.endpoints["c-meter"]
    with socket.create_connection((ep.host, ep.port), timeout=5) as conn:
        conn.sendall(struct.pack(">HHHBBHH", 1, 0, 6, ep.unit, 3, fleet.host.devices["c-meter"].image.base, 2))
        assert conn.recv(64)[7] == 3  # an answer to FC 3: the proxy has accepted and served us

        def accepted() -> list[int]:
            proxies = [p.proxy for p in fleet.host._ports.values() if p.proxy is not None]
            return [_nodelay(w.transport) for proxy in proxies for w in proxy._writers]

        flags = fleet.call(accepted)
    assert flags and all(flags), flags
