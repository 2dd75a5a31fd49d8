"""A Modbus I/O module's discrete inputs (function code 2): the contacts of a control box (FNN
Steuerbox, ripple-control receiver) wired to it. Reading only; the controller decides what the
contacts mean (``controller.relay_inputs``).

Failures raise :mod:`sparcs.drivers.errors` as every other device read does (through
:class:`~sparcs.drivers.link.Link`: connect on demand, timeout, drop after a timeout).
"""

from __future__ import annotations

from sparcs.drivers.errors import DeviceError
from sparcs.drivers.link import Link


class DiscreteInputLink(Link):
    """A :class:`Link` that also reads discrete inputs."""

    async def read_discrete(self, unit: int, addr: int, count: int) -> list[bool]:
        """``count`` discrete inputs from ``addr`` (True = contact closed); DeviceError when the reply is short."""
        rr = await self._call(
            f"unit {unit} read discrete inputs {addr}+{count}",
            lambda c: c.read_discrete_inputs(addr, count=count, device_id=unit),
        )
        bits = list(rr.bits[:count])
        if len(bits) < count:
            raise DeviceError(f"{self.name} unit {unit} discrete inputs {addr}+{count}: short reply of {len(bits)}")
        return [bool(b) for b in bits]
