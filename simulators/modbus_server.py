"""The simulators' Modbus TCP server: pymodbus 3.16's ``ModbusTcpServer`` with a shorter path per request.

The wire protocol, the register contents and every exception reply are pymodbus's; only the work
per request is less (the twin replays ~220 requests a poll, docs/twin.md "The page and the speed"):

- :class:`SimServer` hands each decoded request to the event loop as a task of its own, where
  pymodbus's handler goes through ``run_coroutine_threadsafe`` (a thread-safe future, a write to
  the loop's self-pipe and its read, per request) although it runs in the loop's own thread;
- :class:`DirectContext` serves the register function codes (3, 4, 6, 16) of a device whose one
  register block has no invalid or read-only register straight from that block: the same range
  check, the same ``action`` hook and the same slice as ``SimRuntime.get_reg_block``, without its
  per-register flag check: such a block is valid and writable up to its last register, the invalid
  one pymodbus appends (checked when the server is built), so one comparison gives the same answer;
  everything else goes to pymodbus's ``SimCore``;
- read replies (FC 3 and 4) are encoded with one ``struct.pack`` (:class:`FastReadHoldingResponse`)
  where pymodbus concatenates one packed register at a time: the same bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import cast

from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusServerContext
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadHoldingRegistersResponse,
    ReadInputRegistersRequest,
    ReadInputRegistersResponse,
)
from pymodbus.server import ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.simulator import SimDevice
from pymodbus.simulator.simcore import SimCore
from pymodbus.simulator.simruntime import SimRuntime
from pymodbus.simulator.simutils import DataType, SimUtils

REGISTER_CODES = frozenset({3, 4, 6, 16})
"""Function codes whose datastore access is a plain register read or write (FC 22/23 and the bit
codes keep pymodbus's path)."""


def _encode_registers(registers: Sequence[int]) -> bytes:
    """A read reply's payload: byte count, then each register big-endian (as pymodbus encodes it)."""
    return struct.pack(f">B{len(registers)}H", 2 * len(registers), *registers)


class FastReadHoldingResponse(ReadHoldingRegistersResponse):
    """FC 3 reply encoded in one ``struct.pack``."""

    def encode(self) -> bytes:
        return _encode_registers(self.registers)


class FastReadInputResponse(ReadInputRegistersResponse):
    """FC 4 reply encoded in one ``struct.pack``."""

    def encode(self) -> bytes:
        return _encode_registers(self.registers)


async def _read_update(
    request: ReadHoldingRegistersRequest,
    context: ModbusServerContext,
    device_id: int,
    reply: type[ReadHoldingRegistersResponse],
) -> ModbusPDU:
    """``ReadHoldingRegistersRequest.datastore_update`` with ``reply`` as the response class."""
    values = await context.async_getValues(device_id, request.function_code, request.address, request.count)
    if isinstance(values, ExcCodes):
        return ExceptionResponse(request.function_code, values)
    return reply(registers=cast("list[int]", values), dev_id=device_id, transaction_id=request.transaction_id)


class FastReadHoldingRequest(ReadHoldingRegistersRequest):
    """FC 3 request whose reply is a :class:`FastReadHoldingResponse`."""

    async def datastore_update(self, context: ModbusServerContext, device_id: int) -> ModbusPDU:
        return await _read_update(self, context, device_id, FastReadHoldingResponse)


class FastReadInputRequest(ReadInputRegistersRequest):
    """FC 4 request whose reply is a :class:`FastReadInputResponse`."""

    async def datastore_update(self, context: ModbusServerContext, device_id: int) -> ModbusPDU:
        return await _read_update(self, context, device_id, FastReadInputResponse)


def _plain_block(runtime: SimRuntime) -> tuple[int, int, int, list[int]] | None:
    """``(start address, register count, usable registers, registers)`` of a runtime's single block
    (``"x"``) whose first *usable* registers are valid and writable and the rest invalid (pymodbus ends
    a block with one invalid register), else None (such a device keeps pymodbus's path)."""
    block = runtime.block.get("x")
    if block is None or runtime.use_bit_addressing:
        return None
    start, count, registers, flags = block
    invalid = int(DataType.INVALID)

    def usable(f: int) -> bool:
        return f & SimUtils.RunTimeFlag_TYPE != invalid and not f & SimUtils.RunTimeFlag_READONLY

    n = next((i for i, f in enumerate(flags[:count]) if not usable(f)), count)
    if any(f & SimUtils.RunTimeFlag_TYPE != invalid for f in flags[n:count]):
        return None
    return start, count, n, registers


class DirectContext:
    """The server's datastore: pymodbus's ``SimCore`` over ``devices``, with register access to a plain
    block served directly (see the module docstring). Unknown unit ids, other function codes and
    other blocks go to ``SimCore``, which answers them as before."""

    def __init__(self, core: SimCore):
        self.core = core
        self._direct = {
            dev_id: (runtime, plain)
            for dev_id, runtime in self.core.devices.items()
            if (plain := _plain_block(runtime)) is not None
        }

    def device_ids(self) -> list[int]:
        return self.core.device_ids()

    async def _access(
        self, device_id: int, func_code: int, address: int, count: int, values: list[int] | None
    ) -> list[int] | ExcCodes | None:
        """The direct path, as ``SimRuntime.get_reg_block``; None when this access is not for it."""
        entry = self._direct.get(device_id)
        if entry is None or func_code not in REGISTER_CODES:
            return None
        runtime, (start, size, usable, registers) = entry
        offset = address - start
        if offset < 0 or offset + count > size:
            return ExcCodes.ILLEGAL_ADDRESS
        if offset + count > usable:  # SimRuntime's flag check refuses an invalid register before the hook
            return ExcCodes.ILLEGAL_ADDRESS
        if runtime.action and (result := await runtime.action(func_code, start, address, count, registers, values)):
            return result
        if values:
            registers[offset : offset + count] = values
        return registers[offset : offset + count]

    async def async_getValues(
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> list[int] | list[bool] | ExcCodes:
        got = await self._access(device_id, func_code, address, count, None)
        if got is None:
            return await self.core.async_getValues(device_id, func_code, address, count)
        return got

    async def async_setValues(
        self, device_id: int, func_code: int, address: int, values: list[int] | list[bool]
    ) -> ExcCodes | None:
        if not isinstance(values, list):
            return await self.core.async_setValues(device_id, func_code, address, values)
        got = await self._access(device_id, func_code, address, len(values), cast("list[int]", values))
        if got is None:
            return await self.core.async_setValues(device_id, func_code, address, values)
        return got if isinstance(got, ExcCodes) else None


class _RequestHandler(ServerRequestHandler):
    """pymodbus's handler; the request runs as a task created in the loop's own thread."""

    def handle_later(self) -> None:
        self.loop.create_task(self.handle_request())


class SimServer(ModbusTcpServer):
    """A ``ModbusTcpServer`` over simulated devices with the shorter request path of the module docstring."""

    def __init__(self, devices: list[SimDevice], *, address: tuple[str, int]):
        super().__init__(devices, address=address, custom_pdu=[FastReadHoldingRequest, FastReadInputRequest])
        assert isinstance(self.context, SimCore)  # a list of SimDevice becomes pymodbus's SimCore
        self.context = cast("SimCore", DirectContext(self.context))

    def callback_new_connection(self) -> ServerRequestHandler:
        return _RequestHandler(self, self.trace_packet, self.trace_pdu, self.trace_connect)
