"""One fleet, two transports: devices polled directly over Modbus and devices behind edges.

:class:`MixedPoller` and :class:`MixedWriter` present both as the one
:class:`~sparcs.controller.cycle.Poller` and :class:`~sparcs.controller.cycle.Writer` the cycle is
built on, routing each device to the transport its site uses.
"""

from __future__ import annotations

import asyncio

from sparcs.controller.cycle import Poller, PollerDeviceState, Writer
from sparcs.drivers.telemetry import Telemetry
from sparcs.drivers.writer import Setpoint, WriteResult


class MixedPoller:
    """Polls the direct devices and takes the edge devices' telemetry, in one ``poll_once``."""

    def __init__(self, direct: Poller, edge: Poller, edge_devices: set[str]):
        self.direct, self.edge, self.edge_devices = direct, edge, edge_devices

    async def poll_once(self) -> dict[str, Telemetry]:
        a, b = await asyncio.gather(self.direct.poll_once(), self.edge.poll_once())
        return {**a, **b}

    def state(self, device_id: str) -> PollerDeviceState:
        return (self.edge if device_id in self.edge_devices else self.direct).state(device_id)

    async def close(self) -> None:
        await asyncio.gather(self.direct.close(), self.edge.close())


class MixedWriter:
    """Writes the direct devices' setpoints, and hands the edge devices' to the edge writer."""

    def __init__(self, direct: Writer, edge: Writer, edge_devices: set[str]):
        self.direct, self.edge, self.edge_devices = direct, edge, edge_devices

    async def apply(self, setpoints: dict[str, Setpoint]) -> dict[str, WriteResult]:
        mine = {d: s for d, s in setpoints.items() if d not in self.edge_devices}
        theirs = {d: s for d, s in setpoints.items() if d in self.edge_devices}
        a, b = await asyncio.gather(self.direct.apply(mine), self.edge.apply(theirs))
        return {**a, **b}

    async def refresh_due(self) -> dict[str, WriteResult]:
        a, b = await asyncio.gather(self.direct.refresh_due(), self.edge.refresh_due())
        return {**a, **b}

    async def release(self, device_ids: list[str]) -> dict[str, WriteResult]:
        mine = [d for d in device_ids if d not in self.edge_devices]
        theirs = [d for d in device_ids if d in self.edge_devices]
        a, b = await asyncio.gather(self.direct.release(mine), self.edge.release(theirs))
        return {**a, **b}
