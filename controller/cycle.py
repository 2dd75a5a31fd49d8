"""The control cycle: poll → fleet state → export guard → (on dispatch ticks) forecast + plan → caps → write.

:meth:`Controller.cycle` is the one function production (APScheduler, real time) and the twin (a
stepped clock) both drive; it reads time only from the injected clock and never sleeps. Polls are
serialised by a lock, dispatches by another, so an overrunning dispatch neither stacks nor stops
polling and the export guard.

Powers in W with DESIGN.md signs; times Unix s (UTC).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.exc import SQLAlchemyError

from sparcs.config.grid_rules import feed_in_cap_w
from sparcs.config.schema import FleetConfig
from sparcs.controller.commands import CommandBook
from sparcs.controller.metrics import Metrics
from sparcs.controller.setpoints import ZERO_CAP_MARGIN, export_guard, plan_period, site_command, split_to_devices
from sparcs.controller.state import FleetState, build_state
from sparcs.controller.store import Store
from sparcs.drivers.telemetry import Telemetry
from sparcs.drivers.writer import Setpoint

log = logging.getLogger("sparcs.controller")

PRUNE_EVERY_S = 3600.0


class Clock(Protocol):
    def now(self) -> float: ...


class WallClock:
    """Real time, Unix s (UTC): the production clock."""

    def now(self) -> float:
        return time.time()


class PollerDeviceState(Protocol):
    attempt_failures: int


class Poller(Protocol):
    async def poll_once(self) -> dict[str, Telemetry]: ...
    def state(self, device_id: str) -> PollerDeviceState: ...
    async def close(self) -> None: ...


class Writer(Protocol):
    async def apply(self, setpoints: dict[str, Setpoint]) -> dict[str, Any]: ...
    async def refresh_due(self) -> Any: ...


class Planner(Protocol):
    """Builds the problem from the fleet state and returns the (capped) plan as a JSON-able record."""

    def observe(self, state: FleetState) -> None: ...
    def restore(self, record: dict[str, Any]) -> None: ...
    async def plan(self, state: FleetState, commands: CommandBook, now_s: float) -> dict[str, Any] | None: ...
    def start(self) -> None: ...
    def close(self) -> None: ...


@dataclass
class CycleReport:
    ts: float
    online: int = 0
    stale: int = 0
    guarded_sites: list[str] = field(default_factory=list)
    dispatched: bool = False
    plan_path: str | None = None
    writes: int = 0


def classify_error(error: str) -> str:
    """Modbus error kind for the metrics, from the poller's error text (drivers.link's messages)."""
    e = error.lower()
    if "cannot connect" in e or "connection" in e or "lost" in e:
        return "connection"
    if "no reply" in e or "timed out" in e or "timeout" in e:
        return "timeout"
    if "modbus exception" in e:
        return "exception"
    return "other"


class Controller:
    """Everything one running controller holds; the API reads from it, the scheduler drives it."""

    def __init__(
        self,
        cfg: FleetConfig,
        store: Store,
        clock: Clock,
        *,
        poller: Poller,
        writer: Writer,
        planner: Planner,
        metrics: Metrics | None = None,
    ):
        self.cfg = cfg
        self.store = store
        self.clock = clock
        self.poller = poller
        self.writer = writer
        self.planner = planner
        self.metrics = metrics or Metrics()
        self.commands = CommandBook(store, cfg)
        now = clock.now()
        self.commands.load(now)
        last = store.last_plan()
        self.plan: dict[str, Any] | None = last["data"] if last else None
        if self.plan is not None:
            planner.restore(self.plan)
        self.state: FleetState | None = None
        self.guard_w: dict[str, float] = {}
        self.setpoints: dict[str, Setpoint] = {}
        self.dispatch_requested = False
        self.dispatching = False
        self.last_poll_s: float | None = None
        self.last_dispatch_s: float | None = None
        self._last_bucket: dict[str, int] = {}
        self._attempt_failures: dict[str, int] = {}
        self._last_prune_s = -math.inf
        self._poll_lock = asyncio.Lock()
        self._dispatch_lock = asyncio.Lock()
        # Alarms still open from before a restart are cleared when their condition ends.
        self._alarmed = {
            a["source"] for a in store.alarms(active_only=True) if a["source"].startswith(("device:", "write:"))
        }
        self.on_dispatch_request: Callable[[], None] | None = None
        self._sites = {s.id: s for s in cfg.sites}

    # -- the cycle ------------------------------------------------------------------------------

    async def cycle(self, *, dispatch: bool = False) -> CycleReport:
        """One control cycle. ``dispatch``: also plan (a dispatch tick, or an operator's dispatch-now).

        A poll-only cycle never plans, so polling and the export guard never wait for a solve. When
        asked to dispatch while a dispatch is running it does not plan (dispatches never stack);
        a request that arrives during a dispatch (``dispatch_requested``) is planned right after it.
        The scheduler moves its dispatch job to now on a request; a stepped driver (the twin) reads
        ``dispatch_requested`` and passes ``dispatch=True``.
        """
        report = CycleReport(ts=self.clock.now())
        fresh = self.state is not None and report.ts - self.state.ts < self.cfg.dispatch.poll_interval_s
        if not (dispatch and fresh):
            await self._poll(report)
        if dispatch:
            if self._dispatch_lock.locked():
                log.info("dispatch still running; this tick is skipped")
            else:
                async with self._dispatch_lock:
                    await self._dispatch(report)
                    if self.dispatch_requested:  # an operator command arrived while planning
                        await self._dispatch(report)
        report.writes = await self._write()
        return report

    async def _poll(self, report: CycleReport) -> None:
        async with self._poll_lock:
            t0 = time.perf_counter()
            telemetry = await self.poller.poll_once()
            now = self.clock.now()
            dimmed = {s.id: self.cfg.grid.para14a_limit_w for s in self.cfg.sites if self.commands.para14a(s.id, now)}
            state = build_state(self.cfg, telemetry, now, para14a_limit_w=dimmed)
            self.state = state
            self.last_poll_s = now
            self.planner.observe(state)
            if self.cfg.grid.export_guard:
                report.guarded_sites = self._guard(state)
            summary = state.summary()
            try:
                self._record(state, telemetry, summary)
            except SQLAlchemyError:  # control goes on without history; the operator sees it in the log
                log.exception("history of this poll not stored")
            report.online, report.stale = summary["online"], summary["stale"]
            self.metrics.poll_seconds.observe(time.perf_counter() - t0)

    def price_now(self, now: float) -> float | None:
        """Day-ahead price (EUR/MWh) of the current period in the plan in force, or None."""
        if self.plan is None or "forecast" not in self.plan:
            return None
        i = plan_period(self.plan, now)
        return None if i is None else self.plan["forecast"]["price_eur_per_mwh"][i]

    def export_cap_w(self, site_id: str, now: float) -> float | None:
        """Export ceiling at the meter now (W ≥ 0): the feed-in cap, 0 in a negative-price quarter-hour
        for sites under that rule; None when the site has neither."""
        site = self._sites[site_id]
        price = self.price_now(now)
        if site.grid.negative_price_rule and price is not None and price < 0:
            return 0.0
        return feed_in_cap_w(site)

    def _guard(self, state: FleetState) -> list[str]:
        acted = []
        for sid, s in state.sites.items():
            before = self.guard_w.get(sid)
            cap = self.export_cap_w(sid, state.ts)
            after = export_guard(
                cap_w=cap, grid_w=s.grid_w, pv_w=s.pv_w, guard_w=before, zero_cap_margin_w=self._zero_cap_margin_w(sid)
            )
            if after is None:
                self.guard_w.pop(sid, None)
            else:
                self.guard_w[sid] = after
                if before is None or after < before:
                    acted.append(sid)
        if acted:
            self.metrics.guard_actions.inc(len(acted))
        return acted

    def _zero_cap_margin_w(self, site_id: str) -> float:
        """The import a site keeps at a 0 W cap (W): ``ZERO_CAP_MARGIN`` of its PV rating."""
        return ZERO_CAP_MARGIN * self._sites[site_id].pv.rating_w

    async def _dispatch(self, report: CycleReport) -> None:
        self.dispatch_requested = False
        now = self.clock.now()
        self.last_dispatch_s = now
        if self.commands.paused(now):
            return
        if self.state is None:
            return
        self.dispatching = True
        t0 = time.perf_counter()
        try:
            record = await self.planner.plan(self.state, self.commands, now)
        except Exception as exc:  # the planner has its own fallback; this is the last line of defence
            log.exception("planning failed")
            self.store.raise_alarm(
                at=now, severity="critical", source="dispatch", message=f"planning failed: {exc}; last plan kept"
            )
            self.metrics.dispatch_total.labels("error").inc()
            return
        finally:
            self.dispatching = False
            self.metrics.dispatch_seconds.observe(time.perf_counter() - t0)
        if record is None:
            return
        self.plan = record
        try:
            self.store.add_plan(
                now, record["start_s"], record["path"], record.get("reason"), record["objective_eur"], record
            )
        except SQLAlchemyError:  # the plan is in force from memory; only its record is missing
            log.exception("plan not stored")
        report.dispatched = True
        report.plan_path = record["path"]
        self.metrics.dispatch_total.labels(record["path"]).inc()
        self.metrics.plan_objective.set(record["objective_eur"])
        if record["path"] == "optimal":
            self.store.clear_alarms("dispatch", now)
        else:
            self.store.raise_alarm(
                at=now,
                severity="warning",
                source="dispatch",
                message=f"plan from {record['path']}: {record.get('reason') or 'no reason given'}",
            )

    def desired_setpoints(self, now: float) -> dict[str, Setpoint]:
        """Per controlled device: the setpoint from plan, stage and guard (see controller.setpoints).

        A site that is not controllable (a device stale) keeps its PV at most at its export cap now
        (:meth:`export_cap_w`: the feed-in cap, 0 in a negative-price quarter-hour under that rule),
        at the inverter: its battery then runs on its own and may stop absorbing PV at any moment
        (full, or tripped), its meter may be the device that is silent, and the guard, which loosens
        with what the meter shows, would count on the battery (measured in the twin: 14-21 % over
        the cap for two minutes when such a battery filled up).
        """
        paused = self.commands.paused(now)
        out: dict[str, Setpoint] = {}
        for site in self.cfg.sites:
            s = self.state.sites.get(site.id) if self.state else None
            controllable = s is not None and s.controllable
            cap = self.export_cap_w(site.id, now)
            cmd = site_command(
                self.plan,
                site.id,
                now,
                use_plan=controllable and not paused,
                stage_ceiling_w=self.commands.stage_ceiling_w(site.id, now),
                guard_w=self.guard_w.get(site.id),
                uncontrolled_ceiling_w=None if controllable else cap,
                plan_margin_w=self._zero_cap_margin_w(site.id) if cap == 0.0 else 0.0,
            )
            tel = self.state.telemetry if self.state else {}
            for dev_id, (pv_limit, bat) in split_to_devices(site, cmd).items():
                t = tel.get(dev_id)
                if t is None or t.status != "online":
                    continue  # an unreachable device gets no write: it falls back to its installer configuration
                out[dev_id] = Setpoint(pv_limit_w=pv_limit, battery_w=bat)
        return out

    async def _write(self) -> int:
        """Hand every desired setpoint to the writer (it skips what is in force and read back), refresh timers."""
        now = self.clock.now()
        desired = self.desired_setpoints(now)
        results = dict(await self.writer.apply(desired)) if desired else {}
        results.update(await self.writer.refresh_due())
        self.setpoints = desired
        for r in results.values():
            self.metrics.writes.labels(r.action).inc()
        self._write_alarms(results, now)
        self.metrics.observe_stages({s.id: self.commands.stage(s.id, now) for s in self.cfg.sites})
        self.metrics.paused.set(1 if self.commands.paused(now) else 0)
        return sum(1 for r in results.values() if r.action not in ("unchanged", "skipped"))

    # -- history, alarms, metrics ----------------------------------------------------------------

    def _record(self, state: FleetState, telemetry: dict[str, Telemetry], summary: dict[str, Any]) -> None:
        now = state.ts
        res = self.cfg.storage.telemetry_resolution_s
        statuses: Counter[str] = Counter()
        qualities: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        rows = []
        for dev_id, t in telemetry.items():
            statuses[t.status] += 1
            qualities.update(r.quality for r in t.values.values())
            # Count attempts that failed in this poll, not the polls a backing-off device skipped.
            failures = self.poller.state(dev_id).attempt_failures
            if t.error and failures > self._attempt_failures.get(dev_id, 0):
                errors[classify_error(t.error)] += 1
            self._attempt_failures[dev_id] = failures
            self._device_alarm(t, now)
            bucket = int(t.read_at // res)
            if self._last_bucket.get(dev_id) != bucket:
                self._last_bucket[dev_id] = bucket
                rows.append(
                    {
                        "ts": t.read_at,
                        "device_id": dev_id,
                        "site_id": t.site_id,
                        "status": t.status,
                        "values": {k: [r.value, r.quality] for k, r in t.values.items()},
                    }
                )
        bucket = int(now // res)
        if self._last_bucket.get("@fleet") != bucket:
            self._last_bucket["@fleet"] = bucket
            site_rows = [
                {"ts": now, "site_id": sid, **{k: getattr(s, k) for k in SITE_HISTORY_FIELDS}}
                for sid, s in state.sites.items()
            ]
            self.store.add_poll(rows, summary, site_rows)
        else:
            self.store.add_poll(rows)
        self.metrics.observe_poll(statuses=statuses, qualities=qualities, errors=errors, fleet=summary)
        if now - self._last_prune_s >= PRUNE_EVERY_S:
            self._last_prune_s = now
            self.store.prune(now, self.cfg.storage.retention_days)

    def _alarm(self, source: str, active: bool, now: float, message: str) -> None:
        """Raise the alarm of ``source`` when a condition starts, clear it when the condition ends."""
        if active and source not in self._alarmed:
            self._alarmed.add(source)
            self.store.raise_alarm(at=now, severity="warning", source=source, message=message)
        elif not active and source in self._alarmed:
            self._alarmed.discard(source)
            self.store.clear_alarms(source, now)

    def _device_alarm(self, t: Telemetry, now: float) -> None:
        self._alarm(
            f"device:{t.device_id}",
            t.status == "stale",
            now,
            f"device {t.device_id} (site {t.site_id}) is stale: {t.error or 'no data'}; "
            "its site is left out of the plan until it answers",
        )

    def _write_alarms(self, results: dict[str, Any], now: float) -> None:
        """A setpoint that could not be written, or reads back differently, is an alarm until it is in force."""
        for dev_id, r in results.items():
            if r.action in ("unchanged", "skipped"):
                continue
            self._alarm(
                f"write:{dev_id}",
                r.action == "failed" or r.mismatch,
                now,
                f"setpoint for {dev_id} not in force: {r.detail or 'it reads back differently'}",
            )

    async def close(self) -> None:
        """Close device connections and stop the solver process, after a running dispatch has ended."""
        async with self._dispatch_lock:
            await self.poller.close()
            await asyncio.to_thread(self.planner.close)

    def request_dispatch(self) -> None:
        """Plan again at the next opportunity (after an operator command)."""
        self.dispatch_requested = True
        if self.on_dispatch_request is not None:
            self.on_dispatch_request()


SITE_HISTORY_FIELDS = ("pv_w", "battery_w", "grid_w", "load_w", "export_w", "soc", "flex_up_w", "flex_down_w")
