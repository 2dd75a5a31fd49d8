"""The full fleet objective on final per-site setpoints (docs/definitions.md "Economics", "Gap to the
monolithic optimum").

Every plan — monolithic, hierarchical, fallback, baseline — is scored here by the same function, on
what would be written and metered (net meter power per site, so an LP's simultaneous import and
export cannot flatter it). EUR; a W held for ``dt_h`` hours is ``dt_h / 1000`` kWh.
"""

from __future__ import annotations

import numpy as np

from sparcs.optimizer.caps import Setpoints
from sparcs.optimizer.fleet_arrays import FleetArrays
from sparcs.optimizer.problem import DispatchPlan, DispatchProblem, ObjectiveParts, PlanPath


def fleet_export_w(sp: Setpoints) -> np.ndarray:
    """Net export of the fleet at the meters per period, W (negative when the fleet imports)."""
    return -sp.grid_w.sum(axis=0)


def score(fa: FleetArrays, sp: Setpoints) -> ObjectiveParts:
    """The objective's parts for setpoints ``sp`` (see :class:`~optimizer.problem.ObjectiveParts`)."""
    kwh = fa.dt_h[None, :] / 1000.0
    imp = np.maximum(sp.grid_w, 0.0)
    exp = np.maximum(-sp.grid_w, 0.0)
    energy = float(np.sum(kwh * (fa.import_eur_per_kwh * imp - fa.export_eur_per_kwh * exp)))
    sched = np.isfinite(fa.schedule_w)
    deviation = np.abs(fleet_export_w(sp) - np.where(sched, fa.schedule_w, 0.0))
    schedule = float(np.sum(fa.dt_h[sched] / 1000.0 * deviation[sched])) * fa.schedule_eur_per_kwh
    charge = np.maximum(-sp.battery_w, 0.0)
    throughput = float(np.sum(kwh * charge)) * fa.throughput_eur_per_kwh
    curtailment = float(np.sum(kwh * (fa.pv_max_w - sp.pv_w))) * fa.curtailment_eur_per_kwh
    terminal = float(np.sum(fa.terminal_eur_per_kwh * sp.energy_wh[:, -1] / 1000.0))
    return ObjectiveParts(energy, schedule, throughput, curtailment, terminal)


def gap_to_monolithic(obj_hierarchical: float, obj_monolithic: float, obj_no_control: float) -> float:
    """Share of the achievable improvement the hierarchy gives up: (hier − mono) / (none − mono)."""
    achievable = obj_no_control - obj_monolithic
    if achievable <= 0:
        raise ValueError("no control is not worse than the monolithic optimum: the gap is undefined")
    return (obj_hierarchical - obj_monolithic) / achievable


def plan_from_setpoints(
    problem: DispatchProblem,
    fa: FleetArrays,
    sp: Setpoints,
    path: PlanPath,
    reason: str = "",
    timings: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> DispatchPlan:
    """A :class:`DispatchPlan` of final setpoints, scored; ``timings`` = (build_s, solve_s, split_s)."""
    parts = score(fa, sp)
    capacity = np.where(fa.has_battery, fa.capacity_wh, np.nan)[:, None]
    return DispatchPlan(
        site_ids=[s.site_id for s in problem.sites],
        start_s=problem.start_s,
        period_s=problem.period_s.copy(),
        pv_w=sp.pv_w,
        pv_limit_w=sp.pv_limit_w,
        battery_w=sp.battery_w,
        grid_w=sp.grid_w,
        soc=sp.energy_wh / capacity,
        export_w=fleet_export_w(sp),
        objective_eur=parts.total,
        parts=parts,
        soc_end_kwh=float(sp.energy_wh[:, -1].sum() / 1000.0),
        path=path,
        reason=reason,
        build_s=timings[0],
        solve_s=timings[1],
        split_s=timings[2],
    )
