"""A SunSpec device on a link: discovery once, then one request per polled model."""

from __future__ import annotations

from sparcs.drivers.discovery import SunSpecMap, discover, read_model
from sparcs.drivers.errors import DeviceError
from sparcs.drivers.link import Link
from sparcs.drivers.sunspec_map import PollPlan, decode_models, poll_plan, to_raw_si

STATIC_EVERY_POLLS = 60  # nameplate and settings (WMax) change rarely; re-read them this often


class SunSpecDevice:
    """Reads one SunSpec device; keeps the discovered layout and the latest decoded models.

    ``models`` holds the latest decoded points per model id (static and dynamic), and ``blocks``
    the raw registers of the models read in the latest poll: the writer builds its writes on them.
    """

    protocol = "sunspec"

    def __init__(self, link: Link, unit: int, kind: str, invert_sign: bool = False):
        self.link, self.unit, self.kind, self.invert_sign = link, unit, kind, invert_sign
        self.map: SunSpecMap | None = None
        self.plan: PollPlan | None = None
        self.models: dict[int, dict] = {}
        self.blocks: dict[int, list[int]] = {}
        self._polls_since_static = 0

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
        for loc in self.plan.dynamic:
            regs = await read_model(read, loc)
            if regs[0] != loc.model_id:
                self.forget()
                raise DeviceError(f"model {loc.model_id} expected at {loc.addr}, found id {regs[0]}: rediscovering")
            blocks[loc.model_id] = regs
        self.blocks = blocks
        self.models.update(decode_models(blocks))
        return to_raw_si(self.kind, self.models, self.invert_sign)
