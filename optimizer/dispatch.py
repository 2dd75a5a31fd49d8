"""Fleet dispatch: ``plan(problem) -> DispatchPlan``, monolithic or hierarchical, caps applied last.

- Monolithic: one Pyomo model of every site (optimizer.pyomo_model) — exact; for validation and
  small fleets (Pyomo's overhead and the interior point grow too fast beyond a few hundred sites).
- Hierarchical: sites → about ``clusters`` virtual plants (optimizer.aggregate), one small Pyomo
  model of the plants decides the fleet's course against the schedule, its plan is split into
  per-site net-export targets for the scheduled periods, and every site's own LP (optimizer.site_lp,
  built as numpy arrays and solved in bulk by highspy) meets its target at its own least cost —
  free where no schedule is set.

Either way the solution is netted (charge and discharge of one battery in one period cancel: an
interior point without crossover can split ties), then clamped by :func:`optimizer.caps.apply_caps`
and scored on the final setpoints by :func:`optimizer.scoring.score`.

This function runs in the caller's process and can take long; the controller calls it through
:class:`optimizer.solver.PlanningWorker`, which bounds wall-clock time and falls back.
"""

from __future__ import annotations

import time

import numpy as np

from sparcs.optimizer.aggregate import aggregate, cluster_sites, split_order, split_targets
from sparcs.optimizer.caps import Setpoints, apply_caps
from sparcs.optimizer.fleet_arrays import FleetArrays, fleet_arrays
from sparcs.optimizer.problem import DispatchPlan, DispatchProblem
from sparcs.optimizer.pyomo_model import solve_model
from sparcs.optimizer.scoring import plan_from_setpoints
from sparcs.optimizer.site_lp import SiteSolution, solve_fleet_sites

MONOLITHIC_MAX_SITES = 20
"""Fleets up to this size are planned by the exact monolithic model (well under a second)."""


def net_battery_w(sol: SiteSolution) -> np.ndarray:
    """Battery setpoint (+ discharge, − charge) with simultaneous charge and discharge netted."""
    return sol.discharge_w - sol.charge_w


def _setpoints(fa: FleetArrays, sol: SiteSolution) -> Setpoints:
    return apply_caps(fa, sol.pv_w, net_battery_w(sol))


def plan_monolithic(problem: DispatchProblem, time_limit_s: float = 60.0) -> DispatchPlan:
    """The exact plan: every site in one Pyomo model."""
    fa = fleet_arrays(problem)
    res = solve_model(fa, time_limit_s)
    return plan_from_setpoints(
        problem, fa, _setpoints(fa, res.solution), "optimal", "monolithic", (res.build_s, res.solve_s, 0.0)
    )


def default_clusters(n_sites: int) -> int:
    """Virtual plants for a fleet: enough to keep members alike, few enough for a fast aggregate."""
    return int(np.clip(round(np.sqrt(n_sites)), 1, 12))


def plan_hierarchical(
    problem: DispatchProblem, clusters: int | None = None, time_limit_s: float = 60.0
) -> DispatchPlan:
    """Aggregate, solve, split back per site, repair with the caps."""
    fa = fleet_arrays(problem)
    k = clusters if clusters is not None else default_clusters(len(problem.sites))
    labels = cluster_sites(problem, fa, k)
    agg = aggregate(fa, labels)
    res = solve_model(agg, time_limit_s)
    t0 = time.perf_counter()
    targets = split_targets(fa, agg, labels, res.solution)
    order = split_order(fa, labels)
    sol = solve_fleet_sites(fa, targets, fa.schedule_eur_per_kwh, order, time_limit_s=time_limit_s)
    sp = _setpoints(fa, sol)
    split_s = time.perf_counter() - t0
    reason = f"hierarchical: {agg.shape[0]} virtual plants"
    return plan_from_setpoints(problem, fa, sp, "optimal", reason, (res.build_s, res.solve_s, split_s))


def plan(problem: DispatchProblem, time_limit_s: float | None = None) -> DispatchPlan:
    """The fleet's plan: monolithic up to :data:`MONOLITHIC_MAX_SITES` sites, hierarchical above.

    Raises :class:`optimizer.site_lp.SolveError` when HiGHS does not report an optimum.
    """
    limit = problem.weights.solve_timeout_s if time_limit_s is None else time_limit_s
    if len(problem.sites) <= MONOLITHIC_MAX_SITES:
        return plan_monolithic(problem, limit)
    return plan_hierarchical(problem, time_limit_s=limit)
