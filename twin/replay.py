"""The replay loop: one strategy, one day, a fresh simulated fleet, the controller's real cycle.

The cadence is production's (docs/definitions.md "Dispatch cadence"): the twin polls every
``dispatch.poll_interval_s`` and dispatches every ``dispatch.dispatch_interval_s`` of its config,
at ticks aligned to the clock (a 300 s interval dispatches at :00, :05, ...), at start-up, and at
once after an operator command; the scenario may set other intervals
(:func:`twin.scenario.cadence`, applied to the config by :func:`twin.scenario.apply_scenario`).

At every poll: operator actions that are due are sent through the controller's command path
(:meth:`controller.operations.Operations.submit`, as the API does, with an immediate re-plan), the
controller runs its cycle, then the simulators step one poll interval and the ground truth is
sampled. The controller is built by the composition root's factory
(:func:`sparcs.factory.build_controller`) with the strategy's planner, and talks to the simulators
(a fresh fleet per run, in their own process: :mod:`twin.fleet_process`) over real Modbus TCP on
loopback; its clock and theirs are stepped together. Nothing here measures what the controller
believes: :class:`Trace` holds the simulators' truth (powers at each poll, energy counters
integrated by the simulators' physics).

Units: W, Wh, Unix s; signs as in docs/definitions.md "Signs" (grid_w > 0 import, battery_w > 0
discharge).
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sparcs.config.grid_rules import QUARTER_S
from sparcs.config.schema import FleetConfig
from sparcs.controller.commands import CommandError
from sparcs.controller.cycle import Controller
from sparcs.controller.operations import Operations
from sparcs.controller.store import Store
from sparcs.factory import build_controller
from sparcs.optimizer.forecast_quality import QualityRow
from sparcs.simulators.clock import SimClock
from sparcs.twin.edges import EdgeRig
from sparcs.twin.fleet_process import FleetProcess, Sample
from sparcs.twin.scenario import Action, Scenario, ScenarioError, cadence, schedule_request
from sparcs.twin.strategies import SOLVING, DispatchRecord, TimedPlanner, make_planner

WHO = "twin-scenario"
TWIN_MODBUS_TIMEOUT_S = 10.0
"""Modbus reply timeout of the twin's controller (wall s). No simulated time passes while it waits, so
a timeout only tells a lost reply from a busy machine; a short one would turn CPU contention into
stale devices that the field would not see. Slow-reply faults keep their production meaning through
:func:`twin.scenario.drop_invisible_delays`."""

COUNTERS = ("pv_wh", "import_wh", "export_wh", "charged_wh", "discharged_wh", "stored_wh")
POWERS = ("pv_w", "battery_w", "load_w", "grid_w", "available_w")


@dataclass
class Trace:
    """Ground truth per site (rows, in ``site_ids`` order) and sample (columns).

    Sample 0 is the span's start, sample k the end of the k-th poll interval (samples are evenly
    spaced, :attr:`step_s` apart). ``powers``: W at each sample; ``counters``: cumulative Wh since the
    simulators started (``stored_wh``: energy in the cells).
    """

    site_ids: list[str]
    t_s: list[float] = field(default_factory=list)
    powers: dict[str, list[list[float]]] = field(default_factory=lambda: {k: [] for k in POWERS})
    counters: dict[str, list[list[float]]] = field(default_factory=lambda: {k: [] for k in COUNTERS})

    def add(self, sample: Sample) -> None:
        """Record one sample of the fleet process (:func:`twin.fleet_process.site_sample`)."""
        self.t_s.append(sample["t"])
        rows = [sample["sites"][sid] for sid in self.site_ids]
        for k in POWERS:
            self.powers[k].append([r[k] for r in rows])
        for k in COUNTERS:
            self.counters[k].append([r[k] for r in rows])

    def power(self, key: str) -> np.ndarray:
        """``(sites, samples)`` array of a power in W."""
        return np.asarray(self.powers[key], dtype=float).T

    def counter(self, key: str) -> np.ndarray:
        """``(sites, samples)`` array of a cumulative energy in Wh."""
        return np.asarray(self.counters[key], dtype=float).T

    @property
    def times(self) -> np.ndarray:
        return np.asarray(self.t_s, dtype=float)

    @property
    def step_s(self) -> float:
        """The spacing of the samples (s): the poll interval of the replay. Raises ValueError if uneven."""
        gaps = np.diff(self.times)
        if gaps.size == 0:
            raise ValueError("a trace of one sample has no spacing")
        if np.ptp(gaps) > 1e-3:
            raise ValueError(f"samples are not evenly spaced ({gaps.min():g} s to {gaps.max():g} s)")
        return float(gaps.mean())

    def samples_per_quarter(self) -> int:
        """Samples in a quarter-hour (the poll interval divides 900 s: :func:`twin.scenario.cadence`)."""
        n = round(QUARTER_S / self.step_s)
        if abs(n * self.step_s - QUARTER_S) > 1e-3:
            raise ValueError(f"a sample spacing of {self.step_s:g} s does not divide the quarter-hour")
        return n


@dataclass
class StrategyRun:
    """What one strategy's replay produced: ground truth, dispatches, commands in force, timings."""

    strategy: str
    trace: Trace
    dispatches: list[DispatchRecord]
    schedule_w: np.ndarray  # per quarter-hour of the day: fleet export asked for, W (NaN = none)
    stage_ceiling_w: np.ndarray  # (sites, samples): stage PV ceiling in force during the poll before, NaN = none
    poll_interval_s: float
    dispatch_interval_s: float
    wall_s: float
    startup_s: float
    cpu_s: float  # CPU time of the controller's process (the fleet and the solver run in their own)
    forecast_quality: list[QualityRow]  # the planner's forecasts scored against the replayed day


