"""The replay loop: one strategy, one day, a fresh simulated fleet, the controller's real cycle.

For each simulated minute of the Europe/Berlin day: operator actions that are due are sent to the
controller's command book (as the API does, with an immediate re-plan), the controller runs its
cycle (a dispatch every quarter-hour: 96 on a normal day), then the simulators step 60 s and the
ground truth is sampled. The controller talks to the simulators (a fresh fleet per run, in their
own process: :mod:`twin.fleet_process`) over real Modbus TCP on loopback; its clock and
theirs are stepped together. Nothing here measures what the controller believes:
:class:`Trace` holds the simulators' truth (powers at each minute, energy counters integrated by
the simulators' physics).

Units: W, Wh, Unix s; signs as in DESIGN.md (grid_w > 0 import, battery_w > 0 discharge).
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sparcs.config.schema import FleetConfig
from sparcs.controller.commands import CommandError
from sparcs.controller.cycle import Controller
from sparcs.controller.metrics import Metrics
from sparcs.controller.operations import Operations
from sparcs.controller.store import Store
from sparcs.drivers.poller import FleetPoller
from sparcs.drivers.writer import SetpointWriter
from sparcs.optimizer.solver import PlanningWorker
from sparcs.simulators.clock import SimClock
from sparcs.twin.fleet_process import FleetProcess, Sample
from sparcs.twin.scenario import Action, Scenario, ScenarioError, schedule_request
from sparcs.twin.strategies import SOLVING, DispatchRecord, make_planner

STEP_S = 60.0
"""Poll cadence of the twin and the resolution of its ground truth (one simulated minute)."""
DISPATCH_EVERY = 15
"""Dispatch every 15 polls: once per quarter-hour (DESIGN.md "Dispatch cadence")."""
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

    Sample 0 is the day's start, sample k the end of minute k. ``powers``: W at each sample;
    ``counters``: cumulative Wh since the simulators started (``stored_wh``: energy in the cells).
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


@dataclass
class StrategyRun:
    """What one strategy's replay produced: ground truth, dispatches, commands in force, timings."""

    strategy: str
    trace: Trace
    dispatches: list[DispatchRecord]
    schedule_w: np.ndarray  # per quarter-hour of the day: fleet export asked for, W (NaN = none)
    stage_ceiling_w: np.ndarray  # (sites, samples): stage PV ceiling in force during the minute before, NaN = none
    wall_s: float
    startup_s: float
    cpu_s: float  # CPU time of the controller's process (the fleet and the solver run in their own)


def _send(operations: Operations, i: int, a: Action) -> None:
    """Submit a scenario action through the controller's command path, as the API does."""
    try:
        if a.stage is not None:
            operations.submit(a.stage, WHO)
        elif a.para14a is not None:
            operations.submit(a.para14a, WHO)
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
    on_minute: Callable[[float], None] | None = None,
) -> StrategyRun:
    """Replay ``bounds`` = [start, end) with ``strategy``; ``cfg`` has the scenario applied.

    ``bounds``: Unix s, whole quarter-hours apart (a Europe/Berlin day for `sparcs twin`); plans end
    at ``bounds[1]`` at the latest (:mod:`twin.strategies`).
    ``data_dir`` receives the controller's history store (SQLite) of this run, emptied first.
    ``on_minute`` is called with the sim time after every simulated minute (the progress bar).
    """
    t_wall = time.perf_counter()
    cpu0 = time.process_time()
    clock = SimClock(bounds[0], stepped=True)
    fleet = FleetProcess(cfg, bounds[0])
    worker = PlanningWorker()
    store: Store | None = None
    controller: Controller | None = None
    try:
        first = await fleet.start()
        assert fleet.config is not None
        ctl_cfg = fleet.config  # the bound ports
        ctl_cfg.dispatch.poll_interval_s = STEP_S
        ctl_cfg.dispatch.modbus_timeout_s = max(ctl_cfg.dispatch.modbus_timeout_s, TWIN_MODBUS_TIMEOUT_S)
        if strategy in SOLVING:
            await asyncio.to_thread(worker.start)  # the solver's start-up is not a dispatch
        # A fresh history per run: a store left from an earlier replay would hand the controller its
        # last plan and its operator commands at start-up, as after a restart.
        shutil.rmtree(data_dir, ignore_errors=True)
        store = Store(data_dir=data_dir)
        planner = make_planner(strategy, ctl_cfg, worker, horizon_end_s=bounds[1])
        poller = FleetPoller(ctl_cfg.devices(), ctl_cfg.dispatch, clock.now)
        writer = SetpointWriter(poller, ctl_cfg.dispatch, clock.now)
        controller = Controller(ctl_cfg, store, clock, poller=poller, writer=writer, planner=planner, metrics=Metrics())
        startup_s = time.perf_counter() - t_wall
        site_ids = [s.id for s in ctl_cfg.sites]
        trace = Trace(site_ids)
        trace.add(first)
        # The stage each sample is checked against: the one in force when the controller last cycled.
        stages: list[list[float]] = [[np.nan] * len(site_ids)]
        actions = sorted(enumerate(scenario.actions if scenario else []), key=lambda ia: ia[1].at)
        minutes = round((bounds[1] - bounds[0]) / STEP_S)
        for m in range(minutes):
            now = clock.now()
            while actions and actions[0][1].at.timestamp() <= now:
                i, a = actions.pop(0)
                _send(controller.operations, i, a)
            in_force = [_nan(controller.commands.stage_ceiling_w(sid, now)) for sid in site_ids]
            await controller.cycle(dispatch=m % DISPATCH_EVERY == 0 or controller.dispatch_requested)
            trace.add(await fleet.step(STEP_S))
            clock.step(STEP_S)
            stages.append(in_force)
            if on_minute is not None:
                on_minute(clock.now())
        quarters = bounds[0] + 900.0 * np.arange(round((bounds[1] - bounds[0]) / 900.0))
        schedule = controller.commands.schedule_series(quarters)
        return StrategyRun(
            strategy=strategy,
            trace=trace,
            dispatches=planner.records,
            schedule_w=schedule,
            stage_ceiling_w=np.asarray(stages, dtype=float).T,
            wall_s=time.perf_counter() - t_wall,
            startup_s=startup_s,
            cpu_s=time.process_time() - cpu0,
        )
    finally:
        if controller is not None:
            await controller.close()
        else:
            worker.close()
        await fleet.stop()
        if store is not None:
            store.close()


def _nan(v: float | None) -> float:
    return np.nan if v is None else float(v)
