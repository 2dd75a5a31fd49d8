"""A fleet whose faults are all in its config (the twin's): only endpoints with a timing fault sit
behind the fault proxy; the others are pymodbus on the public port, and every fault still acts.

Fixed ports below the ephemeral range (tests/ports.py): an outage closes and reopens its port, which
a port-0 bind elsewhere on the machine could take in between."""

from __future__ import annotations

import datetime as dt

import pytest

from sparcs.config.schema import DispatchConfig, FaultSpec, validate_config
from sparcs.drivers.poller import FleetPoller
from sparcs.simulators.clock import SimClock
from sparcs.simulators.fleet import FleetHost
from tests.ports import free_ports

START = dt.datetime(2026, 6, 21, 10, 0, tzinfo=dt.UTC)


def at(s: float) -> str:
    return (START + dt.timedelta(seconds=s)).isoformat()


PORTS = free_ports(4)
FLEET = {
    "simulation": {
        "seed": 3,
        "faults": [
            {"device": "b-pv", "mode": "offline", "start": at(20), "end": at(40)},
            {"device": "b-meter", "mode": "frozen", "start": at(0)},
        ],
    },
    "sites": [
        {
            "id": sid,
            "location": {"lat": 51.34, "lon": 12.37},
            "pv": {"kwp": 6.0},
            "grid": {"feed_in_cap_pct": 60},
            "devices": [
                {"id": f"{sid}-pv", "kind": "pv_inverter", "port": PORTS[2 * i]},
                {"id": f"{sid}-meter", "kind": "meter", "port": PORTS[2 * i + 1]},
            ],
        }
        for i, sid in enumerate(("a", "b"))
    ],
}


@pytest.mark.asyncio
async def test_only_timing_faults_get_a_proxy_and_the_faults_still_act():
    host = FleetHost(validate_config(FLEET), clock=SimClock(START.timestamp(), stepped=True), faults="scheduled")
    await host.start()
    poller = FleetPoller(
        host.config.devices(), DispatchConfig(modbus_timeout_s=0.5, stale_after_polls=1), host.clock.now
    )
    try:
        proxied = {d.id for p in host._ports.values() if p.proxy is not None for d in p.devices.values()}
        assert proxied == {"b-pv"}  # a value fault (frozen) acts in the device's hook: no proxy needed
        assert [d.port for s in host.config.sites for d in s.devices] == PORTS  # each on its public port
        tel = await poller.poll_once()
        assert all(t.status == "online" for t in tel.values()), tel
        await host.step(30)
        tel = await poller.poll_once()
        assert tel["b-pv"].status == "stale"  # its port is closed while the scheduled outage lasts
        assert all(tel[d].status == "online" for d in ("a-pv", "a-meter", "b-meter"))
        await host.step(60)
        tel = await poller.poll_once()
        assert tel["b-pv"].status == "online"
        with pytest.raises(RuntimeError, match="faults='scheduled'"):
            host.inject_fault(FaultSpec(device="a-pv", mode="offline"))
    finally:
        await poller.close()
        await host.stop()
