"""FleetHost.stop ends every connection it serves, so nothing is left pending to be destroyed later."""

from __future__ import annotations

import asyncio

from pymodbus.client import AsyncModbusTcpClient

from sparcs.config.schema import FaultSpec, validate_config
from sparcs.simulators.clock import SimClock
from sparcs.simulators.fleet import FleetHost
from tests.simulators.conftest import SUMMER_NOON_S, site


def _proxy_handlers() -> list[asyncio.Task]:
    return [t for t in asyncio.all_tasks() if getattr(t.get_coro(), "__qualname__", "") == "FaultProxy._serve"]


async def test_stop_ends_idle_slow_and_unanswered_connections() -> None:
    cfg = validate_config({"sites": [site("s", 32000, cap=None)]})
    host = FleetHost(cfg, clock=SimClock(SUMMER_NOON_S, stepped=True), auto_ports=True)
    await host.start()
    clients = []
    try:
        eps = {ep.id: ep for ep in host.endpoints()}
        host.inject_fault(FaultSpec(device="s-bat", mode="slow", delay_s=30))
        host.inject_fault(FaultSpec(device="s-meter", mode="no_reply"))
        for ep in eps.values():
            c = AsyncModbusTcpClient(ep.host, port=ep.port, timeout=30, retries=0)
            assert await c.connect()
            clients.append(c)
        idle = await clients[0].read_holding_registers(40000, count=2, device_id=1)
        assert idle.registers == [0x5375, 0x6E53]
        in_flight = [asyncio.ensure_future(c.read_holding_registers(40000, count=2, device_id=1)) for c in clients[1:]]
        await asyncio.sleep(0.2)
        assert len(_proxy_handlers()) == 3  # one per connection: idle, sleeping in 'slow', swallowed
        await host.stop()
        assert _proxy_handlers() == []
        for f in in_flight:
            f.cancel()
        await asyncio.gather(*in_flight, return_exceptions=True)
    finally:
        for c in clients:
            c.close()
        await host.stop()
