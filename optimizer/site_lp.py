"""Many independent per-site dispatch LPs built as numpy arrays and solved in bulk by highspy.

This is the split-back of the hierarchical planner: Pyomo's per-model overhead rules out one
Pyomo model per site. Sites without a battery have
independent periods and are solved in closed form (:func:`solve_pv_only_sites`). Sites with one
are solved in chunks of about 20 sites: each chunk is one block-diagonal LP assembled straight from
:class:`~optimizer.fleet_arrays.FleetArrays`, and tracks the summed net-export targets of its sites
with a penalty (their share of the fleet schedule), which lets the LP reallocate a target between
the chunk's sites at their own costs. Every chunk has the same structure, so one HiGHS instance
per thread solves chunk after chunk by changing costs and bounds only and re-solving from the
previous basis (dual simplex, hot start: a fraction of a cold start or an interior point solve).
About 20 sites a chunk: smaller chunks leave less room to reallocate targets (a larger gap to the
monolithic optimum) for no less CPU; larger ones cost more CPU for little gain.

Per battery site and period the columns are ``pv, imp, exp, ch, dis`` (W) and ``e`` (Wh at the end
of the period); tracking adds ``dp, dm`` per tracked period (W above/below). Rows: the balance at
the meter, the energy balance, §14a (inactive rows have an infinite right-hand side), tracking.
Costs are in EUR: a W held for ``dt_h`` hours is ``dt_h / 1000`` kWh.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import highspy
import numpy as np
import scipy.sparse as sp

from sparcs.optimizer.fleet_arrays import TERMINAL_TIE_BREAK, FleetArrays


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
    # Presolve costs more than it saves on chunks this small; Devex pricing is faster on them than
    # the default dual edge weights.
    h.setOptionValue("presolve", "off")
    h.setOptionValue("simplex_dual_edge_weight_strategy", 1)
    # Costs are EUR per W and period (~1e-4): the default dual feasibility tolerance (1e-7) stops
    # short of the optimum by more than the terminal value's tie-break (fleet_arrays.TERMINAL_TIE_BREAK).
    h.setOptionValue("dual_feasibility_tolerance", 1e-10)
    h.setOptionValue("time_limit", float(time_limit_s))
    return h


@dataclass
class ChunkLp:
    """The LP of a chunk of battery sites: vectors for HiGHS and the site-dependent matrix entries."""

    sites: np.ndarray
    periods: int
    cost: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    row_lower: np.ndarray
    row_upper: np.ndarray
    charge_coef: np.ndarray  # energy rows' coefficients of ch (−eta_c·dt) and dis (dt/eta_d), (n·T,)
    discharge_coef: np.ndarray
    tracked: np.ndarray  # indices of the tracked periods

    @property
    def shape_key(self) -> tuple[int, int, tuple[int, ...]]:
        return (self.sites.size, self.periods, tuple(self.tracked.tolist()))

    @property
    def cells(self) -> int:
        return self.sites.size * self.periods

    def matrix(self) -> sp.csc_matrix:
        """The constraint matrix (column-wise)."""
        n, t, m = self.sites.size, self.periods, self.tracked.size
        nt = n * t
        o_pv, o_imp, o_exp, o_ch, o_dis, o_e = (k * nt for k in range(6))
        o_dp, o_dm = 6 * nt, 6 * nt + m
        j = np.arange(nt)
        first = j % t == 0
        r_bal, r_en, r_14, r_tr = 0, nt, 2 * nt, 3 * nt
        cells = (np.arange(n)[:, None] * t + self.tracked[None, :]).ravel()
        tr_rows = r_tr + np.tile(np.arange(m), n)
        rows = [
            *(r_bal + j for _ in range(5)),
            r_en + j,
            r_en + j[~first],
            r_en + j,
            r_en + j,
            r_14 + j,
            r_14 + j,
            tr_rows,
            tr_rows,
            r_tr + np.arange(m),
            r_tr + np.arange(m),
        ]
        cols = [
            o_pv + j,
            o_imp + j,
            o_exp + j,
            o_ch + j,
            o_dis + j,
            o_e + j,
            o_e + j[~first] - 1,
            o_ch + j,
            o_dis + j,
            o_ch + j,
            o_pv + j,
            o_exp + cells,
            o_imp + cells,
            o_dp + np.arange(m),
            o_dm + np.arange(m),
        ]
        vals = [
            np.ones(nt),
            np.ones(nt),
            -np.ones(nt),
            -np.ones(nt),
            np.ones(nt),
            np.ones(nt),
            -np.ones(int((~first).sum())),
            self.charge_coef,
            self.discharge_coef,
            np.ones(nt),
            -np.ones(nt),
            np.ones(cells.size),
            -np.ones(cells.size),
            -np.ones(m),
            np.ones(m),
        ]
        return sp.csc_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
            shape=(self.row_lower.size, self.cost.size),
        )


def build_chunk(
    fa: FleetArrays,
    sites: np.ndarray,
    target_export_w: np.ndarray | None,
    track_eur_per_kwh: float,
    lp_export_eur_per_kwh: np.ndarray,
) -> ChunkLp:
    """The LP of battery ``sites`` (indices into ``fa``), tracking the summed targets where all are set."""
    sites = np.asarray(sites, dtype=np.int64)
    n, t = sites.size, fa.shape[1]
    nt = n * t
    kwh = np.tile(fa.dt_h, n) / 1000.0
    # Tracking is pooled: the chunk's summed net export follows the sum of its sites' targets, so
    # the LP may reallocate a target between the sites of one chunk at their own costs.
    tracked = np.zeros(t, dtype=bool) if target_export_w is None else np.isfinite(target_export_w).all(0)
    tr_t = np.flatnonzero(tracked)
    m = tr_t.size
    load = fa.load_w[sites].ravel()
    pv_max = fa.pv_max_w[sites].ravel()
    ch_max = fa.charge_max_w[sites].ravel()
    dis_max = np.repeat(fa.discharge_max_w[sites], t)

    cost = np.zeros(6 * nt + 2 * m)
    lower = np.zeros_like(cost)
    upper = np.full_like(cost, np.inf)
    o_pv, o_imp, o_exp, o_ch, o_dis, o_e = (k * nt for k in range(6))
    cost[o_pv : o_pv + nt] = -np.repeat(fa.pv_shortfall_eur_per_kwh()[sites], t) * kwh
    cost[o_imp : o_imp + nt] = fa.import_eur_per_kwh[sites].ravel() * kwh
    cost[o_exp : o_exp + nt] = -lp_export_eur_per_kwh[sites].ravel() * kwh
    cost[o_ch : o_ch + nt] = np.tile(fa.lp_charge_eur_per_kwh(), n) * kwh
    last = np.arange(n) * t + (t - 1)
    cost[o_e + last] = -TERMINAL_TIE_BREAK * fa.terminal_eur_per_kwh[sites] / 1000.0
    cost[6 * nt :] = track_eur_per_kwh * np.tile(fa.dt_h[tr_t], 2) / 1000.0

    # §14a: without PV surplus the charge bound is the limit; with surplus a row ch − pv ≤ limit − load.
    p14 = fa.para14a[sites].ravel()
    p14_bound = p14 & (pv_max <= load)
    p14_row = p14 & (pv_max > load)
    upper[o_pv : o_pv + nt] = pv_max
    # Import never exceeds what the site can consume, export never what it can produce.
    upper[o_imp : o_imp + nt] = np.minimum(np.repeat(fa.import_max_w[sites], t), load + ch_max)
    upper[o_exp : o_exp + nt] = np.minimum(fa.export_max_w[sites].ravel(), pv_max + dis_max)
    upper[o_ch : o_ch + nt] = np.where(p14_bound, np.minimum(ch_max, fa.para14a_limit_w), ch_max)
    upper[o_dis : o_dis + nt] = dis_max
    lower[o_e : o_e + nt] = fa.energy_min_wh[sites].ravel()
    upper[o_e : o_e + nt] = fa.energy_max_wh[sites].ravel()

    first = np.arange(nt) % t == 0
    energy_rhs = np.where(first, np.repeat(fa.energy_now_wh[sites], t), 0.0)
    p14_rhs = np.where(p14_row, fa.para14a_limit_w - load, np.inf)
    target = np.zeros(m) if target_export_w is None else target_export_w[:, tr_t].sum(0)
    dt = np.tile(fa.dt_h, n)
    return ChunkLp(
        sites=sites,
        periods=t,
        cost=cost,
        lower=lower,
        upper=upper,
        row_lower=np.concatenate([load, energy_rhs, np.full(nt, -np.inf), target]),
        row_upper=np.concatenate([load, energy_rhs, p14_rhs, target]),
        charge_coef=-np.repeat(fa.eta_charge[sites], t) * dt,
        discharge_coef=dt / np.repeat(fa.eta_discharge[sites], t),
        tracked=tr_t,
    )


class ChunkSolver:
    """One HiGHS instance solving chunk after chunk, hot-started from the previous basis when it can."""

    def __init__(self, time_limit_s: float) -> None:
        self.time_limit_s = time_limit_s
        self.iterations = 0
        """Simplex iterations of all solves so far (hot starts, retries and cold starts)."""
        self._h: highspy.Highs | None = None
        self._last: ChunkLp | None = None

    def _cold(self, lp: ChunkLp) -> None:
        a = lp.matrix()
        model = highspy.HighsLp()
        model.num_col_ = lp.cost.size
        model.num_row_ = lp.row_lower.size
        model.col_cost_ = lp.cost
        model.col_lower_ = lp.lower
        model.col_upper_ = lp.upper
        model.row_lower_ = lp.row_lower
        model.row_upper_ = lp.row_upper
        model.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        model.a_matrix_.start_ = a.indptr
        model.a_matrix_.index_ = a.indices
        model.a_matrix_.value_ = a.data
        self._h = _highs(self.time_limit_s)
        self._h.passModel(model)
        self._h.run()
        self.iterations += int(self._h.getInfo().simplex_iteration_count)

    def _hot(self, lp: ChunkLp, last: ChunkLp) -> None:
        h = self._h
        assert h is not None
        # Only what differs from the model HiGHS holds (``last``'s): HiGHS sorts every index set it is
        # given, and a chunk's constant entries (charge costs, zero rows) need no update.
        cols = np.flatnonzero(lp.cost != last.cost).astype(np.int32)
        h.changeColsCost(cols.size, cols, lp.cost[cols])
        cols = np.flatnonzero((lp.lower != last.lower) | (lp.upper != last.upper)).astype(np.int32)
        h.changeColsBounds(cols.size, cols, lp.lower[cols], lp.upper[cols])
        rows = np.flatnonzero((lp.row_lower != last.row_lower) | (lp.row_upper != last.row_upper)).astype(np.int32)
        # highspy's stub (1.16) lacks changeRowsBounds, which its extension module has.
        h.changeRowsBounds(rows.size, rows, lp.row_lower[rows], lp.row_upper[rows])  # type: ignore[attr-defined]
        nt = lp.cells
        for coef, last_coef, col0 in (
            (lp.charge_coef, last.charge_coef, 3 * nt),
            (lp.discharge_coef, last.discharge_coef, 4 * nt),
        ):
            for j in np.flatnonzero(coef != last_coef):
                h.changeCoeff(int(nt + j), int(col0 + j), float(coef[j]))
        h.run()
        self.iterations += int(h.getInfo().simplex_iteration_count)

    def solve(self, lp: ChunkLp) -> np.ndarray:
        """The chunk's optimal column values; raises :class:`SolveError` unless HiGHS reports optimal."""
        if self._h is not None and self._last is not None and self._last.shape_key == lp.shape_key:
            self._hot(lp, self._last)
            if self._h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
                self._cold(lp)  # a hot start that went wrong gets one clean try
        else:
            self._cold(lp)
        h = self._h
        assert h is not None
        status = h.getModelStatus()
        if status != highspy.HighsModelStatus.kOptimal:
            self._h = self._last = None
            raise SolveError(f"HiGHS returned {h.modelStatusToString(status)} for sites {lp.sites.tolist()}")
        self._last = lp
        return np.asarray(h.getSolution().col_value)


