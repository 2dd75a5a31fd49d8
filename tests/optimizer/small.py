"""Small hand-made dispatch problems for the optimizer tests (quarter-hour periods unless given)."""

from __future__ import annotations

import numpy as np

from sparcs.config.schema import DispatchConfig
from sparcs.optimizer.caps import Setpoints
from sparcs.optimizer.fleet_arrays import FleetArrays
from sparcs.optimizer.problem import BatteryProblem, DispatchPlan, DispatchProblem, SiteProblem

START_S = 1_782_000_000.0  # a quarter-hour boundary in 2026


def battery(capacity_kwh: float = 10.0, power_w: float = 5000.0, soc_now: float = 0.5, **kw: float) -> BatteryProblem:
    args = dict(eta_charge=0.95, eta_discharge=0.95, soc_min=0.05, soc_max=0.95)
    args.update(kw)
    return BatteryProblem(capacity_kwh * 1000.0, power_w, power_w, soc_now=soc_now, **args)  # type: ignore[arg-type]


def site(pv_w, load_w, kwp: float = 10.0, site_id: str = "s1", **kw) -> SiteProblem:  # type: ignore[no-untyped-def]
    pv = np.asarray(pv_w, dtype=float)
    return SiteProblem(
        site_id=site_id,
        pv_available_w=pv,
        load_w=np.broadcast_to(np.asarray(load_w, dtype=float), pv.shape).copy(),
        pv_rating_w=kwp * 1000.0,
        pv_ceiling_w=kw.pop("pv_ceiling_w", kwp * 1000.0),
        kwp=kwp,
        **kw,
    )


def problem(sites: list[SiteProblem], price=None, schedule=None, **weights: float) -> DispatchProblem:  # type: ignore[no-untyped-def]
    n = sites[0].periods
    return DispatchProblem(
        start_s=START_S,
        period_s=np.full(n, 900.0),
        price_eur_per_mwh=np.full(n, 80.0) if price is None else np.asarray(price, dtype=float),
        sites=sites,
        export_schedule_w=None if schedule is None else np.asarray(schedule, dtype=float),
        weights=DispatchConfig(**weights),
    )


def setpoints_of(plan: DispatchPlan, fa: FleetArrays) -> Setpoints:
    """A plan's setpoints with stored energy in Wh, for optimizer.caps.violations."""
    energy = np.nan_to_num(plan.soc * fa.capacity_wh[:, None])
    return Setpoints(plan.pv_w, plan.pv_limit_w, plan.battery_w, plan.grid_w, energy)
