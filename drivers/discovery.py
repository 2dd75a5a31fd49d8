"""SunSpec discovery: find the base address and walk the model chain.

Discovery reads through a ``ReadFn`` (address, count) → registers, so the same walk serves the
poller's shared connections and the ``scan`` command. Candidates are tried in pysunspec2's order
(40000, 0, 50000); a Modbus exception, a wrong marker or no reply at one candidate moves on to the next.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sparcs.drivers.errors import DeviceError, DeviceTimeoutError, ModbusError

ReadFn = Callable[[int, int], Awaitable[list[int]]]
"""Read ``count`` holding registers from protocol address ``addr``; raises DeviceError subclasses."""

BASE_ADDRESSES = (40000, 0, 50000)
SUNS = (0x5375, 0x6E53)
END_ID = 0xFFFF
MAX_READ = 125
MAX_MODELS = 64  # a chain longer than this is a device bug, not a model list


@dataclass(frozen=True)
class ModelLocation:
    """Where one model sits: ``addr`` is the protocol address of its ID register."""

    model_id: int
    addr: int
    length: int  # L: registers after the 2-register header


@dataclass
class SunSpecMap:
    """The discovered layout of one device."""

    base: int
    models: list[ModelLocation] = field(default_factory=list)

    def find(self, *model_ids: int) -> ModelLocation | None:
        """The first model present among ``model_ids`` (in the order given)."""
        for mid in model_ids:
            for m in self.models:
                if m.model_id == mid:
                    return m
        return None

    @property
    def ids(self) -> list[int]:
        return [m.model_id for m in self.models]


class NotSunSpecError(DeviceError):
    """No SunSpec marker at any candidate base address."""


@dataclass(frozen=True)
class BaseProbe:
    """What one candidate base address gave: ``result`` is ``sunspec``, ``no_marker``, ``exception``
    or ``timeout``; ``detail`` says what was read or why nothing was."""

    address: int
    result: str
    detail: str


async def probe_base(read: ReadFn, base: int) -> BaseProbe:
    """Read the two registers at ``base``: SunS, something else, an exception reply, or no reply.

    A lost or refused connection is not a property of one candidate: it propagates."""
    try:
        regs = await read(base, 2)
    except ModbusError as exc:
        return BaseProbe(base, "exception", str(exc))
    except DeviceTimeoutError as exc:  # some devices stay silent at addresses they do not map
        return BaseProbe(base, "timeout", str(exc))
    if tuple(regs[:2]) == SUNS:
        return BaseProbe(base, "sunspec", "SunS marker")
    return BaseProbe(base, "no_marker", f"no SunS marker (read {regs[0]:#06x} {regs[1]:#06x})")


async def find_base(read: ReadFn) -> int:
    """The first candidate base address holding "SunS"; an exception reply or a timeout at one
    candidate moves on to the next."""
    tried = []
    for base in BASE_ADDRESSES:
        probe = await probe_base(read, base)
        if probe.result == "sunspec":
            return base
        tried.append(probe)
    if all(p.result == "timeout" for p in tried):
        raise DeviceTimeoutError(tried[0].detail)
    raise NotSunSpecError("not a SunSpec device (" + "; ".join(f"{p.address}: {p.detail}" for p in tried) + ")")


async def discover(read: ReadFn, base: int | None = None) -> SunSpecMap:
    """Find the base address (unless given) and list every model up to the end marker."""
    base = await find_base(read) if base is None else base
    found = SunSpecMap(base=base)
    addr = base + 2
    for _ in range(MAX_MODELS):
        mid, length = await read(addr, 2)
        if mid == END_ID:
            return found
        if not found.models and mid != 1:
            raise NotSunSpecError(f"the first model at {addr} is {mid}, not the common model 1")
        found.models.append(ModelLocation(mid, addr, length))
        addr += 2 + length
    raise NotSunSpecError(f"no end marker after {MAX_MODELS} models from base {base}")


async def read_model(read: ReadFn, loc: ModelLocation, limit: int = MAX_READ) -> list[int]:
    """The model's registers from its ID register on, in one request of at most ``limit`` registers.

    Long models (701 has L=153) are cut at ``limit``: every point the telemetry needs lies in the
    first 125 registers, and one request per model keeps a poll at two requests per device.
    """
    return await read(loc.addr, min(loc.length + 2, limit))


async def read_model_full(read: ReadFn, loc: ModelLocation) -> list[int]:
    """The whole model, in chunks of at most 125 registers (for scans)."""
    total = loc.length + 2
    out: list[int] = []
    while len(out) < total:
        out += await read(loc.addr + len(out), min(MAX_READ, total - len(out)))
    return out