def solution_of(lp: ChunkLp, x: np.ndarray) -> SiteSolution:
    """Per-site powers ``(n, T)`` from a chunk's column values."""
    n, t = lp.sites.size, lp.periods
    nt = n * t
    part = [x[k * nt : (k + 1) * nt].reshape(n, t) for k in range(5)]
    return SiteSolution(pv_w=part[0], import_w=part[1], export_w=part[2], charge_w=part[3], discharge_w=part[4])


def solve_pv_only_sites(
    fa: FleetArrays, sites: np.ndarray, target_export_w: np.ndarray | None = None, track_eur_per_kwh: float = 0.0
) -> SiteSolution:
    """Sites without a battery in closed form: each period on its own, vectorised.

    Without storage a site's periods are independent and its cost is a convex piecewise-linear
    function of its net export ``x`` in ``[−load, min(pv_max − load, export_max)]`` (import tariff
    below 0, export price above, PV shortfall cost, |x − target| where tracked), so the optimum is
    at one of the candidate points: the ends, 0 and the target. (A site whose PV is not curtailable
    ends at the top: its shortfall cost outweighs any price.)
    """
    sites = np.asarray(sites, dtype=np.int64)
    load = fa.load_w[sites]
    pv_max = fa.pv_max_w[sites]
    lo = -load
    hi = np.maximum(np.minimum(pv_max - load, fa.export_max_w[sites]), lo)
    imp_price = fa.import_eur_per_kwh[sites]
    exp_price = fa.lp_export_eur_per_kwh()[sites]
    shortfall = fa.pv_shortfall_eur_per_kwh()[sites, None]
    target = np.full(load.shape, np.nan) if target_export_w is None else target_export_w
    tracked = np.isfinite(target)

    def cost(x: np.ndarray) -> np.ndarray:
        c = imp_price * np.maximum(-x, 0.0) - exp_price * np.maximum(x, 0.0) - shortfall * x
        return c + np.where(tracked, track_eur_per_kwh * np.abs(x - np.nan_to_num(target)), 0.0)

    candidates = np.stack([lo, hi, np.clip(0.0, lo, hi), np.clip(np.nan_to_num(target), lo, hi)])
    best = np.argmin(np.stack([cost(c) for c in candidates]), axis=0)
    x = np.take_along_axis(candidates, best[None], 0)[0]
    zero = np.zeros_like(x)
    return SiteSolution(x + load, np.maximum(-x, 0.0), np.maximum(x, 0.0), zero, zero.copy())


