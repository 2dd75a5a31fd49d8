"""Scale benchmark of the fleet host: ``python -m simulators.bench --devices 1000`` prints JSON.

Starts a synthetic fleet of about N devices in this process on a stepped clock, reads every
device's model-1 header once over TCP (pymodbus async client, bounded concurrency), steps the
physics by one minute and reports the wall times and the process's resident memory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import psutil
from pymodbus.client import AsyncModbusTcpClient

from sparcs.config.schema import validate_config
from sparcs.simulators.clock import SimClock
from sparcs.simulators.fleet import Endpoint, FleetHost
from sparcs.simulators.fleetgen import fleet_of_devices


async def _read_all(endpoints: list[Endpoint], concurrency: int) -> int:
    gate = asyncio.Semaphore(concurrency)

    async def one(ep: Endpoint) -> bool:
        async with gate:
            client = AsyncModbusTcpClient(ep.host, port=ep.port, timeout=5, retries=0)
            try:
                await client.connect()
                rr = await client.read_holding_registers(40000, count=4, device_id=ep.unit)
                return not rr.isError() and rr.registers[:2] == [0x5375, 0x6E53]
            finally:
                client.close()

    return sum(await asyncio.gather(*(one(ep) for ep in endpoints)))


async def run(devices: int, seed: int, concurrency: int) -> dict:
    proc = psutil.Process()
    rss0 = proc.memory_info().rss
    t0 = time.perf_counter()
    cfg = validate_config(fleet_of_devices(devices, seed))
    host = FleetHost(cfg, clock=SimClock(1782036000.0, stepped=True), auto_ports=True)
    t_build = time.perf_counter()
    await host.start()
    t_start = time.perf_counter()
    try:
        answered = await _read_all(host.endpoints(), concurrency)
        t_read = time.perf_counter()
        await host.step(60)
        t_step = time.perf_counter()
        rss = proc.memory_info().rss
    finally:
        await host.stop()
    return {
        "devices": len(host.devices),
        "sites": len(host.sites),
        "build_s": round(t_build - t0, 3),
        "start_s": round(t_start - t0, 3),
        "read_all_s": round(t_read - t_start, 3),
        "answered": answered,
        "step_60s_s": round(t_step - t_read, 3),
        "rss_mb": round(rss / 2**20, 1),
        "rss_fleet_mb": round((rss - rss0) / 2**20, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=100)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.devices, args.seed, args.concurrency))))


if __name__ == "__main__":
    main()
