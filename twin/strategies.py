"""The twin's strategies: planners that plug into the same :class:`controller.cycle.Controller`.

Strategies differ only in the planner (controller.cycle's ``Planner`` protocol):

- ``optimizer``: the production planner (:class:`controller.planning.FleetPlanner`: forecasts
  from the simulated weather prediction (:mod:`twin.weather`) and the fleet's measurements, the
  LP in the bounded solver process, caps);
- ``self-consumption`` and ``none``: the optimizer package's baselines
  (:mod:`optimizer.baselines`) on the same problem the production planner builds;
- ``perfect-foresight``: the production planner fed the simulators' true PV potential and load
  (:func:`simulators.physics.site_signals`, period means) instead of forecasts: the limit the
  real strategy is measured against.

:class:`TimedPlanner` wraps any of them and records each plan's wall-clock time and path.

Every strategy plans up to the end of the replayed day at the latest (``horizon_end_s``), not
``dispatch.horizon_h`` ahead as in production (docs/definitions.md "Dispatch cadence"): the twin
scores the day with the energy left in the batteries at its end valued at the import price
(docs/definitions.md "Economics"), so a plan must value that energy the same way. A plan that
looked past midnight would count on tomorrow's sun to refill the batteries and sell, at the export
price, energy the score values at the import price.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from sparcs.config.schema import FleetConfig, SimulationConfig, SiteConfig
from sparcs.controller.commands import CommandBook
from sparcs.controller.cycle import Planner
from sparcs.controller.plan import Plan
from sparcs.controller.planning import FleetPlanner
from sparcs.controller.state import FleetState
from sparcs.optimizer.baselines import no_control_plan, self_consumption_plan
from sparcs.optimizer.forecast_quality import QualityRow
from sparcs.optimizer.problem import DispatchPlan, DispatchProblem, SiteProblem, site_problem
from sparcs.optimizer.solver import PlanningWorker
from sparcs.simulators.physics import SiteSignals, site_signals
from sparcs.twin.weather import simulated_weather

STRATEGIES = ("optimizer", "self-consumption", "none", "perfect-foresight")
SOLVING = {"optimizer", "perfect-foresight"}
"""Strategies that plan in the solver process (and so have solve times worth reporting)."""
FORESIGHT_SAMPLE_S = 60.0
"""Perfect foresight averages the true signals over each plan period at this resolution (s)."""


@dataclass
class DispatchRecord:
    """One plan the controller asked for: sim time (Unix s), wall-clock seconds it took, its path."""

    at_s: float
    wall_s: float
    path: str | None
    reason: str | None


@dataclass
class TimedPlanner:
    """A planner (controller.cycle's ``Planner``) that records every plan's wall-clock time and path;
    delegates everything else to ``inner``."""

    inner: Planner
    records: list[DispatchRecord] = field(default_factory=list)

    def observe(self, state: FleetState) -> None:
        self.inner.observe(state)

    def restore(self, plan: Plan) -> None:
        self.inner.restore(plan)

    def start(self) -> None:
        self.inner.start()

    async def plan(self, state: FleetState, commands: CommandBook, now_s: float) -> Plan | None:
        t0 = time.perf_counter()
        plan = await self.inner.plan(state, commands, now_s)
        wall = time.perf_counter() - t0
        self.records.append(DispatchRecord(now_s, wall, plan.path if plan else None, plan.reason if plan else None))
        return plan

    def close(self) -> None:
        self.inner.close()

    def forecast_quality(self) -> list[QualityRow]:
        return self.inner.forecast_quality()


class BaselinePlanner(FleetPlanner):
    """The production planner's problem, planned by a rule instead of the LP (no solver process)."""

    def __init__(
        self, cfg: FleetConfig, rule: Callable[[DispatchProblem], DispatchPlan], horizon_end_s: float | None = None
    ):
        super().__init__(cfg, horizon_end_s=horizon_end_s)
        self.rule = rule

    async def plan(self, state: FleetState, commands: CommandBook, now_s: float) -> Plan | None:
        problem = self.problem(state, commands, now_s)
        if problem is None:
            return None
        return Plan.from_dispatch(self.rule(problem), problem)


def period_means(
    f: Callable[[np.ndarray], np.ndarray], starts_s: np.ndarray, ends_s: np.ndarray, step_s: float
) -> np.ndarray:
    """Mean of ``f`` over each period [start, end), sampled at the midpoints of ≈ ``step_s`` slices."""
    counts = np.maximum(1, np.round((ends_s - starts_s) / step_s)).astype(int)
    owner = np.repeat(np.arange(len(starts_s)), counts)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    k = np.arange(owner.size) - first[owner]
    t = starts_s[owner] + (k + 0.5) * (ends_s - starts_s)[owner] / counts[owner]
    return np.bincount(owner, weights=f(t), minlength=len(starts_s)) / counts


class PerfectForesightPlanner(FleetPlanner):
    """The production planner with the true future (simulators' signals) in place of the forecasts."""

    def __init__(self, cfg: FleetConfig, worker: PlanningWorker | None = None, horizon_end_s: float | None = None):
        super().__init__(cfg, worker, horizon_end_s)
        sim = cfg.simulation or SimulationConfig()
        self.signals: dict[str, SiteSignals] = {s.id: site_signals(s, sim) for s in cfg.sites}

    def _site(self, site: SiteConfig, state: FleetState, commands: CommandBook, now_s: float, grid) -> SiteProblem:
        starts, ends, _ = grid
        sig = self.signals[site.id]
        rating = site.pv.rating_w
        pv = period_means(lambda t: np.minimum(sig.pv_potential_w(t), rating), starts, ends, FORESIGHT_SAMPLE_S)
        load = period_means(sig.load_w, starts, ends, FORESIGHT_SAMPLE_S)
        ceiling, dimmed = commands.period_series(site.id, starts, ends)
        soc = state.sites[site.id].soc
        prices = self.site_prices(site.id)
        return site_problem(site, pv, load, soc_now=soc, stage_ceiling_w=ceiling, para14a=dimmed, prices=prices)


def make_planner(
    strategy: str, cfg: FleetConfig, worker: PlanningWorker | None = None, horizon_end_s: float | None = None
) -> TimedPlanner:
    """The timed planner of ``strategy`` (one of :data:`STRATEGIES`) for the fleet ``cfg``; plans end at
    ``horizon_end_s`` (Unix s) at the latest (see the module docstring)."""
    if strategy == "optimizer":
        inner: Planner = FleetPlanner(cfg, worker, horizon_end_s, weather=simulated_weather(cfg))
    elif strategy == "perfect-foresight":
        inner = PerfectForesightPlanner(cfg, worker, horizon_end_s)
    elif strategy == "self-consumption":
        inner = BaselinePlanner(cfg, self_consumption_plan, horizon_end_s)
    elif strategy == "none":
        inner = BaselinePlanner(cfg, no_control_plan, horizon_end_s)
    else:
        raise ValueError(f"unknown strategy '{strategy}'; choose from {', '.join(STRATEGIES)}")
    return TimedPlanner(inner)
