"""One reused Modbus TCP connection per endpoint, shared serially by the unit ids behind it.

Every request goes through ``Link``: it connects on demand, applies the timeout, maps pymodbus's
failures onto ``drivers.errors``, and drops the connection after a timeout so that a late reply
can never be taken for the answer to a neighbour's next request.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import Awaitable, Callable
from typing import Any

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

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
        # reconnect_delay=0: no background reconnect loop; the poller's back-off decides when to retry.
        c = AsyncModbusTcpClient(self.host, port=self.port, timeout=self.timeout_s, retries=0, reconnect_delay=0)
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
