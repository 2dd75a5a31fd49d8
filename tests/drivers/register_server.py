"""A small pymodbus server on loopback serving given register maps (profile devices, odd SunSpec devices).

Each unit serves ``{address: value}`` holding registers; unmapped registers between them are
INVALID (exception 2), as on SMA devices. ``on_write`` may rewrite what a write stores, to model a
device that silently clamps a command.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable

import sunspec2.device as sd
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

WriteHook = Callable[[int, list[int]], list[int]]  # (address, values) -> values actually stored


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _simdata(regs: dict[int, int]) -> list[SimData]:
    out: list[SimData] = []
    run: list[int] = []
    start = prev = None
    for addr in sorted(regs):
        if prev is not None and addr == prev + 1:
            run.append(regs[addr])
        else:
            if run:
                out.append(SimData(start, values=run, datatype=DataType.REGISTERS))
            start, run = addr, [regs[addr]]
        prev = addr
    if run:
        out.append(SimData(start, values=run, datatype=DataType.REGISTERS))
    return out


class RegisterServer:
    """Serves ``maps`` (unit id → {address: value}) on 127.0.0.1:``port``."""

    def __init__(self, maps: dict[int, dict[int, int]], on_write: WriteHook | None = None):
        self.port = free_port()
        self.on_write = on_write
        self.regs: dict[int, list[int]] = {}
        self.starts: dict[int, int] = {}
        devices = []
        for unit, regs in maps.items():
            devices.append(SimDevice(id=unit, simdata=_simdata(regs), action=self._action(unit)))
        self.server = ModbusTcpServer(devices, address=("127.0.0.1", self.port))

    def _action(self, unit: int):
        async def on_access(fc, start_addr, addr, count, registers, set_values):
            self.regs[unit], self.starts[unit] = registers, start_addr
            if set_values is not None and self.on_write is not None:
                set_values[:] = self.on_write(addr, list(set_values))
            return None

        return on_access

    async def start(self) -> None:
        await self.server.serve_forever(background=True)

    async def set(self, unit: int, addr: int, values: list[int]) -> None:
        await self.server.async_setValues(unit, 16, addr, values)

    async def get(self, unit: int, addr: int, count: int) -> list[int]:
        return list(await self.server.async_getValues(unit, 3, addr, count))

    async def stop(self) -> None:
        await self.server.shutdown()


def sunspec_image(base: int, models: dict[int, dict[str, int | str]]) -> dict[int, int]:
    """A SunSpec register map at ``base``: 'SunS', the models (raw point values set), the end model."""
    regs = [0x5375, 0x6E53]
    for mid, points in models.items():
        m = sd.Model(model_id=mid)
        for name, value in points.items():
            getattr(m, name).value = value
        raw = m.get_mb()
        regs += struct.unpack(f">{len(raw) // 2}H", raw)
    regs += [0xFFFF, 0]
    return {base + i: v for i, v in enumerate(regs)}
