"""Control-box relay inputs: the contacts of an FNN Steuerbox or ripple-control receiver, read as
discrete inputs of a Modbus I/O module on every poll, become relay commands for the fleet or a group.

Each contact maps to an action (config ``relay_inputs[].contacts``): a stage K1–K4, §14a dimming,
or ``none``. The closed contacts give the state: the most restrictive of their stages (K1 = 0 % …
K4 = 100 % of the PV rating, docs/definitions.md "Grid rules") and dimming if any dimming contact is
closed; no closed contact (or only ``none``) means no limit. A change of state is submitted through
:class:`~sparcs.controller.operations.Operations` as a :class:`~sparcs.controller.commands.RelayRequest`
(stored with one audit entry, replacing the previous state), before this poll's writes, so it
reaches the devices with this cycle's writes.

When the I/O module does not answer, the last state in force (kept by the command book, restored
from the store after a restart) stays in force and the alarm ``relay:<id>`` is raised until it
answers again: never a looser limit than the last one known.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import cast

from sparcs.config.grid_rules import Stage, most_restrictive_stage
from sparcs.config.schema import RelayInputConfig
from sparcs.controller.alarms import Alarms
from sparcs.controller.commands import RelayRequest
from sparcs.controller.operations import Operations
from sparcs.drivers.errors import DeviceError
from sparcs.drivers.io_module import DiscreteInputLink


@dataclass(frozen=True)
class RelayState:
    """What closed contacts ask for: a stage (None = none) and §14a dimming."""

    stage: str | None
    para14a: bool


def relay_state(contacts: list[bool], actions: list[str]) -> RelayState:
    """The state of closed ``contacts`` (True = closed) under their ``actions`` (K1..K4, para14a, none)."""
    closed = [a for a, on in zip(actions, contacts, strict=False) if on]
    return RelayState(most_restrictive_stage(a for a in closed if a.startswith("K")), "para14a" in closed)


class RelayInputs:
    """Reads every configured I/O module and submits state changes; see the module docstring."""

    def __init__(self, inputs: list[RelayInputConfig], timeout_s: float):
        self.inputs = inputs
        self._links = {r.id: DiscreteInputLink(r.host, r.port, timeout_s) for r in inputs}

    async def read(self) -> dict[str, list[bool] | str]:
        """Per input id: the contacts read now, or the error text when the module did not answer."""

        async def one(r: RelayInputConfig) -> list[bool] | str:
            try:
                return await self._links[r.id].read_discrete(r.unit, r.address, len(r.contacts))
            except DeviceError as exc:
                return str(exc)

        results = await asyncio.gather(*(one(r) for r in self.inputs))
        return {r.id: res for r, res in zip(self.inputs, results, strict=True)}

    def apply(self, read: dict[str, list[bool] | str], ops: Operations, alarms: Alarms, now: float) -> None:
        """Submit each input whose state differs from the one in force; alarm the silent ones."""
        for r in self.inputs:
            got = read.get(r.id, "not read")
            source = f"relay:{r.id}"
            if isinstance(got, str):
                alarms.follow(
                    source,
                    True,
                    now,
                    f"relay input {r.id} ({r.host}:{r.port}) does not answer: {got}; "
                    "the last stage read stays in force",
                )
                continue
            alarms.follow(source, False, now, "")
            want = relay_state(got, list(r.contacts))
            cmd = ops.commands.relay_state(r.id)
            have = RelayState(None, False) if cmd is None else RelayState(cmd.params["stage"], cmd.params["para14a"])
            if want == have:
                continue
            stage = cast("Stage | None", want.stage)
            ops.submit(RelayRequest(source=r.id, group=r.group, stage=stage, para14a=want.para14a), source)

    def close(self) -> None:
        for link in self._links.values():
            link.drop()
