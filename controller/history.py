"""The history a controller leaves: device telemetry, the fleet summary and the site rows (thinned to
``storage.telemetry_resolution_s``), the plans, the setpoints written and read back, and alarm
changes; pruned per table after its retention (``storage.retention``).

All of it is written by one writer thread (:class:`StoreWriter`) from a bounded queue, in order, so
a slow, full, read-only or locked store never delays a poll, the export guard or a device write.
When a write fails the writer keeps it, tries again every ``storage.write_retry_s``, and reports the
failure (``Controller.store_ok``, the metrics, /readyz and the store's own alarm); when it works
again the queued writes go in, the outage alarm is stored raised and cleared, and if the queue had
overflowed (``storage.write_queue`` rows) the span of what was dropped is stored as a history gap.
Nothing already stored is touched. Operator commands do not take this path: they are stored before
they are acknowledged (:mod:`sparcs.controller.operations`).

Each device, and the fleet, is recorded at most once per resolution bucket (the first poll in it).
Powers in W with the signs of docs/definitions.md "Signs".
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from sparcs.config.schema import StorageConfig
from sparcs.controller.plan import Plan
from sparcs.controller.setpoints import SiteCurtailment
from sparcs.controller.state import FleetState
from sparcs.controller.store import Store
from sparcs.drivers.telemetry import Telemetry
from sparcs.drivers.writer import WriteResult

log = logging.getLogger("sparcs.history")

PRUNE_EVERY_S = 3600.0
SITE_HISTORY_FIELDS = ("pv_w", "battery_w", "grid_w", "load_w", "export_w", "soc", "flex_up_w", "flex_down_w")
FLEET_BUCKET = "@fleet"
RECORDED_ACTIONS = frozenset({"limit", "release", "battery", "failed"})
"""Write results that are a Modbus write (or a failed one) and so a setpoints row; ``unchanged`` and
``skipped`` wrote nothing."""
OUTAGE_SOURCE = "store"


@dataclass(frozen=True)
class WriteJob:
    """One write for the store, run in one transaction. ``rows``: its weight in the queue bound;
    ``droppable``: False for alarm changes, which are never dropped when the queue overflows."""

    what: str  # history, plan, setpoints, alarm, prune
    ts: float
    rows: int
    run: Callable[[Store], Any]
    droppable: bool = True


class StoreWriter:
    """The one thread that writes history to the store, from a bounded in-memory queue, in order."""

    def __init__(
        self,
        store: Store,
        *,
        max_rows: int,
        retry_s: float,
        on_failure: Callable[[str], None] = lambda what: None,
        on_recovery: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.time,
    ):
        self.store, self.max_rows, self.retry_s, self.clock = store, max_rows, retry_s, clock
        self._on_failure, self._on_recovery = on_failure, on_recovery
        self._queue: deque[WriteJob] = deque()
        self._rows = 0
        self._busy = False  # a job is being written (or waiting to be tried again)
        self._cv = threading.Condition()
        self._stop = False
        self.failing_since: float | None = None
        self.last_error = ""
        self._dropped: list[WriteJob] = []
        self._thread = threading.Thread(target=self._run, name="sparcs-store-writer", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Writes queued or in hand."""
        with self._cv:
            return len(self._queue) + (1 if self._busy else 0)

    def submit(self, job: WriteJob) -> None:
        """Queue ``job`` (never blocks). Over the bound the oldest droppable writes are dropped and
        remembered as a history gap."""
        with self._cv:
            self._queue.append(job)
            self._rows += job.rows
            while self._rows > self.max_rows:
                victim = next((j for j in self._queue if j.droppable), None)
                if victim is None:
                    break
                self._queue.remove(victim)
                self._rows -= victim.rows
                self._dropped.append(victim)
            self._cv.notify()

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until every queued write is stored; False when that did not happen within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self._cv:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(min(left, 0.05))
        return True

    def close(self, timeout_s: float = 10.0) -> None:
        """Write what is queued (for up to ``timeout_s``), then stop the thread. What is left is logged."""
        if not self.flush(timeout_s):
            log.error("store writer stopped with %d writes not stored (%s)", self.pending, self.last_error)
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        self._thread.join(timeout_s)

    # -- the thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._stop:
                    self._cv.wait()
                if not self._queue:
                    return
                job = self._queue.popleft()
                self._rows -= job.rows
                self._busy = True
            self._write(job)
            with self._cv:
                self._busy = False
                self._cv.notify_all()

    def _write(self, job: WriteJob) -> None:
        """Write ``job``, trying again every ``retry_s`` until it is stored or the writer stops."""
        while True:
            try:
                job.run(self.store)
                if self.failing_since is not None or self._dropped:
                    self._recovered()
                return
            except (SQLAlchemyError, OSError) as exc:
                self._failed(job.what, exc)
            with self._cv:
                if self._stop:
                    log.error("%s write not stored at shutdown: %s", job.what, self.last_error)
                    return
                self._cv.wait(self.retry_s)  # close() wakes this wait

    def _failed(self, what: str, exc: Exception) -> None:
        self.last_error = str(exc).splitlines()[0][:300]
        now = self.clock()
        if self.failing_since is None:
            self.failing_since = now
            log.error("history store fails (%s write): %s; control goes on from memory", what, self.last_error)
        self.store.outage = {
            "id": 0,
            "raised_at": self.failing_since,
            "severity": "critical",
            "source": OUTAGE_SOURCE,
            "message": self._outage_message(),
            "cleared_at": None,
        }
        self._on_failure(what)

    def _outage_message(self) -> str:
        return (
            f"history store fails: {self.last_error}; control goes on from memory, "
            f"{len(self._queue) + 1} writes queued, tried again every {self.retry_s:g} s"
        )

    def _recovered(self) -> None:
        """Store the outage alarm (raised and cleared) and the gap of dropped writes; raises when the
        store fails again, so the caller tries again."""
        now = self.clock()
        with self._cv:
            dropped = list(self._dropped)
        if self.failing_since is not None:
            alarm_id = self.store.raise_alarm(
                at=self.failing_since, severity="critical", source=OUTAGE_SOURCE, message=self._outage_message()
            )
            if alarm_id is not None:
                self.store.clear_alarms(OUTAGE_SOURCE, now)
        if dropped:
            self.store.add_gap(
                start_s=min(j.ts for j in dropped),
                end_s=max(j.ts for j in dropped),
                writes_lost=len(dropped),
                reason=f"the store failed ({self.last_error}) longer than the write queue holds",
            )
            with self._cv:
                del self._dropped[: len(dropped)]
        if self.failing_since is not None:
            log.warning("history store takes writes again after %.0f s", now - self.failing_since)
        self.failing_since = None
        self.store.outage = None
        self._on_recovery()


