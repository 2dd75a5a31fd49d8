"""A SunSpec device on a link: discovery once, then one request per polled model; writes on its control models."""

from __future__ import annotations

from collections.abc import Mapping

from sparcs.config.register_map import FailSafe
from sparcs.config.schema import DeviceConfig
from sparcs.drivers import sunspec_control
from sparcs.drivers.device import UNKNOWN, InForce, LinkFor, SetpointKind, WritePlan, pv_limit_in_telemetry
from sparcs.drivers.discovery import MAX_READ, ModelLocation, SunSpecMap, discover, read_model
from sparcs.drivers.errors import DeviceError
from sparcs.drivers.link import Link
from sparcs.drivers.sunspec_codec import Models
from sparcs.drivers.sunspec_map import PollPlan, decode_models, poll_plan, to_raw_si, wmax_of
from sparcs.drivers.telemetry import Reading

STATIC_EVERY_POLLS = 60  # nameplate and settings (WMax) change rarely; re-read them this often
SUNSPEC_FAIL_SAFE = FailSafe(
    kind="revert_timer",
    note="SunSpec revert timers: 123 WMaxLimPct_RvrtTms and Conn_RvrtTms, 124 InOutWRte_RvrtTms, "
    "704 WMaxLimPctRvrtTms and WSetRvrtTms",
)
METER_FAIL_SAFE = FailSafe(kind="none", note="a meter takes no setpoints")
NO_CONTROL_FAIL_SAFE = FailSafe(kind="none", note="no SunSpec control model (124 or 704): monitor only")


def adjacent_runs(locations: tuple[ModelLocation, ...]) -> list[list[ModelLocation]]:
    """The models in runs that one request can read: each starts where the one before ends, together
    at most 125 registers (122 + 123 + 160 of a PV inverter in one read)."""
    runs: list[list[ModelLocation]] = []
    for loc in sorted(locations, key=lambda m: m.addr):
        last = runs[-1][-1] if runs else None
        if (
            last is not None
            and loc.addr == last.addr + last.length + 2
            and (loc.addr + loc.length + 2 - runs[-1][0].addr <= MAX_READ)
        ):
            runs[-1].append(loc)
        else:
            runs.append([loc])
    return runs


class SunSpecDevice:
    """Reads and writes one SunSpec device; keeps the discovered layout and the latest decoded models.

    ``models`` holds the latest decoded points per model id (static and dynamic), and ``blocks``
    the raw registers of the models read in the latest poll: writes are built on them
    (:mod:`drivers.sunspec_control`).
    """

    protocol = "sunspec"

    def __init__(self, link: Link, unit: int, kind: str, invert_sign: bool = False):
        self.link, self.unit, self.kind, self.invert_sign = link, unit, kind, invert_sign
        self.map: SunSpecMap | None = None
        self.plan: PollPlan | None = None
        self.models: Models = {}
        self.blocks: dict[int, list[int]] = {}
        self._polls_since_static = 0

    @classmethod
    def from_config(cls, cfg: DeviceConfig, link_for: LinkFor) -> SunSpecDevice:
        """The registry's factory (protocol ``sunspec``)."""
        return cls(link_for(), cfg.unit, cfg.kind, cfg.invert_sign)

    def forget(self) -> None:
        """Drop the discovered layout: the next poll discovers again (after a restart or a layout change)."""
        self.map = self.plan = None
        self.models, self.blocks = {}, {}

    async def _setup(self) -> None:
        self.map = await discover(self.link.reader(self.unit))
        self.plan = poll_plan(self.kind, self.map)
        await self._read_static()

    async def _read_static(self) -> None:
        assert self.plan is not None
        blocks = {loc.model_id: await read_model(self.link.reader(self.unit), loc) for loc in self.plan.static}
        self.models.update(decode_models(blocks, static=True))
        self._polls_since_static = 0

    async def poll(self) -> dict[str, float | None]:
        """Read the dynamic models and return the raw SI telemetry values (before quality)."""
        if self.plan is None:
            await self._setup()
        elif self._polls_since_static >= STATIC_EVERY_POLLS:
            await self._read_static()
        assert self.plan is not None
        self._polls_since_static += 1
        read = self.link.reader(self.unit)
        blocks = {}
        for run in adjacent_runs(self.plan.dynamic):
            start = run[0].addr
            got = await read(start, run[-1].addr + run[-1].length + 2 - start) if len(run) > 1 else None
            for loc in run:
                regs = got[loc.addr - start : loc.addr - start + loc.length + 2] if got else await read_model(read, loc)
                self._check_id(loc, regs)
                blocks[loc.model_id] = regs
        self.blocks = blocks
        self.models.update(decode_models(blocks))
        return to_raw_si(self.kind, self.models, self.invert_sign)

    def _check_id(self, loc: ModelLocation, regs: list[int]) -> None:
        """The model's ID register must read its id, else the layout changed: rediscover."""
        if regs[0] != loc.model_id:
            self.forget()
            raise DeviceError(f"model {loc.model_id} expected at {loc.addr}, found id {regs[0]}: rediscovering")

    # --- the Device interface beyond polling ----------------------------------------------------

    @property
    def fail_safe(self) -> FailSafe:
        """Every SunSpec control model this driver writes carries a revert timer, written with each setpoint;
        a discovered battery without one (an 802 bank on its own) takes no setpoints at all."""
        if self.kind == "meter":
            return METER_FAIL_SAFE
        if self.kind == "battery" and self.map is not None and self.map.find(124, 704) is None:
            return NO_CONTROL_FAIL_SAFE
        return SUNSPEC_FAIL_SAFE

    def revert_left_s(self, kind: SetpointKind) -> float | None:
        """The seconds 704's own revert timer had left at the latest poll (``…RvrtRem``); None without 704."""
        c = self.models.get(704)
        v = c.get("WMaxLimPctRvrtRem" if kind == "pv" else "WSetRvrtRem") if c else None
        return float(v) if isinstance(v, int | float) else None

    @property
    def can_stop_pv(self) -> bool:
        """A PV inverter with model 123 stops at 0 W with ``Conn`` = 0 (with its own revert timer)."""
        return self.kind in ("pv_inverter", "hybrid") and self.map is not None and self.map.find(123) is not None

    def model_ids(self) -> list[int]:
        return self.map.ids if self.map is not None else []

    def pv_base_w(self, latest: Mapping[str, Reading]) -> float | None:
        """WMax from the models read (121 WMax, else 702 WMax, else the rating)."""
        return wmax_of(self.models)

    def in_force(self, kind: SetpointKind, latest: Mapping[str, Reading]) -> InForce:
        """PV: the polled limit in the telemetry. Battery: decoded from the latest poll's 124 (a 704
        battery polls 701 + 713, so its setpoint is not seen)."""
        if kind == "pv":
            return pv_limit_in_telemetry(latest)
        if 124 in self.blocks:
            return sunspec_control.battery_from_control(124, self.blocks[124], self.models)
        return UNKNOWN

    async def pv_limit_writes(self, target_w: float | None, wmax_w: float, revert_s: int) -> WritePlan:
        return await sunspec_control.pv_limit_plan(self, target_w, wmax_w, revert_s)

    async def battery_writes(self, target_w: float | None, revert_s: int) -> WritePlan:
        return await sunspec_control.battery_plan(self, target_w, revert_s)

    async def write(self, addr: int, values: list[int]) -> None:
        await self.link.write(self.unit, addr, values)

    async def read(self, addr: int, count: int) -> list[int]:
        return await self.link.read_holding(self.unit, addr, count)
