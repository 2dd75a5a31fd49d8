"""The fleet dispatch LP as a Pyomo model, solved by HiGHS through highspy (Pyomo's appsi_highs).

One model serves two uses: the monolithic plan (every site a row of the arrays, for validation and
small fleets) and the aggregate of the hierarchical plan (every virtual plant a row). Per row and
period: PV output (curtailment = available − output), battery charge, discharge and stored energy,
import and export at the meter; fleet rows tie the net export to the operator's schedule with
penalised deviations. Goals are soft (the deviations), bounds are hard; no binaries.

Objective (EUR): import × tariff − export × remuneration (or day-ahead price) + schedule penalty ×
|deviation| + throughput cost × charged kWh + curtailment penalty × curtailed kWh (where PV is not
curtailable: the over-cap penalty × kWh exported over the cap, FleetArrays.pv_shortfall_eur_per_kwh)
− terminal value × stored kWh at the end. A W held for ``dt_h`` hours is ``dt_h / 1000`` kWh.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pyomo.environ as pyo
from pyomo.contrib.appsi.base import TerminationCondition
from pyomo.contrib.appsi.solvers import Highs

from sparcs.optimizer.fleet_arrays import TERMINAL_TIE_BREAK, FleetArrays
from sparcs.optimizer.site_lp import SiteSolution, SolveError

SIMPLEX_MAX_CELLS = 5_000
"""Row-periods up to which the model is solved by dual simplex rather than interior point."""


@dataclass
class ModelResult:
    solution: SiteSolution
    build_s: float
    solve_s: float


def build_model(fa: FleetArrays) -> pyo.ConcreteModel:
    """The LP over the rows of ``fa`` (sites or virtual plants) with the fleet schedule coupling."""
    n, nt = fa.shape
    kwh = fa.dt_h / 1000.0
    bat = [int(i) for i in np.flatnonzero(fa.has_battery)]
    sched = [int(t) for t in np.flatnonzero(np.isfinite(fa.schedule_w))]
    exp_price = fa.lp_export_eur_per_kwh()
    m = pyo.ConcreteModel()
    m.S = pyo.RangeSet(0, n - 1)
    m.T = pyo.RangeSet(0, nt - 1)
    m.B = pyo.Set(initialize=bat)
    m.D = pyo.Set(initialize=sched)

    m.pv = pyo.Var(m.S, m.T, bounds=lambda _, s, t: (0.0, fa.pv_max_w[s, t]))
    m.imp = pyo.Var(m.S, m.T, bounds=lambda _, s, t: (0.0, fa.import_max_w[s]))
    m.exp = pyo.Var(m.S, m.T, bounds=lambda _, s, t: (0.0, fa.export_max_w[s, t]))

    p14_bound = fa.para14a & (fa.pv_max_w <= fa.load_w)

    def ch_bounds(_: pyo.ConcreteModel, s: int, t: int) -> tuple[float, float]:
        up = fa.charge_max_w[s, t]
        return (0.0, min(up, fa.para14a_limit_w) if p14_bound[s, t] else up)

    m.ch = pyo.Var(m.B, m.T, bounds=ch_bounds)
    m.dis = pyo.Var(m.B, m.T, bounds=lambda _, s, t: (0.0, fa.discharge_max_w[s]))
    m.e = pyo.Var(m.B, m.T, bounds=lambda _, s, t: (fa.energy_min_wh[s, t], fa.energy_max_wh[s, t]))
    m.dp = pyo.Var(m.D, within=pyo.NonNegativeReals)
    m.dm = pyo.Var(m.D, within=pyo.NonNegativeReals)

    def balance(mm: pyo.ConcreteModel, s: int, t: int) -> object:
        batt = (mm.dis[s, t] - mm.ch[s, t]) if s in mm.B else 0.0
        return mm.pv[s, t] + mm.imp[s, t] - mm.exp[s, t] + batt == float(fa.load_w[s, t])

    m.balance = pyo.Constraint(m.S, m.T, rule=balance)

    def energy(mm: pyo.ConcreteModel, s: int, t: int) -> object:
        before = mm.e[s, t - 1] if t > 0 else float(fa.energy_now_wh[s])
        flow = fa.eta_charge[s] * mm.ch[s, t] - mm.dis[s, t] / fa.eta_discharge[s]
        return mm.e[s, t] == before + float(fa.dt_h[t]) * flow

    m.energy = pyo.Constraint(m.B, m.T, rule=energy)

    p14_rows = [(s, t) for s in bat for t in range(nt) if fa.para14a[s, t] and not p14_bound[s, t]]
    m.P14 = pyo.Set(initialize=p14_rows, dimen=2)
    m.para14a = pyo.Constraint(
        m.P14, rule=lambda mm, s, t: mm.ch[s, t] - mm.pv[s, t] <= fa.para14a_limit_w - float(fa.load_w[s, t])
    )
    m.schedule = pyo.Constraint(
        m.D,
        rule=lambda mm, t: (
            sum(mm.exp[s, t] - mm.imp[s, t] for s in mm.S) - mm.dp[t] + mm.dm[t] == float(fa.schedule_w[t])
        ),
    )

    energy_cost = sum(
        float(kwh[t]) * (fa.import_eur_per_kwh[s, t] * m.imp[s, t] - exp_price[s, t] * m.exp[s, t])
        for s in range(n)
        for t in range(nt)
    )
    shortfall = fa.pv_shortfall_eur_per_kwh().tolist()  # Python floats, as the other coefficients
    curtail = sum(float(kwh[t]) * shortfall[s] * (fa.pv_max_w[s, t] - m.pv[s, t]) for s in range(n) for t in range(nt))
    charge_cost = fa.lp_charge_eur_per_kwh().tolist()
    throughput = sum(float(kwh[t]) * charge_cost[t] * m.ch[s, t] for s in bat for t in range(nt))
    schedule = sum(float(kwh[t]) * fa.schedule_eur_per_kwh * (m.dp[t] + m.dm[t]) for t in sched)
    terminal = sum(TERMINAL_TIE_BREAK * fa.terminal_eur_per_kwh[s] / 1000.0 * m.e[s, nt - 1] for s in bat)
    m.obj = pyo.Objective(expr=energy_cost + curtail + throughput + schedule - terminal, sense=pyo.minimize)
    return m


def solve_model(fa: FleetArrays, time_limit_s: float = 60.0) -> ModelResult:
    """Build and solve the LP of ``fa``; raise :class:`SolveError` unless HiGHS reports optimal."""
    t0 = time.perf_counter()
    m = build_model(fa)
    t1 = time.perf_counter()
    opt = Highs()
    opt.config.time_limit = time_limit_s
    opt.config.load_solution = False
    # Interior point without crossover for large plans; dual simplex on small ones (an aggregate of
    # a few plants, up to SIMPLEX_MAX_CELLS), where it is faster.
    small = fa.shape[0] * fa.shape[1] <= SIMPLEX_MAX_CELLS
    # Costs are EUR per W and period (about 1e-4): HiGHS's default dual feasibility tolerance (1e-7)
    # would let the simplex stop up to ~0.1 % of a cost away from the optimum; 1e-10 does not.
    simplex = {"solver": "simplex", "dual_feasibility_tolerance": 1e-10}
    opt.highs_options = simplex if small else {"solver": "ipm", "run_crossover": "off"}
    res = opt.solve(m)
    if res.termination_condition != TerminationCondition.optimal:
        raise SolveError(f"HiGHS returned {res.termination_condition.name} for the fleet model")
    res.solution_loader.load_vars()
    t2 = time.perf_counter()
    n, nt = fa.shape

    def grid(var: pyo.Var, rows: list[int]) -> np.ndarray:
        out = np.zeros((n, nt))
        for s in rows:
            out[s] = [var[s, t].value for t in range(nt)]
        return out

    rows = list(range(n))
    bat = [int(i) for i in np.flatnonzero(fa.has_battery)]
    sol = SiteSolution(
        pv_w=grid(m.pv, rows),
        import_w=grid(m.imp, rows),
        export_w=grid(m.exp, rows),
        charge_w=grid(m.ch, bat),
        discharge_w=grid(m.dis, bat),
    )
    return ModelResult(sol, t1 - t0, t2 - t1)
