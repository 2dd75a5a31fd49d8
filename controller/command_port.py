"""The operator API's way into the command path (commands, a device's control switch, a reload of
the fleet file): :class:`CommandPort`, answered by
:class:`LocalCommands` when the API runs beside the controller (tests, tools) and by
:class:`~sparcs.controller.api_link.RemoteCommands` when it runs in a process of its own
(`sparcs run`). Either way every command reaches the controller's one
:class:`~sparcs.controller.operations.Operations` and is stored with its audit entry before the
API acknowledges it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from sparcs.controller.commands import Command, CommandRequest

if TYPE_CHECKING:
    from sparcs.controller.cycle import Controller
    from sparcs.controller.reload import Reloader


class ControlUnavailable(RuntimeError):
    """The control process did not answer a command in time (or is not connected): the API answers 503."""


class CommandPort(Protocol):
    """Submit, cancel and resume operator commands and ask for dispatches; count refused ones; switch
    a device's control; reload the fleet file.

    Each command method answers as :class:`~sparcs.controller.operations.Operations`' method of the
    same name, raises :class:`~sparcs.controller.commands.CommandError` for a command that cannot be
    applied, and :class:`ControlUnavailable` when the controller cannot be reached.
    ``switch_control`` answers as :func:`switch_control` (raises
    :class:`~sparcs.controller.device_control.UnknownDevice`); ``reload`` the
    :class:`~sparcs.controller.reload.ReloadReport` as a dict, None when there is no file to reload.
    """

    async def submit(self, request: CommandRequest, who: str) -> Command: ...
    async def cancel(self, command_id: int, who: str) -> list[int] | None: ...
    async def resume(self, who: str) -> list[int]: ...
    async def dispatch_now(self, who: str) -> bool: ...
    async def switch_control(self, device_id: str, controlled: bool, who: str) -> dict[str, Any]: ...
    async def reload(self, who: str) -> dict[str, Any] | None: ...
    def refused(self, kind: str, result: str) -> None: ...


class LocalCommands:
    """The command path of a controller in this process; ``reloader``: its fleet file's reload (None
    when it was not started from a file)."""

    def __init__(self, ctl: Controller, reloader: Reloader | None = None):
        self._ctl, self._ops, self._reloader = ctl, ctl.operations, reloader

    async def submit(self, request: CommandRequest, who: str) -> Command:
        return self._ops.submit(request, who)

    async def cancel(self, command_id: int, who: str) -> list[int] | None:
        return self._ops.cancel(command_id, who)

    async def resume(self, who: str) -> list[int]:
        return self._ops.resume(who)

    async def dispatch_now(self, who: str) -> bool:
        return self._ops.dispatch_now(who)

    async def switch_control(self, device_id: str, controlled: bool, who: str) -> dict[str, Any]:
        return switch_control(self._ctl, device_id, controlled, who)

    async def reload(self, who: str) -> dict[str, Any] | None:
        return None if self._reloader is None else self._reloader.reload(who).as_dict()

    def refused(self, kind: str, result: str) -> None:
        self._ops.refused(kind, result)


def switch_control(ctl: Controller, device_id: str, controlled: bool, who: str) -> dict[str, Any]:
    """Set a device's control switch (stored and audited first) and ask for a re-plan; returns the
    switch's view (``switched_at`` in Unix s). Raises
    :class:`~sparcs.controller.device_control.UnknownDevice`."""
    view = ctl.device_control.switch(device_id, controlled, who)
    ctl.request_dispatch()
    return view
