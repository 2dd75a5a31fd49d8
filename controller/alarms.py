"""Alarms that follow a condition: raised when it starts, cleared when it ends, kept in the store.

Sources name what an alarm is about: ``device:<id>`` (a stale device), ``write:<id>`` (a setpoint
not in force), ``dispatch`` (a plan not from the optimizer). Alarms still open from before a
restart are cleared when their condition ends.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping

from sqlalchemy.exc import SQLAlchemyError

from sparcs.controller.history import StoreWriter, WriteJob
from sparcs.controller.state import device_problem
from sparcs.controller.store import AlarmChange, Store
from sparcs.drivers.telemetry import CLOCK_KEY, Telemetry
from sparcs.drivers.writer import WriteResult

log = logging.getLogger("sparcs.alarms")

FOLLOWED_PREFIXES = ("device:", "write:", "relay:", "prices:", "clock:")
"""Sources whose open alarms are taken over from the store at start-up."""
BATCH_MAX = 200
"""Alarm changes per transaction at most: each looks up the source's open alarms (the table has no
index on the source), and SQLite holds its one write lock for the whole transaction, so a burst of
thousands (edges' clocks judged off under a backlog) in one would keep the edge polls' writes out
past the busy timeout."""


class _Batch:
    """Alarm changes for one writer job: stored in one transaction. Once the writer has taken it
    (``taken``), later changes go to a new batch."""

    def __init__(self) -> None:
        self.changes: list[AlarmChange] = []
        self.taken = False


class Alarms:
    """The open condition alarms of one controller, mirrored in the store."""

    def __init__(
        self,
        store: Store,
        on_store_error: Callable[[str], None] = lambda what: None,
        writer: StoreWriter | None = None,
    ):
        """``on_store_error`` is told of every alarm change the store did not take. With ``writer``
        the changes go through the history's writer thread (in order, tried until stored), so a slow
        store never holds up the poll that raises them; without, they are written at once."""
        self.store = store
        self._store_error = on_store_error
        self._writer = writer
        self._lock = threading.Lock()  # the batch is filled here and taken by the writer's thread
        self._batch: _Batch | None = None
        self.open = {a["source"] for a in store.alarms(active_only=True) if a["source"].startswith(FOLLOWED_PREFIXES)}

    def follow(self, source: str, active: bool, now: float, message: str, severity: str = "warning") -> None:
        """Raise the alarm of ``source`` when its condition starts, clear it when the condition ends.

        What is open changes only once the store has taken the change: while the store fails, the
        raise or clear is tried again at the next call, so no change is forgotten (through the writer
        it is kept and tried again there)."""
        if self._writer is not None:
            if active and source not in self.open:
                self.open.add(source)
                self._queue(AlarmChange(now, source, True, message, severity), now)
            elif not active and source in self.open:
                self.open.discard(source)
                self._queue(AlarmChange(now, source, False), now)
            return
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

    def devices(self, telemetry: Mapping[str, Telemetry], now: float, max_clock_skew_s: float = 60.0) -> None:
        """A device that cannot take part in control (:func:`~sparcs.controller.state.device_problem`:
        stale, or a required value not good) is an alarm until it can again; so is a device whose own
        clock (``clock_offset_s``, SunSpec 122) is more than ``max_clock_skew_s`` off ours."""
        for t in telemetry.values():
            problem = device_problem(t)
            self.follow(
                f"device:{t.device_id}",
                problem is not None,
                now,
                f"device {t.device_id} (site {t.site_id}) {problem}; its site is left out of the plan meanwhile",
            )
            r = t.values.get(CLOCK_KEY)
            if r is not None or f"clock:{t.device_id}" in self.open:
                offset = r.value if r is not None and r.quality == "good" else None
                self.follow(
                    f"clock:{t.device_id}",
                    offset is not None and abs(offset) > max_clock_skew_s,
                    now,
                    f"device {t.device_id} (site {t.site_id}): its clock is {offset or 0.0:+.0f} s off ours (more "
                    f"than {max_clock_skew_s:g} s); its revert timers are judged on its clock: set its time source",
                )

    def writes(self, results: Mapping[str, WriteResult], now: float) -> None:
        """A setpoint that could not be written, reads back differently, or that the device can only
        approach (``shortfall_w``: K1's 0 W held at a floor) is an alarm until it is in force: a later
        result of ``unchanged`` (in force and read back) or ``skipped`` clears it."""
        for dev_id, r in results.items():
            self.follow(
                f"write:{dev_id}",
                r.action == "failed" or r.mismatch or bool(r.shortfall_w),
                now,
                f"setpoint for {dev_id} not in force: {r.detail or 'it reads back differently'}",
            )

    def dispatch(self, path: str, reason: str, now: float) -> None:
        """Every plan not from the optimizer raises a warning; an optimal plan clears them."""
        if path == "optimal":
            self._queue(AlarmChange(now, "dispatch", False), now)
        else:
            self._queue(AlarmChange(now, "dispatch", True, f"plan from {path}: {reason or 'no reason given'}"), now)

    def planning_failed(self, exc: Exception, now: float) -> None:
        self._queue(AlarmChange(now, "dispatch", True, f"planning failed: {exc}; last plan kept", "critical"), now)

    def _queue(self, change: AlarmChange, now: float) -> None:
        """Through the writer when there is one (never dropped), else at once. Through the writer the
        changes made until it takes them (a poll's, a burst of edges' will messages) go in one job,
        one transaction (:meth:`Store.change_alarms`; at most :data:`BATCH_MAX` each), in the order
        made; a job the store refuses is tried again whole, so the store never holds part of it."""
        if self._writer is None:
            self.store.change_alarms([change])
            return
        with self._lock:
            batch = self._batch
            new = batch is None or batch.taken or len(batch.changes) >= BATCH_MAX
            if new:
                batch = self._batch = _Batch()
            assert batch is not None
            batch.changes.append(change)
        if new:
            self._writer.submit(WriteJob("alarm", now, 1, lambda st: self._store_batch(st, batch), droppable=False))

    def _store_batch(self, store: Store, batch: _Batch) -> None:
        """The writer thread's job: store ``batch`` in one transaction (raises when the store fails)."""
        with self._lock:
            batch.taken = True
            changes = list(batch.changes)
        store.change_alarms(changes)