class HistoryRecorder:
    """Turns each poll, plan and write round into store writes for the :class:`StoreWriter`; prunes once an hour."""

    def __init__(
        self,
        store: Store,
        settings: StorageConfig,
        *,
        on_failure: Callable[[str], None] = lambda what: None,
        on_recovery: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.time,
    ):
        self.store, self.settings = store, settings
        self.writer = StoreWriter(
            store,
            max_rows=settings.write_queue,
            retry_s=settings.write_retry_s,
            on_failure=on_failure,
            on_recovery=on_recovery,
            clock=clock,
        )
        self._last_bucket: dict[str, int] = {}
        self._last_prune_s = -math.inf

    def record(
        self,
        state: FleetState,
        telemetry: Mapping[str, Telemetry],
        summary: dict[str, Any],
        curtailment: Callable[[], Mapping[str, SiteCurtailment]] = dict,
    ) -> None:
        """Queue this poll's rows that open a new bucket (one transaction: never half a poll).
        ``curtailment``: the sites that curtail now, asked only when the site rows are recorded."""
        res = self.settings.telemetry_resolution_s
        rows = []
        for dev_id, t in telemetry.items():
            if self._new_bucket(dev_id, t.read_at, res):
                rows.append(
                    {
                        "ts": t.read_at,
                        "device_id": dev_id,
                        "site_id": t.site_id,
                        "status": t.status,
                        "values": {k: [r.value, r.quality] for k, r in t.values.items()},
                    }
                )
        site_rows: list[dict[str, Any]] = []
        fleet_row: dict[str, Any] | None = None
        if self._new_bucket(FLEET_BUCKET, state.ts, res):
            curtailed = curtailment()
            site_rows = [
                {
                    "ts": state.ts,
                    "site_id": sid,
                    **{k: getattr(s, k) for k in SITE_HISTORY_FIELDS},
                    "curtailed_w": c.curtailed_w if (c := curtailed.get(sid)) else None,
                    "curtail_cause": c.cause if c else None,
                }
                for sid, s in state.sites.items()
            ]
            fleet_row = summary
        if rows or site_rows or fleet_row is not None:
            n = len(rows) + len(site_rows) + 1

            def write(store: Store) -> None:
                store.add_poll(rows, fleet_row, site_rows)

            self.writer.submit(WriteJob("history", state.ts, n, write))
        if state.ts - self._last_prune_s >= PRUNE_EVERY_S:
            self._last_prune_s = state.ts
            per_table = self.settings.retention.model_dump()
            days = self.settings.retention_days
            self.writer.submit(WriteJob("prune", state.ts, 1, lambda store: store.prune(state.ts, days, per_table)))

    def record_plan(self, created_at: float, plan: Plan) -> None:
        """Queue the plan of a dispatch (stored once, compact: :mod:`sparcs.controller.plan_codec`)."""
        self.writer.submit(WriteJob("plan", created_at, len(plan.sites) + 1, lambda s: s.add_plan(created_at, plan)))

    def record_writes(self, results: Mapping[str, WriteResult], now: float) -> None:
        """Queue the setpoints of this write round that went to a device (or failed), with their read-backs."""
        rows = [
            {
                "ts": r.written_at if r.written_at is not None else now,
                "device_id": dev_id,
                "action": r.action,
                "ok": r.ok,
                "requested_w": r.requested_w,
                "written_w": r.written_w,
                "readback_w": r.readback_w,
                "clamped": r.clamped,
                "mismatch": r.mismatch,
                "detail": r.detail,
            }
            for dev_id, r in results.items()
            if r.action in RECORDED_ACTIONS
        ]
        if rows:
            self.writer.submit(WriteJob("setpoints", now, len(rows), lambda s: s.add_setpoints(rows)))

    def close(self, timeout_s: float = 10.0) -> None:
        self.writer.close(timeout_s)

    def _new_bucket(self, key: str, ts: float, resolution_s: float) -> bool:
        bucket = int(ts // resolution_s)
        if self._last_bucket.get(key) == bucket:
            return False
        self._last_bucket[key] = bucket
        return True
