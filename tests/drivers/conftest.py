"""Shared fixtures of the drivers' integration tests: one stepped simulated fleet per module.

A test module declares ``FLEET`` (a fleet config dict), ``START`` (Unix s of the sim clock) and
``SETTINGS`` (the DispatchConfig the poller uses); the fixtures below serve that fleet over TCP.
"""

from __future__ import annotations

import pytest_asyncio

from sparcs.config.schema import validate_config
from sparcs.drivers.poller import FleetPoller
from sparcs.drivers.telemetry import Telemetry
from sparcs.simulators.clock import SimClock
from sparcs.simulators.fleet import FleetHost


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fleet(request):
    clock = SimClock(request.module.START, stepped=True)
    host = FleetHost(validate_config(request.module.FLEET), clock=clock, auto_ports=True)
    await host.start()
    try:
        yield host, clock
    finally:
        await host.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def poller(fleet, request):
    host, clock = fleet
    p = FleetPoller(host.config.devices(), request.module.SETTINGS, clock.now)
    try:
        yield p
    finally:
        await p.close()
        for dev_id in host.devices:
            host.clear_fault(dev_id)


def good(t: Telemetry, key: str) -> float | None:
    """The value of ``key``, asserting that the drivers rated it good."""
    r = t.values[key]
    assert r.quality == "good", (t.device_id, key, r)
    return r.value


async def step_and_poll(host: FleetHost, p: FleetPoller, step_s: float = 10.0) -> dict[str, Telemetry]:
    """Advance the simulated fleet by ``step_s`` and poll it once."""
    await host.step(step_s)
    return await p.poll_once()
