"""The operator API's way into the command path: :class:`CommandPort`, answered by
:class:`LocalCommands` when the API runs beside the controller (tests, tools) and by
:class:`~sparcs.controller.api_link.RemoteCommands` when it runs in a process of its own
(`sparcs run`). Either way every command reaches the controller's one
:class:`~sparcs.controller.operations.Operations` and is stored with its audit entry before the
API acknowledges it.
"""

from __future__ import annotations

from typing import Protocol

from sparcs.controller.commands import Command, CommandRequest
from sparcs.controller.operations import Operations


class ControlUnavailable(RuntimeError):
    """The control process did not answer a command in time (or is not connected): the API answers 503."""


class CommandPort(Protocol):
    """Submit, cancel and resume operator commands and ask for dispatches; count refused ones.

    Each method answers as :class:`~sparcs.controller.operations.Operations`' method of the same
    name, raises :class:`~sparcs.controller.commands.CommandError` for a command that cannot be
    applied, and :class:`ControlUnavailable` when the controller cannot be reached.
    """

    async def submit(self, request: CommandRequest, who: str) -> Command: ...
    async def cancel(self, command_id: int, who: str) -> list[int] | None: ...
    async def resume(self, who: str) -> list[int]: ...
    async def dispatch_now(self, who: str) -> bool: ...
    def refused(self, kind: str, result: str) -> None: ...


class LocalCommands:
    """The command path of a controller in this process."""

    def __init__(self, ops: Operations):
        self._ops = ops

    async def submit(self, request: CommandRequest, who: str) -> Command:
        return self._ops.submit(request, who)

    async def cancel(self, command_id: int, who: str) -> list[int] | None:
        return self._ops.cancel(command_id, who)

    async def resume(self, who: str) -> list[int]:
        return self._ops.resume(who)

    async def dispatch_now(self, who: str) -> bool:
        return self._ops.dispatch_now(who)

    def refused(self, kind: str, result: str) -> None:
        self._ops.refused(kind, result)
