"""A simulated Modbus I/O module with a control box's relay contacts on its discrete inputs.

One per ``relay_inputs`` entry of the fleet file, served by the fleet host on that entry's port and
unit: discrete inputs from ``address`` (function code 2), one per contact, True = closed. The
contacts are set on the control channel (``POST /io/{id}/contacts``), as a grid operator's control
box would switch them. Faults (``POST /io/{id}/fault``): ``offline`` (port closed), ``no_reply``
(requests swallowed), ``exception`` (every request answered with exception 4); ``null`` clears.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from pymodbus.simulator.simutils import SimUtils

from sparcs.config.schema import RelayInputConfig
from sparcs.simulators.proxy import FORWARD, FaultProxy, FrameAction

IoFault = Literal["offline", "no_reply", "exception"]


class IoModuleSim:
    """The contacts of one I/O module and their Modbus face; see the module docstring."""

    def __init__(self, cfg: RelayInputConfig) -> None:
        self.cfg = cfg
        self.id = cfg.id
        self.contacts = [False] * len(cfg.contacts)
        self.fault: IoFault | None = None
        self.reads = 0
        self._backend: ModbusTcpServer | None = None
        self._proxy: FaultProxy | None = None

    @property
    def port(self) -> int:
        return self._proxy.port if self._proxy is not None else self.cfg.port

    def set_contacts(self, closed: list[bool]) -> None:
        """Set every contact (True = closed); ValueError when the count is not the module's."""
        if len(closed) != len(self.contacts):
            raise ValueError(f"io module {self.id} has {len(self.contacts)} contacts, got {len(closed)} values")
        self.contacts = [bool(c) for c in closed]

    def set_fault(self, mode: IoFault | None) -> None:
        self.fault = mode
        if self._proxy is None:
            return
        if mode == "offline" and self._proxy.is_open:
            self._proxy.close_port()
        elif mode != "offline" and not self._proxy.is_open:
            self._proxy.reopen()

    def state(self) -> dict:
        return {"id": self.id, "port": self.port, "contacts": list(self.contacts), "fault": self.fault}

    async def start(self, host: str, auto_port: bool) -> int:
        """Serve on ``host`` (``auto_port``: a free port); returns the public port."""
        # Shared registers, bit-addressed as pymodbus does it: enough registers for every contact.
        n_regs = self.cfg.address + len(self.contacts) + 2
        device = SimDevice(
            id=self.cfg.unit,
            simdata=[SimData(0, count=n_regs, datatype=DataType.REGISTERS)],
            action=self._hook,
        )
        self._backend = ModbusTcpServer([device], address=("127.0.0.1", 0))
        await self._backend.serve_forever(background=True)
        server = self._backend.transport
        assert isinstance(server, asyncio.Server)
        backend_port = server.sockets[0].getsockname()[1]
        self._proxy = FaultProxy(host, 0 if auto_port else self.cfg.port, backend_port, self._action)
        await self._proxy.open()
        self.set_fault(self.fault)
        return self._proxy.port

    async def stop(self) -> None:
        if self._proxy is not None:
            await self._proxy.stop()
            self._proxy = None
        if self._backend is not None:
            await self._backend.shutdown()
            self._backend = None

    def _action(self, unit: int) -> FrameAction:
        if self.fault in ("offline", "no_reply"):
            return FrameAction(drop=True)
        return FORWARD

    async def _hook(
        self,
        fc: int,
        start_addr: int,
        address: int,
        count: int,
        registers: list[int] | list[bool],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        if self.fault == "exception":
            return ExcCodes.DEVICE_FAILURE
        if fc == 2:
            self.reads += 1
            self._publish(start_addr, address, count, registers)  # type: ignore[arg-type]
        return None

    def _publish(self, start_addr: int, address: int, count: int, registers: list[int]) -> None:
        """Put the contacts into the bit-packed registers pymodbus answers from: it reads bit
        ``address % 16`` onwards of register ``address − start_addr`` (its bit-block addressing)."""
        offset, bit = address - start_addr, address % 16
        bits = SimUtils.registersToBits(registers[offset : offset + count])
        for i in range(len(bits) - bit):
            k = address - self.cfg.address + i
            if 0 <= k < len(self.contacts):
                bits[bit + i] = self.contacts[k]
        registers[offset : offset + count] = SimUtils.bitsToRegisters(bits)