def _send(operations: Operations, i: int, a: Action) -> None:
    """Submit a scenario action through the controller's command path, as the API does."""
    try:
        if a.stage is not None:
            operations.submit(a.stage, WHO)
        elif a.para14a is not None:
            operations.submit(a.para14a, WHO)
        elif a.pool_limit is not None:
            operations.submit(a.pool_limit, WHO)
        else:
            req = schedule_request(a)
            if req is not None:
                operations.submit(req, WHO)
    except CommandError as exc:
        raise ScenarioError("scenario", [f"actions[{i}].{exc.field}: {exc.message}"]) from None


async def replay(
    cfg: FleetConfig,
    strategy: str,
    bounds: tuple[float, float],
    scenario: Scenario | None,
    data_dir: Path,
    on_poll: Callable[[float], None] | None = None,
) -> StrategyRun:
    """Replay ``bounds`` = [start, end) with ``strategy``; ``cfg`` has the scenario applied (its cadence too).

    ``bounds``: Unix s, whole quarter-hours apart (a Europe/Berlin day for `sparcs twin`); plans end
    at ``bounds[1]`` at the latest (:mod:`twin.strategies`). The controller polls every
    ``cfg.dispatch.poll_interval_s`` and dispatches every ``cfg.dispatch.dispatch_interval_s``
    (see the module docstring); ScenarioError if that cadence does not fit the twin.
    ``data_dir`` receives the controller's history store (SQLite) of this run, emptied first.
    ``on_poll`` is called with the sim time after every poll interval (the progress bar).
    """
    c = cadence(cfg, None)  # cfg carries the scenario's intervals already
    poll_s, dispatch_s = c.poll_interval_s, c.dispatch_interval_s
    t_wall = time.perf_counter()
    cpu0 = time.process_time()
    clock = SimClock(bounds[0], stepped=True)
    fleet = FleetProcess(cfg, bounds[0])
    store: Store | None = None
    planner: TimedPlanner | None = None
    controller: Controller | None = None
    rig: EdgeRig | None = None
    try:
        first = await fleet.start()
        assert fleet.config is not None
        ctl_cfg = fleet.config  # the bound ports
        ctl_cfg.dispatch.modbus_timeout_s = max(ctl_cfg.dispatch.modbus_timeout_s, TWIN_MODBUS_TIMEOUT_S)
        planner = make_planner(strategy, ctl_cfg, horizon_end_s=bounds[1])
        if strategy in SOLVING:
            await asyncio.to_thread(planner.start)  # the solver's start-up is not a dispatch
        # A fresh history per run: a store left from an earlier replay would hand the controller its
        # last plan and its operator commands at start-up, as after a restart.
        shutil.rmtree(data_dir, ignore_errors=True)
        store = Store(data_dir=data_dir)
        if ctl_cfg.broker is not None and ctl_cfg.broker.edges:  # the fleet behind edges, over a broker
            rig = EdgeRig(ctl_cfg, data_dir / "edges", clock)
            ctl_cfg = rig.cfg
        controller = build_controller(ctl_cfg, store, clock, planner=planner)
        if rig is not None:
            await rig.start(controller)
        startup_s = time.perf_counter() - t_wall
        site_ids = [s.id for s in ctl_cfg.sites]
        trace = Trace(site_ids)
        trace.add(first)
        # The stage each sample is checked against: the one in force when the controller last cycled.
        stages: list[list[float]] = [[np.nan] * len(site_ids)]
        actions = sorted(enumerate(scenario.actions if scenario else []), key=lambda ia: ia[1].at)
        polls = round((bounds[1] - bounds[0]) / poll_s)
        for k in range(polls):
            now = clock.now()
            while actions and actions[0][1].at.timestamp() <= now:
                i, a = actions.pop(0)
                if a.broker_outage is not None:
                    if rig is None:
                        raise ScenarioError("scenario", [f"actions[{i}].broker_outage: the fleet has no edges"])
                    rig.outage(now, a.broker_outage.duration_s)
                else:
                    _send(controller.operations, i, a)
            in_force = [_nan(controller.commands.stage_ceiling_w(sid, now)) for sid in site_ids]
            if rig is not None:
                await rig.poll()  # the edges poll their sites and keep the limits; the central hears them
            tick = k == 0 or on_tick(bounds[0] + k * poll_s, dispatch_s)  # start-up, then aligned ticks
            await controller.cycle(dispatch=tick or controller.replan_due(now))  # as the scheduler would
            trace.add(await fleet.step(poll_s))
            clock.step(poll_s)
            stages.append(in_force)
            if on_poll is not None:
                on_poll(clock.now())
        quarters = bounds[0] + QUARTER_S * np.arange(round((bounds[1] - bounds[0]) / QUARTER_S))
        schedule = controller.commands.schedule_series(quarters)
        return StrategyRun(
            strategy=strategy,
            trace=trace,
            dispatches=planner.records,
            schedule_w=schedule,
            stage_ceiling_w=np.asarray(stages, dtype=float).T,
            poll_interval_s=poll_s,
            dispatch_interval_s=dispatch_s,
            wall_s=time.perf_counter() - t_wall,
            startup_s=startup_s,
            cpu_s=time.process_time() - cpu0,
            forecast_quality=planner.forecast_quality() if strategy == "optimizer" else [],
        )
    finally:
        if rig is not None:
            await rig.close()
        if controller is not None:
            await controller.close()
        elif planner is not None:
            planner.close()
        await fleet.stop()
        if store is not None:
            store.close()


def on_tick(t_s: float, interval_s: float) -> bool:
    """Whether ``t_s`` (Unix s) is a tick of ``interval_s`` aligned to the clock, as the production
    scheduler's (:func:`sparcs.controller.scheduler.aligned_start`): a multiple of it since the epoch."""
    r = t_s % interval_s
    return min(r, interval_s - r) < 1e-6


def _nan(v: float | None) -> float:
    return np.nan if v is None else float(v)
