"""The control cycle: poll → fleet state → export guard → (on dispatch ticks) forecast + plan → caps → write.

:meth:`Controller.cycle` is the one function production (APScheduler, real time) and the twin (a
stepped clock) both drive; it reads time only from the injected clock and never sleeps. Polls are
serialised by a lock, dispatches by another, so an overrunning dispatch neither stacks nor stops
polling and the export guard.

History (:mod:`~sparcs.controller.history`), alarms (:mod:`~sparcs.controller.alarms`), the limit
policy (:mod:`~sparcs.controller.setpoints`) and the path of operator commands
(:mod:`~sparcs.controller.operations`) live in modules of their own; this one sequences them.

Powers in W with the signs of docs/definitions.md "Signs"; times Unix s (UTC).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from sparcs.config.grid_rules import export_cap_w, installer_ceiling_w
from sparcs.config.schema import FleetConfig
from sparcs.controller.alarms import Alarms
from sparcs.controller.commands import CommandBook
from sparcs.controller.device_control import DeviceControl
from sparcs.controller.groups import pool_totals
from sparcs.controller.heap import collections_deferred
from sparcs.controller.history import HistoryRecorder
from sparcs.controller.metrics import Metrics
from sparcs.controller.operations import Operations
from sparcs.controller.plan import Plan
from sparcs.controller.prices import PriceSource
from sparcs.controller.relay_inputs import RelayInputs
from sparcs.controller.setpoints import (
    ZERO_CAP_MARGIN,
    SiteCommand,
    SiteCurtailment,
    SiteFacts,
    battery_may_fill,
    battery_room,
    export_guard,
    schedule_feedback,
    site_command,
    site_curtailment,
    split_to_devices,
)
from sparcs.controller.state import FleetState, build_state
from sparcs.controller.store import Store
from sparcs.drivers.device import KIND_ROLES
from sparcs.drivers.telemetry import Telemetry
from sparcs.drivers.writer import Setpoint, WriteResult, uncontrolled_roles
from sparcs.optimizer.forecast_quality import QualityRow

log = logging.getLogger("sparcs.controller")


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
    async def apply(self, setpoints: dict[str, Setpoint]) -> dict[str, WriteResult]: ...
    async def refresh_due(self) -> dict[str, WriteResult]: ...
    async def release(self, device_ids: list[str]) -> dict[str, WriteResult]: ...


class Planner(Protocol):
    """Builds the problem from the fleet state and returns the capped plan of the controllable sites."""

    def observe(self, state: FleetState) -> None: ...
    def restore(self, plan: Plan) -> None: ...
    async def plan(self, state: FleetState, commands: CommandBook, now_s: float) -> Plan | None: ...
    def start(self) -> None: ...
    def close(self) -> None: ...
    def forecast_quality(self) -> list[QualityRow]: ...


@dataclass
class CycleReport:
    ts: float
    online: int = 0
    stale: int = 0
    guarded_sites: list[str] = field(default_factory=list)
    dispatched: bool = False
    plan_path: str | None = None
    writes: int = 0
    poll_s: float | None = None  # wall seconds of this cycle's poll, None when it did not poll


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
        device_control: DeviceControl,
        metrics: Metrics | None = None,
        prices: PriceSource | None = None,
        edge_sites: frozenset[str] = frozenset(),
    ):
        """``device_control``: the run-time control switch of the devices, whose ``monitor_only`` set
        the writer shares. ``edge_sites``: the sites behind edges (docs/edges.md), whose edge runs the
        export guard and the writer on every poll itself: they stay in the fleet state, the plan, the
        history and the API, but this cycle neither guards them nor computes their setpoints
        (:attr:`guard_w` and :attr:`setpoints` hold the other sites' only)."""
        self.cfg = cfg
        self.prices = prices or PriceSource(cfg.market)  # the prices in force (export guard, alarms)
        self.store = store
        self.clock = clock
        self.poller = poller
        self.writer = writer
        self.planner = planner
        self.device_control = device_control
        self.metrics = metrics or Metrics()
        self.commands = CommandBook(store, cfg)
        self.commands.load(clock.now())
        self.operations = Operations(self.commands, store, clock.now, self.metrics, self.request_dispatch)
        self.store_ok = True  # False from a failed history, plan or alarm write until the store takes writes again
        self.history = HistoryRecorder(
            store, cfg.storage, on_failure=self._store_failed, on_recovery=self._store_worked, clock=clock.now
        )
        self.alarms = Alarms(store, on_store_error=self._store_failed, writer=self.history.writer)
        self.plan: Plan | None = store.last_plan()
        if self.plan is not None:
            planner.restore(self.plan)
        self.state: FleetState | None = None
        self.guard_w: dict[str, float] = {}
        self.setpoints: dict[str, Setpoint] = {}
        self.dispatch_requested = False
        self.replan_at_s = math.inf  # when a requested re-plan may run (Unix s)
        self.dispatching = False
        self.last_poll_s: float | None = None
        self.last_dispatch_s: float | None = None
        self._attempt_failures: dict[str, int] = {}
        self._poll_lock = asyncio.Lock()
        self._dispatch_lock = asyncio.Lock()
        self.on_dispatch_request: Callable[[float], None] | None = None
        self._sites = {s.id: s for s in cfg.sites}
        self.edge_sites = edge_sites
        self._written_sites = [s for s in cfg.sites if s.id not in edge_sites]  # guarded and written here
        self._written_devices = [(s, d) for s in self._written_sites for d in s.devices]
        self._kind_of = {d.id: d.kind for _s, d in cfg.devices()}
        self._caps_at = math.nan  # the instant the export caps in _caps are of
        self._caps: dict[tuple[str, float | None, float | None], float | None] = {}
        self.relays = RelayInputs(cfg.relay_inputs, cfg.dispatch.modbus_timeout_s)
        self.schedule_offsets_w: dict[str, float] = {}  # the schedule feedback's battery offsets (W)
        self._feedback_ts: float | None = None  # the poll the offsets were last updated on

    # -- the cycle ------------------------------------------------------------------------------

    async def cycle(self, *, dispatch: bool = False) -> CycleReport:
        """One control cycle. ``dispatch``: also plan (a dispatch tick, or an operator's dispatch-now).

        A poll-only cycle never plans, so polling and the export guard never wait for a solve. When
        asked to dispatch while a dispatch is running it does not plan (dispatches never stack);
        a request that arrives during a dispatch (``dispatch_requested``) is planned right after it.
        The scheduler moves its dispatch job to ``replan_at_s`` on a request; a stepped driver
        (the twin) passes ``dispatch=True`` once :meth:`replan_due`.
        """
        report = CycleReport(ts=self.clock.now())
        fresh = self.state is not None and report.ts - self.state.ts < self.cfg.dispatch.poll_interval_s
        if dispatch:  # garbage collection waits while polling and writing, not while planning
            if not fresh:
                with collections_deferred():
                    await self._poll(report)
            if self._dispatch_lock.locked():
                log.info("dispatch still running; this tick is skipped")
            else:
                async with self._dispatch_lock:
                    await self._dispatch(report)
                    if self.replan_due(self.clock.now()):  # an operator command arrived while planning
                        await self._dispatch(report)
        with collections_deferred():
            if not dispatch:
                await self._poll(report)
            t0 = time.perf_counter()
            report.writes = await self._write()
            if report.poll_s is not None:  # a poll cycle: its duration includes the writes
                self.metrics.poll_seconds.observe(report.poll_s + time.perf_counter() - t0)
        return report

    async def _poll(self, report: CycleReport) -> None:
        async with self._poll_lock:
            t0 = time.perf_counter()
            telemetry, contacts = await asyncio.gather(self.poller.poll_once(), self.relays.read())
            now = self.clock.now()
            self.relays.apply(contacts, self.operations, self.alarms, now)  # before this cycle's writes
            if self.commands.lapsed_pool_limits(now):  # the plan made under a pool limit binds until re-planned
                self.request_dispatch()
            dimmed = {s.id: self.cfg.grid.para14a_limit_w for s in self.cfg.sites if self.commands.para14a(s.id, now)}
            pooled = {s.id: w for s in self.cfg.sites if (w := self.commands.export_limit_w(s.id, now)) is not None}
            state = build_state(
                self.cfg,
                telemetry,
                now,
                para14a_limit_w=dimmed,
                pool_limit_w=pooled,
                monitor_only=self.device_control.monitor_only,
                uncontrolled=self.uncontrolled_roles(),
            )
            self.state = state
            self.last_poll_s = now
            self.planner.observe(state)
            if self.cfg.grid.export_guard:
                report.guarded_sites = self._guard(state)
            summary = state.summary()
            self.alarms.devices(telemetry, now, self.cfg.dispatch.max_device_clock_skew_s)
            await self._follow_prices(now)
            self._observe_poll(telemetry, summary)
            # Queued for the store's writer thread: a failing store is reported from there (the log,
            # the store's alarm, /readyz and the metrics) while control goes on from memory.
            self.history.record(state, telemetry, summary, lambda: self.curtailment(state, now))
            report.online, report.stale = summary["online"], summary["stale"]
            report.poll_s = time.perf_counter() - t0

    def uncontrolled_roles(self) -> dict[str, tuple[str, ...]]:
        """Device id → the roles the writer refuses it (no fail-safe accepted, or no control register
        for the role; :func:`drivers.writer.uncontrolled_roles`), for the devices written here (not
        an edge site's: its edge's writer holds their drivers) whose driver the poller holds: planned
        as not controlled in those roles."""
        out: dict[str, tuple[str, ...]] = {}
        for _site, dev in self._written_devices:
            try:
                driver = getattr(self.poller.state(dev.id), "driver", None)
            except KeyError:
                continue
            roles = uncontrolled_roles(driver, dev) if driver is not None else ()
            if roles:
                out[dev.id] = roles
        return out

    def _unprotected(self, refused: dict[str, tuple[str, ...]]) -> set[str]:
        """Devices the writer refuses every setpoint (``refused``: :meth:`uncontrolled_roles`): they get no
        share of their site's command."""
        return {d for d, roles in refused.items() if roles == KIND_ROLES.get(self._kind_of[d], ())}

    def price_now(self, now: float) -> float | None:
        """Day-ahead price (EUR/MWh) of the current quarter-hour from the price source, or None: the
        prices in force, not the plan's, so the negative-price rule holds with no plan in force."""
        return self.prices.price_at(now)

    async def _follow_prices(self, now: float) -> None:
        """Refresh the price source when due (network I/O off the event loop) and follow its alarms."""
        if self.prices.due(now):
            if self.cfg.market.prices_csv is None:
                await asyncio.to_thread(self.prices.refresh, now)
            else:
                self.prices.refresh(now)
        for a in self.prices.alarms(now):
            self.alarms.follow(a.source, a.active, now, a.message)

    def export_cap_w(self, site_id: str, now: float) -> float | None:
        """The site's export cap at the meter now (W ≥ 0; :func:`sparcs.config.grid_rules.export_cap_w`),
        a pool limit in force included. Kept for the instant ``now`` (a poll asks for each site's cap
        in the guard and again for its writes)."""
        if self._caps_at != now:
            self._caps_at, self._caps = now, {}
        key = (site_id, self.price_now(now), self.commands.export_limit_w(site_id, now))
        if key not in self._caps:
            self._caps[key] = export_cap_w(self._sites[site_id], key[1], key[2])
        return self._caps[key]

    def _guard(self, state: FleetState) -> list[str]:
        """The export guard of the sites written here (not the edge sites: their edges guard them)."""
        acted = []
        for site in self._written_sites:
            sid = site.id
            s = state.sites.get(sid)
            if s is None:
                continue
            before = self.guard_w.get(sid)
            after = export_guard(
                cap_w=self.export_cap_w(sid, state.ts),
                grid_w=s.grid_w,
                pv_w=s.pv_w,
                guard_w=before,
                zero_cap_margin_w=ZERO_CAP_MARGIN * site.pv.rating_w,
            )
            if after is None:
                self.guard_w.pop(sid, None)
            else:
                self.guard_w[sid] = after
                if before is None or after < before:
                    acted.append(sid)
                    log.info("export guard: site %s PV limited to %.0f W", sid, after, extra={"site": sid})
        if acted:
            self.metrics.guard_actions.inc(len(acted))
        return acted

    async def _dispatch(self, report: CycleReport) -> None:
        self.dispatch_requested = False
        self.replan_at_s = math.inf
        now = self.clock.now()
        self.last_dispatch_s = now
        if self.commands.paused(now):
            return
        if self.state is None:
            return
        self.dispatching = True
        t0 = time.perf_counter()
        try:
            plan = await self.planner.plan(self.state, self.commands, now)
        except Exception as exc:  # the planner has its own fallback; this is the last line of defence
            log.exception("planning failed")
            self.alarms.planning_failed(exc, now)
            self.metrics.dispatch_total.labels("error").inc()
            return
        finally:
            self.dispatching = False
            self.metrics.dispatch_seconds.observe(time.perf_counter() - t0)
        if plan is None:
            return
        self.plan = plan
        self.history.record_plan(now, plan)  # in force from memory; its record goes through the writer
        report.dispatched = True
        report.plan_path = plan.path
        self.metrics.dispatch_total.labels(plan.path).inc()
        self.metrics.plan_objective.set(plan.objective_eur)
        self.metrics.observe_forecast_quality(self.planner.forecast_quality())
        self.alarms.dispatch(plan.path, plan.reason, now)

    def curtailment(self, state: FleetState, now: float) -> dict[str, SiteCurtailment]:
        """Per site that curtails now: the cause of its PV limit and the forecast PV power it holds
        back (:func:`~sparcs.controller.setpoints.site_curtailment`; docs/open-data.md "Curtailment")."""
        price = self.price_now(now)
        out = {}
        for sid, s in state.sites.items():
            c = site_curtailment(
                self.site_facts(sid, now),
                s.pv_limit_w,
                installer_ceiling_w=installer_ceiling_w(self._sites[sid]),
                negative_price=price is not None and price < 0,
                pv_w=s.pv_w,
                pv_available_w=None if self.plan is None else self.plan.pv_available_at(sid, now),
            )
            if c is not None:
                out[sid] = c
        return out

    @property
    def _soc_age_s(self) -> float:
        """How old a battery's SoC can be when the command set on it ends (s): its reads are up to
        ``polls_between_reads`` polls apart (tiered polling), the command holds one poll, and one
        poll more is margin for the timing of reads within a poll."""
        d = self.cfg.dispatch
        return d.poll_interval_s * (1 + max(d.polls_between_reads(k) for k in ("battery", "hybrid")))

    def site_facts(self, site_id: str, now: float) -> SiteFacts:
        """What the limit policy of one site depends on now (see :class:`~sparcs.controller.setpoints.SiteFacts`)."""
        s = self.state.sites.get(site_id) if self.state else None
        planned = None if self.plan is None else self.plan.setpoint(site_id, now)
        battery = self._sites[site_id].battery
        may_fill = (
            battery is not None
            and planned is not None
            and planned.battery_w is not None
            and battery_may_fill(
                soc=None if s is None else s.soc,
                soc_max=battery.soc_max,
                capacity_wh=battery.capacity_kwh * 1000.0,
                charge_w=-planned.battery_w,
                eta_charge=battery.eta_charge,
                within_s=self._soc_age_s,
            )
        )
        return SiteFacts(
            planned=planned,
            controllable=s is not None and s.controllable,
            paused=self.commands.paused(now),
            stage_ceiling_w=self.commands.stage_ceiling_w(site_id, now),
            guard_w=self.guard_w.get(site_id),
            export_cap_w=self.export_cap_w(site_id, now),
            pv_rating_w=self._sites[site_id].pv.rating_w,
            net_load_w=None if s is None or s.grid_w is None or s.battery_w is None else s.grid_w + s.battery_w,
            battery_may_fill=may_fill,
        )

    def _follow_schedule(self, now: float, commands: dict[str, SiteCommand]) -> dict[str, SiteCommand]:
        """The site commands with the schedule feedback's battery offsets (updated once per poll): the
        error is the fleet's (edge sites' export included), the offsets go to the batteries of
        ``commands``' sites (those written here)."""
        target = self.commands.schedule_export_w(now)
        state = self.state
        if target is None or state is None or self.commands.paused(now):
            self.schedule_offsets_w = {}
            return commands
        if state.ts != self._feedback_ts:
            self._feedback_ts = state.ts
            grids = [s.grid_w for s in state.sites.values()]
            if all(g is not None for g in grids):
                rooms = {}
                for sid, cmd in commands.items():
                    site, s = self._sites[sid], state.sites.get(sid)
                    if cmd.battery_w is None or site.battery is None or s is None or s.grid_w is None:
                        continue
                    if not s.battery_controlled:
                        continue  # monitor-only: the writer will not move it
                    rooms[sid] = battery_room(
                        command_w=cmd.battery_w,
                        max_discharge_w=site.battery.max_discharge_w,
                        max_charge_w=site.battery.max_charge_w,
                        soc=s.soc,
                        soc_min=site.battery.soc_min,
                        soc_max=site.battery.soc_max,
                        grid_w=s.grid_w,
                        battery_w=s.battery_w,
                        export_cap_w=self.export_cap_w(sid, now),
                    )
                export_w = -sum(g for g in grids if g is not None)
                self.schedule_offsets_w = schedule_feedback(target - export_w, self.schedule_offsets_w, rooms)
        return {
            sid: cmd
            if sid not in self.schedule_offsets_w or cmd.battery_w is None
            else SiteCommand(cmd.pv_limit_w, cmd.battery_w + self.schedule_offsets_w[sid])
            for sid, cmd in commands.items()
        }

    def desired_setpoints(self, now: float) -> dict[str, Setpoint]:
        """Per controlled device that answers, of the sites written here (not the edge sites): the
        setpoint of its site's command (:func:`~sparcs.controller.setpoints.site_command`, with the
        schedule feedback), split over the site's devices. A role the writer refuses a device (a hybrid
        without a PV limit register) gets no value: such a site's PV is planned fixed and never limited
        (docs/definitions.md)."""
        tel = self.state.telemetry if self.state else {}
        out: dict[str, Setpoint] = {}
        commands = self._follow_schedule(
            now, {s.id: site_command(self.site_facts(s.id, now)) for s in self._written_sites}
        )
        refused = self.uncontrolled_roles()
        skip = self.device_control.monitor_only | self._unprotected(refused)
        for site in self._written_sites:
            cmd = commands[site.id]
            for dev_id, (pv_limit, bat) in split_to_devices(site, cmd, skip).items():
                t = tel.get(dev_id)
                if t is None or t.status != "online":
                    continue  # an unreachable device gets no write: it falls back to its installer configuration
                roles = refused.get(dev_id, ())
                out[dev_id] = Setpoint(
                    pv_limit_w=None if "pv" in roles else pv_limit, battery_w=None if "battery" in roles else bat
                )
        return out

    async def _write(self) -> int:
        """Hand every desired setpoint to the writer (it skips what is in force and read back), refresh timers."""
        now = self.clock.now()
        desired = self.desired_setpoints(now)
        results = dict(await self.writer.apply(desired)) if desired else {}
        results.update(await self._release())
        results.update(await self.writer.refresh_due())
        self.setpoints = desired
        self.history.record_writes(results, now)
        for r in results.values():
            self.metrics.writes.labels(r.action).inc()
        self.alarms.writes(results, now)
        self.metrics.observe_stages({s.id: self.commands.stage(s.id, now) for s in self.cfg.sites})
        for g in self.commands.groups.all():
            limit = self.commands.pool_limit(g.id, now)
            self.metrics.observe_group(
                g.id,
                pool_totals(self.cfg, self.state, g.sites),
                {s: self.commands.stage(s, now) for s in g.sites},
                None if limit is None else limit.params["limit_pct"],
            )
        self.metrics.paused.set(1 if self.commands.paused(now) else 0)
        return sum(1 for r in results.values() if r.action not in ("unchanged", "skipped"))

    async def _release(self) -> dict[str, WriteResult]:
        """Release every device taken out of control that answers (controller/device_control.py)."""
        tel = self.state.telemetry if self.state else {}
        owed = sorted(d for d in self.device_control.releasing if d in tel and tel[d].status == "online")
        if not owed:
            return {}
        results = await self.writer.release(owed)
        for dev_id, r in results.items():
            if r.ok and r.action in ("release", "limit"):  # "limit": the installer ceiling, below WMax
                self.device_control.released(dev_id)
                log.info("device %s released to its installer configuration", dev_id, extra={"device": dev_id})
        return results

    def _observe_poll(self, telemetry: Mapping[str, Telemetry], summary: dict[str, Any]) -> None:
        """Device statuses, value qualities, Modbus errors and fleet totals of this poll, into the metrics."""
        statuses: Counter[str] = Counter()
        qualities: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        for dev_id, t in telemetry.items():
            statuses[t.status] += 1
            qualities.update(r.quality for r in t.values.values())
            # Count attempts that failed in this poll, not the polls a backing-off device skipped.
            failures = self.poller.state(dev_id).attempt_failures
            if t.error and failures > self._attempt_failures.get(dev_id, 0):
                errors[classify_error(t.error)] += 1
            self._attempt_failures[dev_id] = failures
        self.metrics.observe_poll(statuses=statuses, qualities=qualities, errors=errors, fleet=summary)

    async def close(self) -> None:
        """Close device connections and stop the solver process, after a running dispatch has ended;
        then store what the history writer still holds."""
        async with self._dispatch_lock:
            await self.poller.close()
            self.relays.close()
            await asyncio.to_thread(self.planner.close)
            await asyncio.to_thread(self.history.close)

    def _store_failed(self, what: str) -> None:
        """A store write failed (called from the writer thread, or the poll loop for an alarm change)."""
        self.store_ok = False
        self.metrics.store_errors.labels(what).inc()
        self.metrics.store_ok.set(0)

    def _store_worked(self) -> None:
        if not self.store_ok:
            log.warning("history store takes writes again")
        self.store_ok = True
        self.metrics.store_ok.set(1)

    def request_dispatch(self, *, at_once: bool = False) -> None:
        """Plan again (after an operator command): at once, unless the last dispatch began less than
        ``dispatch.min_replan_interval_s`` ago, in which case the commands sent until then are planned
        together at the end of that interval. ``at_once``: an operator's explicit dispatch-now. Stages
        and §14a bind at the writer on the next cycle either way."""
        now = self.clock.now()
        last = self.last_dispatch_s
        wait_until = now if at_once or last is None else max(now, last + self.cfg.dispatch.min_replan_interval_s)
        self.replan_at_s = wait_until if not self.dispatch_requested else min(self.replan_at_s, wait_until)
        self.dispatch_requested = True
        if self.on_dispatch_request is not None:
            self.on_dispatch_request(self.replan_at_s)

    def replan_due(self, now: float) -> bool:
        """True when a re-plan was requested and may run now (see :meth:`request_dispatch`)."""
        return self.dispatch_requested and now >= self.replan_at_s
