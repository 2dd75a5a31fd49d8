"""Baselines beside the optimizer, as DispatchPlan-shaped output the twin can compare.

- :func:`no_control_plan` — what the law requires without a controller (docs/definitions.md
  "Baselines"): the installer configuration limits PV output AT THE INVERTER to the site's feed-in
  cap (static, e.g. 60 % of kWp, so the site is legal whatever its load), curtailment stages act
  through the ripple-control receiver, and the battery is not dispatched (0 W: no vendor's own
  self-consumption mode is assumed, so the gains of any strategy that does dispatch it are counted
  honestly).
  Nothing else is applied: the static limit knows neither prices nor schedules.
- :func:`self_consumption_plan` — charge from PV surplus, discharge to cover the load, every cap
  enforced by :func:`optimizer.caps.apply_caps`. It is also the optimizer's last-resort fallback.
"""

from __future__ import annotations

import numpy as np

from sparcs.optimizer.caps import Setpoints, apply_caps
from sparcs.optimizer.fleet_arrays import FleetArrays, feed_in_caps_w, fleet_arrays
from sparcs.optimizer.problem import DispatchPlan, DispatchProblem, PlanPath
from sparcs.optimizer.scoring import plan_from_setpoints


def no_control_setpoints(problem: DispatchProblem, fa: FleetArrays) -> Setpoints:
    """Installer configuration: PV limited at the inverter to the static feed-in cap, battery idle."""
    limit = np.minimum(fa.pv_ceiling_w, feed_in_caps_w(problem.sites)[:, None])
    pv = np.minimum(fa.pv_max_w, limit)
    battery = np.zeros_like(pv)
    return Setpoints(pv, limit, battery, fa.load_w - pv, fa.soc_from_battery(battery))


def no_control_plan(problem: DispatchProblem) -> DispatchPlan:
    fa = fleet_arrays(problem)
    return plan_from_setpoints(problem, fa, no_control_setpoints(problem, fa), "baseline", "no control")


def self_consumption_setpoints(fa: FleetArrays) -> Setpoints:
    """Battery covers the gap between full PV and load (charge surplus, discharge deficit); caps applied."""
    return apply_caps(fa, fa.pv_max_w, fa.load_w - fa.pv_max_w)


def self_consumption_plan(
    problem: DispatchProblem, path: PlanPath = "baseline", reason: str = "self-consumption"
) -> DispatchPlan:
    fa = fleet_arrays(problem)
    return plan_from_setpoints(problem, fa, self_consumption_setpoints(fa), path, reason)
