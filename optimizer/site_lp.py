"""Many independent per-site dispatch LPs built as numpy arrays and solved in bulk by highspy.

This is the split-back of the hierarchical planner (DESIGN.md "Scale"): Pyomo's per-model
overhead (~20 ms a site) rules out one Pyomo model per site, so a chunk of sites is assembled as
one block-diagonal LP straight from :class:`~optimizer.fleet_arrays.FleetArrays` and handed to
HiGHS. Dual simplex on chunks of ~10 sites measured fastest here (3.4 ms a site, against
7–12 ms for interior point on chunks of 10–250 sites), so :func:`solve_fleet_sites` chunks. A
chunk may track the summed net-export targets of its sites with a penalty (their share of the
fleet schedule), which lets the LP reallocate a target between the chunk's sites at their own
costs; the per-site model is otherwise the monolithic one.

Per site and period the columns are ``pv, imp, exp`` (W), and with a battery ``ch, dis`` (W) and
``e`` (Wh at the end of the period); tracking adds ``dp, dm`` per tracked period (W above/below). Costs are
in EUR: a W held for ``dt_h`` hours is ``dt_h / 1000`` kWh.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import highspy
import numpy as np
import scipy.sparse as sp

from optimizer.fleet_arrays import FleetArrays


@dataclass
class SiteSolution:
    """Per-site powers (W) ``(n, T)`` for the sites solved, in the order given."""

    pv_w: np.ndarray
    import_w: np.ndarray
    export_w: np.ndarray
    charge_w: np.ndarray
    discharge_w: np.ndarray


class SolveError(RuntimeError):
    """HiGHS did not return an optimal solution."""


def _highs(time_limit_s: float) -> highspy.Highs:
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("solver", "simplex")
    # Presolve costs more than it saves on chunks this small (3.2 against 5.7 ms a site measured);
    # Devex pricing beat the default dual edge weights by ~15 %.
    h.setOptionValue("presolve", "off")
    h.setOptionValue("simplex_dual_edge_weight_strategy", 1)
    h.setOptionValue("time_limit", float(time_limit_s))
    return h


def solve_sites(
    fa: FleetArrays,
    sites: np.ndarray,
    target_export_w: np.ndarray | None = None,
    track_eur_per_kwh: float = 0.0,
    time_limit_s: float = 60.0,
) -> SiteSolution:
    """Solve the independent LPs of ``sites`` (indices into ``fa``) as one block-diagonal LP.

    ``target_export_w`` ``(len(sites), T)``: net export per site and period to track, pooled over
    the chunk (NaN = free in that period); deviations of the chunk's sum cost ``track_eur_per_kwh``.
    """
    sites = np.asarray(sites, dtype=np.int64)
    n, t = sites.size, fa.shape[1]
    nt = n * t
    dt = np.broadcast_to(fa.dt_h, (n, t)).ravel()
    kwh = dt / 1000.0
    bat = fa.has_battery[sites]
    b_sites = sites[bat]
    nb = b_sites.size
    nbt = nb * t

    # Tracking is pooled: the chunk's summed net export follows the sum of its sites' targets, so
    # the LP may reallocate a target between the sites of one chunk at their own costs.
    tracked = np.zeros(t, dtype=bool) if target_export_w is None else np.isfinite(target_export_w).all(0)
    tr_t = np.flatnonzero(tracked)
    m = tr_t.size
    # Column layout: pv, imp, exp (n*t each), ch, dis, e (nb*t each), dp, dm (m each).
    o_pv, o_imp, o_exp = 0, nt, 2 * nt
    o_ch, o_dis, o_e = 3 * nt, 3 * nt + nbt, 3 * nt + 2 * nbt
    o_dp, o_dm = 3 * nt + 3 * nbt, 3 * nt + 3 * nbt + m
    ncol = o_dm + m

    cost = np.zeros(ncol)
    lower = np.zeros(ncol)
    upper = np.empty(ncol)
    cost[o_pv : o_pv + nt] = -fa.curtailment_eur_per_kwh * kwh
    cost[o_imp : o_imp + nt] = np.repeat(fa.import_eur_per_kwh[sites], t) * kwh
    cost[o_exp : o_exp + nt] = -fa.lp_export_eur_per_kwh()[sites].ravel() * kwh
    upper[o_pv : o_pv + nt] = fa.pv_max_w[sites].ravel()
    # Import never exceeds what the site can consume, export never what it can produce: implied
    # bounds that fix many columns at 0 (export at night without a battery) before the solve.
    sinks = fa.load_w[sites] + fa.charge_max_w[sites]
    sources = fa.pv_max_w[sites] + fa.discharge_max_w[sites][:, None]
    upper[o_imp : o_imp + nt] = np.minimum(fa.import_max_w[sites][:, None], sinks).ravel()
    upper[o_exp : o_exp + nt] = np.minimum(fa.export_max_w[sites], sources).ravel()

    bdt = np.broadcast_to(fa.dt_h, (nb, t)).ravel()
    ch_up = fa.charge_max_w[b_sites].ravel().copy()
    p14 = fa.para14a[b_sites].ravel()
    load_b = fa.load_w[b_sites].ravel()
    pvmax_b = fa.pv_max_w[b_sites].ravel()
    # §14a: without PV surplus the charge bound is the limit; with surplus a row ch − pv ≤ limit − load.
    p14_bound = p14 & (pvmax_b <= load_b)
    p14_row = p14 & (pvmax_b > load_b)
    ch_up[p14_bound] = np.minimum(ch_up[p14_bound], fa.para14a_limit_w)
    cost[o_ch : o_ch + nbt] = fa.throughput_eur_per_kwh * bdt / 1000.0
    upper[o_ch : o_ch + nbt] = ch_up
    upper[o_dis : o_dis + nbt] = np.repeat(fa.discharge_max_w[b_sites], t)
    lower[o_e : o_e + nbt] = fa.energy_min_wh[b_sites].ravel()
    upper[o_e : o_e + nbt] = fa.energy_max_wh[b_sites].ravel()
    last = np.arange(nb) * t + (t - 1)
    cost[o_e + last] = -fa.terminal_eur_per_kwh[b_sites] / 1000.0
    cost[o_dp : o_dp + m] = track_eur_per_kwh * fa.dt_h[tr_t] / 1000.0
    cost[o_dm : o_dm + m] = track_eur_per_kwh * fa.dt_h[tr_t] / 1000.0
    upper[o_dp:] = np.inf

    rows, cols, vals = [], [], []
    rlo, rup = [], []

    def add(r: np.ndarray, c: np.ndarray, v: np.ndarray | float) -> None:
        rows.append(r)
        cols.append(c)
        vals.append(np.broadcast_to(np.asarray(v, dtype=float), r.shape))

    # Balance at the meter: pv + dis + imp − ch − exp = load.
    r = np.arange(nt)
    add(r, o_pv + r, 1.0)
    add(r, o_imp + r, 1.0)
    add(r, o_exp + r, -1.0)
    bal_of_b = (np.flatnonzero(bat)[:, None] * t + np.arange(t)[None, :]).ravel()
    jb = np.arange(nbt)
    add(bal_of_b, o_ch + jb, -1.0)
    add(bal_of_b, o_dis + jb, 1.0)
    load = fa.load_w[sites].ravel()
    rlo.append(load)
    rup.append(load)
    nrow = nt

    # Energy: e_t − e_{t−1} − eta_c·dt·ch + dt/eta_d·dis = e_now at t = 0, else 0.
    r = nrow + jb
    eta_c = np.repeat(fa.eta_charge[b_sites], t)
    eta_d = np.repeat(fa.eta_discharge[b_sites], t)
    add(r, o_e + jb, 1.0)
    not_first = jb % t != 0
    add(r[not_first], o_e + jb[not_first] - 1, -1.0)
    add(r, o_ch + jb, -eta_c * bdt)
    add(r, o_dis + jb, bdt / eta_d)
    rhs = np.zeros(nbt)
    rhs[~not_first] = fa.energy_now_wh[b_sites]
    rlo.append(rhs)
    rup.append(rhs)
    nrow += nbt

    j14 = np.flatnonzero(p14_row)
    r = nrow + np.arange(j14.size)
    add(r, o_ch + j14, 1.0)
    add(r, o_pv + bal_of_b[j14], -1.0)
    rlo.append(np.full(j14.size, -np.inf))
    rup.append(fa.para14a_limit_w - load_b[j14])
    nrow += j14.size

    # Tracking: Σ_sites (exp − imp) − dp + dm = Σ_sites target, per tracked period.
    cells = (np.arange(n)[:, None] * t + tr_t[None, :]).ravel()
    r = nrow + np.tile(np.arange(m), n)
    add(r, o_exp + cells, 1.0)
    add(r, o_imp + cells, -1.0)
    add(nrow + np.arange(m), o_dp + np.arange(m), -1.0)
    add(nrow + np.arange(m), o_dm + np.arange(m), 1.0)
    if m:
        target = target_export_w[:, tr_t].sum(0)  # type: ignore[index]
        rlo.append(target)
        rup.append(target)
    nrow += m

    # Columns fixed at 0 (PV at night, export where forbidden, …) are dropped here: cheaper than
    # letting HiGHS's presolve find them, and they are a third of the columns or more.
    keep = (lower != 0.0) | (upper != 0.0)
    new_index = np.cumsum(keep) - 1
    all_rows, all_cols, all_vals = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
    used = keep[all_cols]
    a = sp.csc_matrix((all_vals[used], (all_rows[used], new_index[all_cols[used]])), shape=(nrow, int(keep.sum())))
    lp = highspy.HighsLp()
    lp.num_col_ = int(keep.sum())
    lp.num_row_ = nrow
    lp.col_cost_ = cost[keep]
    lp.col_lower_ = lower[keep]
    lp.col_upper_ = upper[keep]
    lp.row_lower_ = np.concatenate(rlo)
    lp.row_upper_ = np.concatenate(rup)
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = a.indptr
    lp.a_matrix_.index_ = a.indices
    lp.a_matrix_.value_ = a.data
    h = _highs(time_limit_s)
    h.passModel(lp)
    h.run()
    status = h.getModelStatus()
    if status != highspy.HighsModelStatus.kOptimal:
        raise SolveError(f"HiGHS returned {h.modelStatusToString(status)} for {n} sites")
    x = np.zeros(ncol)
    x[keep] = h.getSolution().col_value
    ch = np.zeros((n, t))
    dis = np.zeros((n, t))
    ch[bat] = x[o_ch : o_ch + nbt].reshape(nb, t)
    dis[bat] = x[o_dis : o_dis + nbt].reshape(nb, t)
    return SiteSolution(
        pv_w=x[o_pv : o_pv + nt].reshape(n, t),
        import_w=x[o_imp : o_imp + nt].reshape(n, t),
        export_w=x[o_exp : o_exp + nt].reshape(n, t),
        charge_w=ch,
        discharge_w=dis,
    )


def solve_pv_only_sites(
    fa: FleetArrays, sites: np.ndarray, target_export_w: np.ndarray | None = None, track_eur_per_kwh: float = 0.0
) -> SiteSolution:
    """Sites without a battery in closed form: each period on its own, vectorised.

    Without storage a site's periods are independent and its cost is a convex piecewise-linear
    function of its net export ``x`` in ``[−load, min(pv_max − load, export_max)]`` (import tariff
    below 0, export price above, curtailment penalty, |x − target| where tracked), so the optimum is
    at one of the candidate points: the ends, 0 and the target.
    """
    sites = np.asarray(sites, dtype=np.int64)
    load = fa.load_w[sites]
    pv_max = fa.pv_max_w[sites]
    lo = -load
    hi = np.maximum(np.minimum(pv_max - load, fa.export_max_w[sites]), lo)
    imp_price = fa.import_eur_per_kwh[sites][:, None]
    exp_price = fa.lp_export_eur_per_kwh()[sites]
    target = np.full(load.shape, np.nan) if target_export_w is None else target_export_w
    tracked = np.isfinite(target)

    def cost(x: np.ndarray) -> np.ndarray:
        c = imp_price * np.maximum(-x, 0.0) - exp_price * np.maximum(x, 0.0) - fa.curtailment_eur_per_kwh * x
        return c + np.where(tracked, track_eur_per_kwh * np.abs(x - np.nan_to_num(target)), 0.0)

    candidates = np.stack([lo, hi, np.clip(0.0, lo, hi), np.clip(np.nan_to_num(target), lo, hi)])
    best = np.argmin(np.stack([cost(c) for c in candidates]), axis=0)
    x = np.take_along_axis(candidates, best[None], 0)[0]
    zero = np.zeros_like(x)
    return SiteSolution(x + load, np.maximum(-x, 0.0), np.maximum(x, 0.0), zero, zero.copy())


def solve_fleet_sites(
    fa: FleetArrays,
    target_export_w: np.ndarray | None = None,
    track_eur_per_kwh: float = 0.0,
    chunk: int = 10,
    time_limit_s: float = 60.0,
    workers: int | None = None,
) -> SiteSolution:
    """Every site of ``fa`` on its own, tracking targets ``(N, T)`` where given.

    Sites with a battery are solved as LPs in chunks (tracking pooled per chunk), the chunks in
    parallel threads (HiGHS releases the Python lock while it solves); sites without one in
    closed form (:func:`solve_pv_only_sites`).
    """
    n, t = fa.shape
    with_battery = np.flatnonzero(fa.has_battery)
    chunks = [with_battery[c0 : c0 + chunk] for c0 in range(0, with_battery.size, chunk)]

    def one(idx: np.ndarray) -> SiteSolution:
        tgt = None if target_export_w is None else target_export_w[idx]
        return solve_sites(fa, idx, tgt, track_eur_per_kwh, time_limit_s)

    with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        parts = list(pool.map(one, chunks))
    pv_only = np.flatnonzero(~fa.has_battery)
    tgt = None if target_export_w is None else target_export_w[pv_only]
    rest = solve_pv_only_sites(fa, pv_only, tgt, track_eur_per_kwh)
    fields = ("pv_w", "import_w", "export_w", "charge_w", "discharge_w")
    out = SiteSolution(*(np.zeros((n, t)) for _ in fields))
    for idx, part in [*zip(chunks, parts, strict=True), (pv_only, rest)]:
        for f in fields:
            getattr(out, f)[idx] = getattr(part, f)
    return out
