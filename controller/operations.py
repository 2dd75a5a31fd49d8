"""The one path operator commands take into a running controller, whoever sends them: the API, the
twin's scenario actions, the SunSpec pool interface and the control-box relay inputs.

Each accepted command is stored with its audit entry before it is acknowledged (by the
:class:`~sparcs.controller.commands.CommandBook`), counted in the metrics, and followed by a re-plan
at the next opportunity. A command that cannot be applied raises
:class:`~sparcs.controller.commands.CommandError` naming the request field.
"""

from __future__ import annotations

from collections.abc import Callable

from sparcs.controller.commands import (
    Command,
    CommandBook,
    CommandError,
    CommandRequest,
    Para14aRequest,
    PauseRequest,
    PoolLimitRequest,
    RelayRequest,
    ScheduleRequest,
    StageRequest,
)
from sparcs.controller.metrics import Metrics
from sparcs.controller.store import Store

KIND = {
    StageRequest: "stage",
    Para14aRequest: "para14a",
    ScheduleRequest: "schedule",
    PauseRequest: "pause",
    PoolLimitRequest: "pool_limit",
    RelayRequest: "relay",
}


class Operations:
    """Submits, cancels and resumes operator commands, and asks for dispatches, on one controller."""

    def __init__(
        self,
        commands: CommandBook,
        store: Store,
        clock: Callable[[], float],
        metrics: Metrics,
        request_dispatch: Callable[..., None],
    ):
        self.commands, self.store, self.clock, self.metrics = commands, store, clock, metrics
        self._request_dispatch = request_dispatch

    def submit(self, request: CommandRequest, who: str) -> Command:
        """Check, store and audit ``request`` for ``who``; the controller re-plans with it."""
        kind = KIND[type(request)]
        try:
            cmd = self.commands.submit(request, who, self.clock())
        except CommandError:
            self.metrics.commands.labels(kind, "rejected").inc()
            raise
        self._accepted(kind)
        return cmd

    def cancel(self, command_id: int, who: str) -> list[int] | None:
        """Cancel an active command (the next active one applies); None when no such command is active."""
        if self.commands.find(command_id) is None:
            return None
        done = self.commands.cancel([command_id], who, self.clock())
        self._accepted("cancel")
        return done

    def resume(self, who: str) -> list[int]:
        """Cancel every pause; returns the ids cancelled (empty when not paused)."""
        done = self.commands.resume(who, self.clock())
        self._accepted("resume")
        return done

    def dispatch_now(self, who: str) -> bool:
        """Ask for a plan at once; ignored (and audited so) while paused. True when requested."""
        now = self.clock()
        paused = self.commands.paused(now)
        self.store.audit_event(
            ts=now, who=who, action="dispatch-now", params={}, result="ignored: paused" if paused else "requested"
        )
        self.metrics.commands.labels("dispatch-now", "accepted").inc()
        if not paused:
            self._request_dispatch(at_once=True)
        return not paused

    def refused(self, kind: str, result: str, count: int = 1) -> None:
        """Count ``count`` commands of ``kind`` the API refused before they reached this path
        (``rejected``: invalid, ``denied``: not authorised)."""
        self.metrics.commands.labels(kind, result).inc(count)

    def _accepted(self, kind: str) -> None:
        self.metrics.commands.labels(kind, "accepted").inc()
        self._request_dispatch()
