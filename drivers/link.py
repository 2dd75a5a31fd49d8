"""One reused Modbus TCP connection per endpoint, shared serially by the unit ids behind it.

Every request goes through ``Link``: it connects on demand, applies the timeout, maps pymodbus's
failures onto ``drivers.errors``, and drops the connection after a timeout so that a late reply
can never be taken for the answer to a neighbour's next request.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import struct
from collections.abc import Awaitable, Callable
from typing import Any

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.logging import Log
from pymodbus.pdu import DecodePDU, ExceptionResponse, ModbusPDU
from pymodbus.pdu.register_message import ReadHoldingRegistersResponse

from sparcs.drivers.errors import DeviceError, DeviceTimeoutError, DeviceUnreachableError, ModbusError

# pymodbus logs every timeout and refused connection at ERROR; the poller reports them as quality.
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


def raise_open_file_limit() -> int:
    """Raise RLIMIT_NOFILE to the hard limit (1,000 devices need thousands of sockets); returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    return soft


class FastReadHoldingResponse(ReadHoldingRegistersResponse):
    """pymodbus's FC 3 reply, its registers unpacked in one ``struct.unpack_from`` where pymodbus slices
    and unpacks one register at a time: the same registers (``byte count // 2`` of them) and the same
    error for a byte count beyond the frame. Registered on every client :class:`Link` opens."""

    def decode(self, data: bytes) -> None:
        if (data_len := int(data[0])) >= len(data):
            raise ModbusIOException(
                f"byte_count {data_len} > length of packet {len(data)}", function_code=self.function_code
            )
        self.registers = list(struct.unpack_from(f">{data_len // 2}H", data, 1))


class QuietDecoder(DecodePDU):
    """pymodbus's client decoder (3.16), without ``str(pdu)`` of every decoded reply for a debug line
    that is not logged: while pymodbus's logger is below DEBUG it decodes as ``DecodePDU.decode`` does
    (the same PDU, the same warning and None for a frame it cannot decode); at DEBUG it is that method."""

    def __init__(self) -> None:
        super().__init__(is_server=False)

    def decode(self, frame: bytes) -> ModbusPDU | None:
        if _PYMODBUS_LOG.isEnabledFor(logging.DEBUG):
            return super().decode(frame)
        try:
            if (function_code := int(frame[0])) > 0x80:
                pdu_exp = ExceptionResponse(function_code & 0x7F)
                pdu_exp.decode(frame[1:])
                return pdu_exp
            if not (pdu_class := self.pdu_table.get(function_code, (None, None))[self.pdu_inx]):
                raise ModbusException(f"Unknown response {function_code}")
            pdu = pdu_class()
            pdu.decode(frame[1:])
            if pdu.sub_function_code >= 0:
                lookup = self.pdu_sub_table.get(pdu.function_code, {})
                if sub_class := lookup.get(pdu.sub_function_code, (None, None))[self.pdu_inx]:
                    pdu = sub_class()
                    pdu.decode(frame[1:])
            return pdu
        except (ModbusException, ValueError, IndexError, struct.error) as exc:
            Log.warning("Unable to decode frame {}", exc)
        return None


_PYMODBUS_LOG = logging.getLogger("pymodbus.logging")  # pymodbus's Log writes to this logger


def _client(host: str, port: int, timeout_s: float) -> AsyncModbusTcpClient:
    """A pymodbus client for one endpoint with the decoder above and :class:`FastReadHoldingResponse`.

    ``reconnect_delay=0``: no background reconnect loop; the poller's back-off decides when to retry."""
    c = AsyncModbusTcpClient(host, port=port, timeout=timeout_s, retries=0, reconnect_delay=0)
    c.ctx.framer.decoder = QuietDecoder()
    c.register(FastReadHoldingResponse)
    return c


class Link:
    """A Modbus TCP connection to ``host:port``; requests are serialised by ``lock``."""

    def __init__(self, host: str, port: int, timeout_s: float):
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self.lock = asyncio.Lock()
        self._client: AsyncModbusTcpClient | None = None

    @property
    def name(self) -> str:
        return f"{self.host}:{self.port}"

    async def _connected(self) -> AsyncModbusTcpClient:
        c = self._client
        if c is not None and c.connected:
            return c
        if c is not None:
            c.close()
        c = _client(self.host, self.port, self.timeout_s)
        self._client = c
        try:
            ok = await asyncio.wait_for(c.connect(), self.timeout_s + 0.5)
        except (TimeoutError, OSError) as exc:
            ok = False
            reason = str(exc) or type(exc).__name__
        else:
            reason = "connection refused or timed out"
        if not ok:
            c.close()
            self._client = None
            raise DeviceUnreachableError(f"cannot connect to {self.name}: {reason}")
        return c

    async def _call(self, what: str, fn: Callable[[AsyncModbusTcpClient], Awaitable[Any]]) -> Any:
        async with self.lock:
            client = await self._connected()
            try:
                # pymodbus applies the timeout itself (retries=0); no wait_for: a task per request costs.
                rr = await fn(client)
            except (ModbusIOException, TimeoutError):
                self.drop()
                raise DeviceTimeoutError(f"no reply from {self.name} to {what} within {self.timeout_s:g} s") from None
            except ConnectionException as exc:
                self.drop()
                raise DeviceUnreachableError(f"connection to {self.name} lost during {what}: {exc}") from None
            except ModbusException as exc:
                self.drop()
                raise DeviceUnreachableError(f"{self.name}: {what} failed: {exc}") from None
        if rr.isError():
            raise ModbusError(getattr(rr, "exception_code", 0), f"{self.name} {what}")
        return rr

    async def read_holding(self, unit: int, addr: int, count: int) -> list[int]:
        rr = await self._call(
            f"unit {unit} read {addr}+{count}",
            lambda c: c.read_holding_registers(addr, count=count, device_id=unit),
        )
        regs = rr.registers
        if len(regs) < count:
            raise DeviceError(f"{self.name} unit {unit} read {addr}+{count}: short reply of {len(regs)} registers")
        return regs

    async def read_input(self, unit: int, addr: int, count: int) -> list[int]:
        rr = await self._call(
            f"unit {unit} read input {addr}+{count}",
            lambda c: c.read_input_registers(addr, count=count, device_id=unit),
        )
        return rr.registers

    async def write(self, unit: int, addr: int, values: list[int]) -> None:
        """Write holding registers: FC6 for one register, FC16 for a run."""
        if len(values) == 1:
            await self._call(f"unit {unit} write {addr}", lambda c: c.write_register(addr, values[0], device_id=unit))
        else:
            await self._call(
                f"unit {unit} write {addr}+{len(values)}",
                lambda c: c.write_registers(addr, values, device_id=unit),
            )

    def drop(self) -> None:
        """Close the connection; the next request reconnects."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def reader(self, unit: int) -> Callable[[int, int], Awaitable[list[int]]]:
        """A ``ReadFn`` for discovery on ``unit``."""
        return lambda addr, count: self.read_holding(unit, addr, count)
