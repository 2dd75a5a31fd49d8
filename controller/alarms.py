"""Alarms that follow a condition: raised when it starts, cleared when it ends, kept in the store.

Sources name what an alarm is about: ``device:<id>`` (a stale device), ``write:<id>`` (a setpoint
not in force), ``dispatch`` (a plan not from the optimizer). Alarms still open from before a
restart are cleared when their condition ends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from sqlalchemy.exc import SQLAlchemyError

from sparcs.controller.state import device_problem
from sparcs.controller.store import Store
from sparcs.drivers.telemetry import Telemetry
from sparcs.drivers.writer import WriteResult

log = logging.getLogger("sparcs.alarms")

FOLLOWED_PREFIXES = ("device:", "write:", "prices:")
"""Sources whose open alarms are taken over from the store at start-up."""


class Alarms:
    """The open condition alarms of one controller, mirrored in the store."""

    def __init__(self, store: Store, on_store_error: Callable[[str], None] = lambda what: None):
        """``on_store_error`` is told of every alarm change the store did not take."""
        self.store = store
        self._store_error = on_store_error
        self.open = {a["source"] for a in store.alarms(active_only=True) if a["source"].startswith(FOLLOWED_PREFIXES)}

    def follow(self, source: str, active: bool, now: float, message: str, severity: str = "warning") -> None:
        """Raise the alarm of ``source`` when its condition starts, clear it when the condition ends.

        What is open changes only once the store has taken the change: while the store fails, the
        raise or clear is tried again at the next call, so no change is forgotten."""
        try:
            if active and source not in self.open:
                self.store.raise_alarm(at=now, severity=severity, source=source, message=message)
                self.open.add(source)
            elif not active and source in self.open:
                self.store.clear_alarms(source, now)
                self.open.discard(source)
        except SQLAlchemyError as exc:
            log.warning("alarm %s not stored, tried again at the next poll: %s", source, exc)
            self._store_error("alarm")

    def devices(self, telemetry: Mapping[str, Telemetry], now: float) -> None:
        """A device that cannot take part in control (:func:`~sparcs.controller.state.device_problem`:
        stale, or a required value not good) is an alarm until it can again."""
        for t in telemetry.values():
            problem = device_problem(t)
            self.follow(
                f"device:{t.device_id}",
                problem is not None,
                now,
                f"device {t.device_id} (site {t.site_id}) {problem}; its site is left out of the plan meanwhile",
            )

    def writes(self, results: Mapping[str, WriteResult], now: float) -> None:
        """A setpoint that could not be written, or reads back differently, is an alarm until it is in
        force: a later result of ``unchanged`` (in force and read back) or ``skipped`` clears it."""
        for dev_id, r in results.items():
            self.follow(
                f"write:{dev_id}",
                r.action == "failed" or r.mismatch,
                now,
                f"setpoint for {dev_id} not in force: {r.detail or 'it reads back differently'}",
            )

    def dispatch(self, path: str, reason: str, now: float) -> None:
        """Every plan not from the optimizer raises a warning; an optimal plan clears them."""
        if path == "optimal":
            self.store.clear_alarms("dispatch", now)
        else:
            self.store.raise_alarm(
                at=now,
                severity="warning",
                source="dispatch",
                message=f"plan from {path}: {reason or 'no reason given'}",
            )

    def planning_failed(self, exc: Exception, now: float) -> None:
        self.store.raise_alarm(
            at=now, severity="critical", source="dispatch", message=f"planning failed: {exc}; last plan kept"
        )
