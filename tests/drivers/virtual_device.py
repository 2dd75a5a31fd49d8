"""A protocol added from outside the drivers: a "virtual" PV inverter served from memory.

It exists to prove that a protocol is its own module plus one registration line (the last line
below): the poller builds it from a fleet file's ``protocol: virtual``, and the writer drives it
with its policy unchanged. Its registers live in :data:`BANK`, by device id:

    0 available power (W)   1 WMax (W)   2 PV limit (W)   3 limit enabled (0/1)   4 revert timer (s)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from sparcs.config.register_map import FailSafe
from sparcs.config.schema import DeviceConfig
from sparcs.drivers.device import (
    UNKNOWN,
    InForce,
    LinkFor,
    RegisterWrite,
    SetpointKind,
    WritePlan,
    pv_limit_in_telemetry,
    register_protocol,
)
from sparcs.drivers.errors import DeviceError
from sparcs.drivers.telemetry import Reading

AVAILABLE, WMAX, LIMIT, ENABLED, TIMER = range(5)


@dataclass
class Registers:
    """One virtual device's holding registers; ``ignore_writes`` acknowledges writes without applying them."""

    regs: list[int] = field(default_factory=lambda: [0, 4000, 0, 0, 0])
    ignore_writes: bool = False
    writes: int = 0
    reads: int = 0


BANK: dict[str, Registers] = {}


class VirtualDevice:
    """A PV inverter whose output is ``min(available, limit)`` while the limit is enabled."""

    protocol = "virtual"
    fail_safe = FailSafe(kind="revert_timer", note="register 4: seconds until the limit lifts itself")

    def __init__(self, kind: str, bank: Registers):
        if kind != "pv_inverter":
            raise ValueError(f"a virtual device is a pv_inverter, not a {kind}")
        self.kind, self.bank = kind, bank

    @classmethod
    def from_config(cls, cfg: DeviceConfig, link_for: LinkFor) -> VirtualDevice:
        return cls(cfg.kind, BANK.setdefault(cfg.id, Registers()))  # no Modbus link: link_for is never called

    async def poll(self) -> dict[str, float | None]:
        available, wmax, limit, enabled, _ = await self.read(0, 5)
        return {
            "pv_w": float(min(available, limit) if enabled else available),
            "pv_limit_w": float(limit) if enabled else None,
            "wmax_w": float(wmax),
            "rating_w": float(wmax),
        }

    def forget(self) -> None:
        pass

    def model_ids(self) -> list[int]:
        return []

    def pv_base_w(self, latest: Mapping[str, Reading]) -> float | None:
        return float(self.bank.regs[WMAX])

    def in_force(self, kind: SetpointKind, latest: Mapping[str, Reading]) -> InForce:
        return pv_limit_in_telemetry(latest) if kind == "pv" else UNKNOWN

    async def pv_limit_writes(self, target_w: float | None, wmax_w: float, revert_s: int) -> WritePlan:
        if target_w is None:
            writes = (RegisterWrite(ENABLED, (0,), (0,)),)
        else:
            writes = (
                RegisterWrite(TIMER, (revert_s,), (0,)),
                RegisterWrite(LIMIT, (round(target_w),), (0,)),
                RegisterWrite(ENABLED, (1,), (0,)),  # enable last: never a stale limit
            )

        async def read_back() -> tuple[dict[int, int], float | None]:
            regs = await self.read(0, 5)
            return dict(enumerate(regs)), float(regs[LIMIT]) if regs[ENABLED] else None

        return WritePlan(writes, read_back)

    async def battery_writes(self, target_w: float | None, revert_s: int) -> WritePlan:
        raise DeviceError("a virtual device has no battery")

    async def write(self, addr: int, values: list[int]) -> None:
        self.bank.writes += 1
        if not self.bank.ignore_writes:
            self.bank.regs[addr : addr + len(values)] = values

    async def read(self, addr: int, count: int) -> list[int]:
        self.bank.reads += 1
        return self.bank.regs[addr : addr + count]


register_protocol("virtual", VirtualDevice.from_config)
