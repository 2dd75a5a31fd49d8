"""SimServer answers every request byte for byte as pymodbus's own ModbusTcpServer does, with the same hook calls."""

from __future__ import annotations

import asyncio
import struct

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from sparcs.simulators.modbus_server import DirectContext, SimServer

BASE = 40000
SIZE = 150

# (unit, PDU) requests: reads inside, at the edges of and beyond the block, FC 4, writes (FC 6, 16),
# a write the hook refuses, a read-write (FC 23, pymodbus's path), a coil read, an unknown unit id.
REQUESTS: list[tuple[int, bytes]] = [
    (1, struct.pack(">BHH", 3, BASE, 125)),
    (1, struct.pack(">BHH", 3, BASE + 100, 50)),
    (1, struct.pack(">BHH", 3, BASE + 100, 51)),
    (1, struct.pack(">BHH", 3, BASE - 1, 2)),
    (1, struct.pack(">BHH", 4, BASE + 3, 7)),
    (1, struct.pack(">BHH", 6, BASE + 10, 0xBEEF)),
    (1, struct.pack(">BHH", 3, BASE + 8, 4)),
    (1, struct.pack(">BHHB3H", 16, BASE + 20, 3, 6, 1, 2, 3)),
    (1, struct.pack(">BHH", 6, BASE + 66, 7)),
    (1, struct.pack(">BHHHHB2H", 23, BASE, 4, BASE + 30, 2, 4, 9, 8)),
    (1, struct.pack(">BHH", 1, BASE, 8)),
    (1, struct.pack(">BHH", 6, BASE + SIZE, 1)),
    (2, struct.pack(">BHH", 3, BASE, 10)),
    (1, struct.pack(">BHH", 3, BASE + 20, 12)),
]


def _device(calls: list[tuple]) -> tuple[SimDevice, list[int]]:
    """A unit 1 of SIZE registers at BASE whose hook records each access, fills a read's registers and
    refuses a write to BASE + 66; returns the device and the list the hook saw (pymodbus's registers)."""
    seen: list[list[int]] = []

    async def action(fc, start, address, count, registers, values):
        if not seen:
            registers[:] = [(i * 7919) & 0xFFFF for i in range(len(registers))]
            seen.append(registers)
        calls.append((fc, start, address, count, None if values is None else list(values)))
        if values is not None and address == BASE + 66:
            return ExcCodes.ILLEGAL_VALUE
        return None

    return SimDevice(id=1, simdata=[SimData(BASE, count=SIZE, datatype=DataType.REGISTERS)], action=action), seen


async def _exchange(port: int) -> list[bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    replies = []
    for tid, (unit, pdu) in enumerate(REQUESTS, start=1):
        writer.write(struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu)
        await writer.drain()
        head = await asyncio.wait_for(reader.readexactly(6), 5)
        replies.append(head + await reader.readexactly(struct.unpack(">HHH", head)[2]))
    writer.close()
    return replies


async def _serve(cls: type[ModbusTcpServer]) -> tuple[list[bytes], list[tuple], list[int]]:
    calls: list[tuple] = []
    device, seen = _device(calls)
    server = cls([device], address=("127.0.0.1", 0))
    await server.serve_forever(background=True)
    try:
        assert isinstance(server.transport, asyncio.Server)
        replies = await _exchange(server.transport.sockets[0].getsockname()[1])
    finally:
        await server.shutdown()
    return replies, calls, list(seen[0])


async def test_replies_hook_calls_and_registers_equal_pymodbus_s():
    stock = await _serve(ModbusTcpServer)
    fast = await _serve(SimServer)
    assert fast[0] == stock[0]
    assert fast[1] == stock[1]
    assert fast[2] == stock[2]
    codes = [r[7] for r in stock[0]]
    assert codes.count(0x83) == 3 and codes.count(0x86) == 2  # the refusals are among the replies compared


async def test_only_a_plain_block_is_served_directly():
    server = SimServer([_device([])[0]], address=("127.0.0.1", 0))
    assert isinstance(server.context, DirectContext)
    plain = server.context
    readonly = SimServer(
        [SimDevice(id=1, simdata=[SimData(BASE, count=4, datatype=DataType.REGISTERS, readonly=True)])],
        address=("127.0.0.1", 0),
    ).context
    assert isinstance(readonly, DirectContext)
    assert 1 in plain._direct and 1 not in readonly._direct