def battery_chunks(fa: FleetArrays, order: np.ndarray, chunk: int) -> list[np.ndarray]:
    """The battery sites of ``order`` in chunks of about ``chunk`` sites, in the order they are solved.

    Chunk k takes every K-th battery site of the order: each chunk spans the whole fleet (room to
    reallocate targets between unlike sites), while neighbouring chunks are alike (short hot starts)."""
    with_battery = order[fa.has_battery[order]]
    n_chunks = -(-with_battery.size // chunk)
    return [with_battery[k::n_chunks] for k in range(n_chunks)]


def solve_fleet_sites(
    fa: FleetArrays,
    target_export_w: np.ndarray | None = None,
    track_eur_per_kwh: float = 0.0,
    order: np.ndarray | None = None,
    chunk: int = 20,
    time_limit_s: float = 60.0,
    workers: int | None = None,
) -> SiteSolution:
    """Every site of ``fa`` on its own, tracking targets ``(N, T)`` where given.

    Sites with a battery are solved as LPs in chunks of about ``chunk`` sites, striding through
    ``order`` (a permutation of the site indices in which neighbours are alike),
    the chunks split into one run per thread (HiGHS releases the Python lock while it solves);
    sites without a battery in closed form (:func:`solve_pv_only_sites`).
    """
    n, t = fa.shape
    chunks = battery_chunks(fa, np.arange(n) if order is None else np.asarray(order), chunk)
    lp_export = fa.lp_export_eur_per_kwh()
    threads = max(1, min(workers or os.cpu_count() or 1, len(chunks)))
    runs = [list(r) for r in np.array_split(np.arange(len(chunks)), threads)]

    def run(chunk_ids: list[int]) -> list[SiteSolution]:
        solver = ChunkSolver(time_limit_s)
        out = []
        for c in chunk_ids:
            idx = chunks[c]
            tgt = None if target_export_w is None else target_export_w[idx]
            lp = build_chunk(fa, idx, tgt, track_eur_per_kwh, lp_export)
            out.append(solution_of(lp, solver.solve(lp)))
        return out

    with ThreadPoolExecutor(threads) as pool:
        parts = [part for result in pool.map(run, runs) for part in result]
    pv_only = np.flatnonzero(~fa.has_battery)
    tgt = None if target_export_w is None else target_export_w[pv_only]
    rest = solve_pv_only_sites(fa, pv_only, tgt, track_eur_per_kwh)
    fields = ("pv_w", "import_w", "export_w", "charge_w", "discharge_w")
    out = SiteSolution(*(np.zeros((n, t)) for _ in fields))
    for idx, part in [*zip(chunks, parts, strict=True), (pv_only, rest)]:
        for f in fields:
            getattr(out, f)[idx] = getattr(part, f)
    return out
