"""Fleet aggregation for the hierarchical planner: sites → a few virtual plants → per-site targets.

Sites are grouped so that a group's members are near scaled copies of each other: same discrete
rules (battery or not, feed-in cap regime, negative-price rule, direct marketing, the shape of the
import tariff over the day: fixed, dynamic, a grid operator's §14a module 3 windows, PV curtailable
or not), then split
along the continuous ratio that shapes their dispatch most (battery energy per kWp, else load per
kWp). A virtual plant sums its members' bounds (stages and §14a enter through them); prices are
weighted means. Stages and §14a are not part of the key: they enter through the summed bounds, and
keying on them multiplies the plants without improving the gap.

The aggregate's plan is split back component by component in proportion to each member's own
bound (PV to its available output, charge and discharge to its power limits), and the member's
own load is subtracted, giving each site a net-export target for the scheduled periods. Targets
are clipped to what each site can do, and the remainder goes to members with room, then to the
rest of the fleet. The per-site LPs then track these targets (optimizer.site_lp), pooled per
chunk, and are free where no schedule is set.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import scipy.sparse as sp

from sparcs.optimizer.fleet_arrays import FleetArrays
from sparcs.optimizer.problem import DispatchProblem
from sparcs.optimizer.site_lp import SiteSolution

TARIFF_SHAPE_EUR_PER_KWH = 0.02
"""Import tariffs whose deviations from their own mean agree to this step in every period share a
plant (a fixed tariff, one dynamic tariff with different fees, one grid operator's windows)."""


def tariff_shapes(fa: FleetArrays) -> np.ndarray:
    """A label per site for the shape of its import tariff over the periods (see :data:`TARIFF_SHAPE_EUR_PER_KWH`)."""
    imp = fa.import_eur_per_kwh
    steps = np.round((imp - imp.mean(1, keepdims=True)) / TARIFF_SHAPE_EUR_PER_KWH).astype(np.int64)
    # Each row as one opaque byte string: np.unique then sorts N keys, not N×T columns (axis=0).
    rows = np.ascontiguousarray(steps).view(np.dtype((np.void, steps.dtype.itemsize * steps.shape[1])))
    return np.unique(rows.ravel(), return_inverse=True)[1].ravel()


def cluster_sites(problem: DispatchProblem, fa: FleetArrays, k: int) -> np.ndarray:
    """A virtual-plant label ``0..K-1`` per site, with about ``k`` plants in all."""
    groups: dict[tuple, list[int]] = defaultdict(list)
    shapes = tariff_shapes(fa)
    for i, s in enumerate(problem.sites):
        cap_ratio = None if s.feed_in_cap_w is None else round(s.feed_in_cap_w / (s.kwp * 1000.0), 2)
        key = (
            s.battery is not None,
            cap_ratio,
            s.negative_price_rule,
            s.direct_marketing,
            int(shapes[i]),
            s.pv_curtailable,
        )
        groups[key].append(i)
    n = len(problem.sites)
    kwp = np.array([s.kwp for s in problem.sites])
    ratio = np.where(fa.has_battery, fa.capacity_wh / (kwp * 1000.0), fa.load_w.sum(1) / (kwp * 1000.0))
    labels = np.empty(n, dtype=np.int64)
    next_label = 0
    for members in groups.values():
        idx = np.array(members)
        parts = max(1, round(k * idx.size / n))
        for chunk in np.array_split(idx[np.argsort(ratio[idx], kind="stable")], parts):
            if chunk.size:
                labels[chunk] = next_label
                next_label += 1
    return labels


SPLIT_BAND_H = 0.25
"""Width of the bands of PV timing in :func:`split_order`, hours."""


def split_order(fa: FleetArrays, labels: np.ndarray) -> np.ndarray:
    """A permutation of the sites for the split-back's chunks, in which neighbours are alike.

    By plant (``labels``); within a plant in bands of :data:`SPLIT_BAND_H` of the centroid time of
    the site's PV output (its orientation: when it charges), and within a band by battery capacity
    over the day's PV surplus energy (how soon it is full), up in one band and down in the next, so
    that neighbours across a band's edge are alike too. The per-site LPs are solved chunk after
    chunk from the previous chunk's basis, whose site in the same place is the next in this order
    (optimizer.site_lp.solve_fleet_sites): the more alike they are, the fewer simplex iterations.
    """
    mid_h = np.cumsum(fa.dt_h) - fa.dt_h / 2.0
    pv_wh = fa.pv_max_w @ fa.dt_h
    centroid_h = np.divide(fa.pv_max_w @ (fa.dt_h * mid_h), pv_wh, out=np.zeros_like(pv_wh), where=pv_wh > 0)
    band = np.round(centroid_h / SPLIT_BAND_H).astype(np.int64)
    surplus_wh = np.maximum(fa.pv_max_w - fa.load_w, 0.0) @ fa.dt_h
    fill = fa.capacity_wh / (surplus_wh + 1.0)
    return np.lexsort((np.where(band % 2 == 1, -fill, fill), band, labels))


def group_sum(x: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """The rows of ``x`` summed per label ``0..k-1``: shape ``(k, *x.shape[1:])``.

    One sparse product (each label's row of a 0/1 matrix): for a fleet's ``(N, T)`` arrays many
    times faster than ``np.add.at``, which this replaces."""
    n = labels.size
    onehot = sp.csr_matrix((np.ones(n), (labels, np.arange(n))), shape=(k, n))
    flat = np.asarray(x, dtype=float).reshape(n, -1)
    return np.asarray(onehot @ flat).reshape((k, *np.shape(x)[1:]))


def _weighted(values: np.ndarray, weights: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Per-label weighted mean of ``values`` (rows), equal weights where a label's weights sum to 0."""
    w = weights
    num = group_sum(values * w, labels, k)
    den = group_sum(w, labels, k)
    cnt = group_sum(np.ones(values.shape), labels, k)
    plain = group_sum(values, labels, k)
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), plain / np.maximum(cnt, 1.0))


def effective_charge_max_w(fa: FleetArrays) -> np.ndarray:
    """Charge ceiling per site and period including §14a at full PV output, W."""
    return np.minimum(fa.charge_max_w, fa.para14a_charge_max_w(fa.pv_max_w))


def aggregate(fa: FleetArrays, labels: np.ndarray) -> FleetArrays:
    """The virtual plants of ``labels`` as a FleetArrays with one row each."""
    k = int(labels.max()) + 1

    def total(x: np.ndarray) -> np.ndarray:
        return group_sum(x, labels, k)

    cap = fa.capacity_wh
    return FleetArrays(
        dt_h=fa.dt_h,
        pv_max_w=total(fa.pv_max_w),
        pv_ceiling_w=total(fa.pv_ceiling_w),
        load_w=total(fa.load_w),
        export_max_w=total(fa.export_max_w),
        import_max_w=total(fa.import_max_w),
        charge_max_w=total(effective_charge_max_w(fa)),
        discharge_max_w=total(fa.discharge_max_w),
        para14a=np.zeros((k, fa.shape[1]), dtype=bool),
        para14a_limit_w=fa.para14a_limit_w,
        has_battery=total(fa.has_battery.astype(float)) > 0,
        capacity_wh=total(cap),
        eta_charge=_weighted(fa.eta_charge, cap, labels, k),
        eta_discharge=_weighted(fa.eta_discharge, cap, labels, k),
        energy_now_wh=total(fa.energy_now_wh),
        energy_min_wh=total(fa.energy_min_wh),
        energy_max_wh=total(fa.energy_max_wh),
        import_eur_per_kwh=_weighted(fa.import_eur_per_kwh, fa.load_w, labels, k),
        export_eur_per_kwh=_weighted(fa.export_eur_per_kwh, fa.pv_max_w, labels, k),
        terminal_eur_per_kwh=_weighted(fa.terminal_eur_per_kwh, cap, labels, k),
        schedule_w=fa.schedule_w,
        schedule_eur_per_kwh=fa.schedule_eur_per_kwh,
        throughput_eur_per_kwh=fa.throughput_eur_per_kwh,
        curtailment_eur_per_kwh=fa.curtailment_eur_per_kwh,
        pv_curtailable=total((~fa.pv_curtailable).astype(float)) == 0,
    )


def split_targets(fa: FleetArrays, agg: FleetArrays, labels: np.ndarray, sol: SiteSolution) -> np.ndarray:
    """Per-site net-export targets ``(N, T)`` in scheduled periods (NaN elsewhere) from the aggregate's plan."""

    def share(plant: np.ndarray, own: np.ndarray, plant_bound: np.ndarray) -> np.ndarray:
        frac = np.divide(plant, plant_bound, out=np.zeros_like(plant), where=plant_bound > 0)
        return frac[labels] * own

    pv = share(sol.pv_w, fa.pv_max_w, agg.pv_max_w)
    charge = share(sol.charge_w, effective_charge_max_w(fa), agg.charge_max_w)
    t = fa.shape[1]
    discharge = share(
        sol.discharge_w,
        np.repeat(fa.discharge_max_w[:, None], t, 1),
        np.repeat(agg.discharge_max_w[:, None], t, 1),
    )
    target = pv + discharge - charge - fa.load_w
    lo, hi = net_export_range_w(fa)
    # Within a plant one member's export can net another's import; per site it cannot: clip each
    # target to what the site can do and hand the clipped remainder to members with room left.
    plant_total = group_sum(target, labels, agg.shape[0])
    target = redistribute(np.clip(target, lo, hi), plant_total, labels, lo, hi)
    # What a plant's members cannot take, the rest of the fleet may (the schedule is the fleet's).
    fleet = np.zeros(labels.size, dtype=np.int64)
    target = redistribute(target, plant_total.sum(0, keepdims=True), fleet, lo, hi)
    return np.where(np.isfinite(fa.schedule_w)[None, :], target, np.nan)


def net_export_range_w(fa: FleetArrays) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest net export ``(N, T)`` each site can reach in each period, W (SoC aside).

    PV that cannot be curtailed raises the lowest: such a site exports at least its PV less its load
    and its charge ceiling."""
    charge = effective_charge_max_w(fa)
    hi = np.minimum(fa.export_max_w, fa.pv_max_w + fa.discharge_max_w[:, None] - fa.load_w)
    lo = -np.minimum(fa.import_max_w[:, None], fa.load_w + charge)
    lo = np.where(fa.pv_curtailable[:, None], lo, np.maximum(lo, fa.pv_max_w - fa.load_w - charge))
    return lo, np.maximum(hi, lo)


def redistribute(
    target: np.ndarray, group_total: np.ndarray, labels: np.ndarray, lo: np.ndarray, hi: np.ndarray, rounds: int = 4
) -> np.ndarray:
    """Move each group's shortfall ``group_total − Σ target`` onto members in proportion to their room."""
    k = group_total.shape[0]
    out = target.copy()
    for _ in range(rounds):
        short = group_total - group_sum(out, labels, k)
        room = np.where(short[labels] > 0, hi - out, out - lo)
        room_total = group_sum(room, labels, k)
        frac = np.divide(short, room_total, out=np.zeros_like(short), where=room_total > 1e-9)
        out = np.clip(out + frac[labels] * room, lo, hi)
    return out
