"""Production timing: APScheduler 3.x's AsyncIOScheduler drives :meth:`Controller.cycle` in real time.

Two jobs: ``poll`` every ``dispatch.poll_interval_s`` and ``dispatch`` every
``dispatch.dispatch_interval_s`` aligned to the clock (a 300 s interval fires at :00, :05, ...),
and once at start-up.
Both coalesce missed runs into one and allow one running instance, so an overrunning dispatch
never stacks (the cycle's own lock guards the same for the twin). An operator command moves the
dispatch job's next run to when the controller may re-plan (:meth:`Controller.next_replan_s`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import time

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from sparcs.controller.cycle import Controller

log = logging.getLogger("sparcs.scheduler")


def aligned_start(now_s: float, interval_s: float) -> dt.datetime:
    """The last multiple of ``interval_s`` since the epoch at or before ``now_s``, as an aware datetime."""
    return dt.datetime.fromtimestamp(math.floor(now_s / interval_s) * interval_s, dt.UTC)


class ControlScheduler:
    def __init__(self, ctl: Controller):
        self.ctl = ctl
        self.scheduler = AsyncIOScheduler(timezone=dt.UTC)
        self._running: set[asyncio.Task[object]] = set()

    async def _poll(self) -> None:
        await self._run(dispatch=False)

    async def _dispatch(self) -> None:
        await self._run(dispatch=True)

    async def _run(self, *, dispatch: bool) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._running.add(task)
        try:
            await self.ctl.cycle(dispatch=dispatch)
        except Exception:  # one failed cycle must not stop the next ones; it is logged with its traceback
            log.exception("control cycle failed (dispatch=%s)", dispatch)
        finally:
            if task is not None:
                self._running.discard(task)

    def start(self) -> None:
        d = self.ctl.cfg.dispatch
        now = time.time()  # APScheduler fires on wall time, so align to it
        common = {"coalesce": True, "max_instances": 1, "misfire_grace_time": None}
        self.scheduler.add_job(
            self._poll,
            IntervalTrigger(seconds=d.poll_interval_s, timezone=dt.UTC),
            id="poll",
            next_run_time=dt.datetime.now(dt.UTC),
            **common,
        )
        self.scheduler.add_job(
            self._dispatch,
            IntervalTrigger(
                seconds=d.dispatch_interval_s, start_date=aligned_start(now, d.dispatch_interval_s), timezone=dt.UTC
            ),
            id="dispatch",
            next_run_time=dt.datetime.now(dt.UTC),  # plan at start-up, then on the aligned ticks
            **common,
        )
        self.ctl.on_dispatch_request = self.dispatch_now
        self.scheduler.start()

    def dispatch_now(self, at_s: float) -> None:
        """Move the dispatch job to ``at_s`` (the controller's clock, Unix s) unless it runs sooner anyway."""
        job = self.scheduler.get_job("dispatch")
        if job is None:
            return
        at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=max(0.0, at_s - self.ctl.clock.now()))
        if job.next_run_time is None or at < job.next_run_time:
            job.modify(next_run_time=at)

    async def stop(self) -> None:
        """Stop firing, let the cycles already running finish, then shut down.

        Shutting down first would cancel a running cycle mid-dispatch while its solve goes on in a
        thread, leaving the solver process to be closed under it.
        """
        self.ctl.on_dispatch_request = None
        if self.scheduler.running:
            self.scheduler.pause()
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
