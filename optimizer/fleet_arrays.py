"""A dispatch problem as stacked numpy arrays ``(sites, periods)``: every hard bound in one place.

The LP builders, the caps layer, the baselines and the scoring all read their bounds from
:class:`FleetArrays`, so the model, the clamps and the score cannot disagree about a limit. The
grid rules behind the bounds (stages, installer ceiling, export ceiling, the negative-price rule)
come from :mod:`sparcs.config.grid_rules`; the optimizer adds only its planning margin,
:data:`CAP_PLAN_SHARE`. Units: W, Wh, EUR/kWh, hours for ``dt_h``; signs as in :mod:`optimizer.problem`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sparcs.config.grid_rules import export_ceiling_series
from sparcs.config.tariffs import export_price_eur_per_kwh
from sparcs.optimizer.problem import DispatchProblem, SiteProblem

CAP_PLAN_SHARE = 0.97
"""Plans export at most this share of a feed-in cap (docs/definitions.md "Caps and violations").

A plan meets the forecast quarter-hour mean, but its setpoints run open loop until the next poll
and the load of a minute can dip below that mean; the margin keeps such minutes under the cap, and
keeps the plan below the export guard's target (98 %), so the guard does not fight the plan."""


CHARGE_EARLY_EUR_PER_KWH_H = 1e-6
"""The LPs add this much per kWh charged for each hour from the plan's start to the charging period
(EUR/kWh/h; 0.0024 ct/kWh a day ahead, not part of the score). Exporting PV now and storing PV later
often cost the same in the plan, and the simplex may return either; but a forecast is surest for
the coming hours, and PV stored now is stored even if the later PV falls short, so the shade breaks
the tie toward storing early. In these LPs' costs (EUR per W and quarter-hour) a lead of one hour is
2.5e-10, above the dual feasibility tolerance the LPs are solved to (1e-10), and a day's shade is
smaller than any price step a tariff quotes (0.01 ct/kWh), so it never outweighs a price difference."""

TERMINAL_TIE_BREAK = 1.0 - 1e-5
"""The LPs value stored energy at the end at this share of ``terminal_eur_per_kwh`` (the score at all
of it). At a flat tariff a kWh kept to the end is worth exactly the import it saves (price × η_d
per stored kWh, 1/η_d stored kWh per kWh discharged): the LP is indifferent between importing now
and discharging, and which tied vertex the simplex returns would depend on its tolerances. The
shade breaks the tie toward using the battery, as self-consumption does."""

OVER_CAP_EUR_PER_KWH = 100.0
"""LP cost of a kWh exported over the feed-in cap by a site whose PV is not curtailable
(docs/definitions.md "Sites whose PV cannot be curtailed"): 25 × the day-ahead market's price ceiling (4 EUR/kWh) and
100 × the default schedule penalty, so the LPs export over the cap only where neither the battery
nor the load can take the fixed PV output."""


@dataclass
class FleetArrays:
    """Bounds, forecasts and prices of a fleet, shaped ``(N, T)`` unless noted."""

    dt_h: np.ndarray  # (T,) period lengths in hours
    pv_max_w: np.ndarray  # min(forecast, installer ceiling, stage ceiling)
    pv_ceiling_w: np.ndarray  # min(installer ceiling, stage ceiling): the inverter limit when not curtailing
    load_w: np.ndarray
    export_max_w: np.ndarray  # grid_rules.export_ceiling_series with CAP_PLAN_SHARE × the feed-in cap
    import_max_w: np.ndarray  # (N,) connection limit
    charge_max_w: np.ndarray  # (N, T); §14a enters through para14a_charge_max_w (LP: a row or a bound)
    discharge_max_w: np.ndarray  # (N,)
    para14a: np.ndarray  # (N, T) bool, only where the site has a battery
    para14a_limit_w: float
    has_battery: np.ndarray  # (N,) bool
    capacity_wh: np.ndarray  # (N,) 0 without a battery
    eta_charge: np.ndarray  # (N,)
    eta_discharge: np.ndarray  # (N,)
    energy_now_wh: np.ndarray  # (N,)
    energy_min_wh: np.ndarray  # (N, T) at the end of each period, relaxed to what is reachable from now
    energy_max_wh: np.ndarray
    import_eur_per_kwh: np.ndarray  # (N, T) gross tariff per period
    export_eur_per_kwh: np.ndarray  # (N, T): remuneration, or the day-ahead price when directly marketed
    terminal_eur_per_kwh: np.ndarray  # (N,) value of a stored kWh left at the end: mean import price × η_d
    schedule_w: np.ndarray  # (T,) NaN where no schedule
    schedule_eur_per_kwh: float
    throughput_eur_per_kwh: float
    curtailment_eur_per_kwh: float
    pv_curtailable: np.ndarray  # (N,) bool; False: PV runs at its forecast (pv_max_w), no limit is written

    def pv_shortfall_eur_per_kwh(self) -> np.ndarray:
        """``(N,)``: what the LPs charge per kWh of PV output below ``pv_max_w``.

        Where PV is curtailable the shortfall is curtailment (its penalty). Where it is not, PV runs
        at ``pv_max_w`` whatever the plan, so the LPs' PV column stands for the part of it that stays
        within the cap, and its shortfall is export over the feed-in cap, at
        :data:`OVER_CAP_EUR_PER_KWH`. The LP thus keeps its shape; with every site curtailable it is
        the same LP as without the flag."""
        return np.where(self.pv_curtailable, self.curtailment_eur_per_kwh, OVER_CAP_EUR_PER_KWH)

    def lp_charge_eur_per_kwh(self) -> np.ndarray:
        """``(T,)``: what the LPs charge per kWh charged in each period: the throughput cost and the
        early-storing shade (:data:`CHARGE_EARLY_EUR_PER_KWH_H` × hours from the start to the
        period's start)."""
        start_h = np.concatenate([[0.0], np.cumsum(self.dt_h)[:-1]])
        return self.throughput_eur_per_kwh + CHARGE_EARLY_EUR_PER_KWH_H * start_h

    def lp_export_eur_per_kwh(self) -> np.ndarray:
        """Export price for the LPs: at most the import price.

        One meter cannot import and export at once; above the import price (a directly marketed
        site in a price spike) an LP would do both. Capped, it is indifferent there instead.
        """
        return np.minimum(self.export_eur_per_kwh, self.import_eur_per_kwh)

    @property
    def shape(self) -> tuple[int, int]:
        n, t = self.load_w.shape
        return n, t

    def para14a_charge_max_w(self, pv_w: np.ndarray) -> np.ndarray:
        """Charge ceiling under §14a given planned PV output: the limit plus PV surplus over the load.

        Grid charging is charge not covered by PV surplus (PV serves the household first); while
        §14a is active it may not exceed the limit. Returns ``(N, T)``; inf where not active.
        """
        surplus = np.maximum(pv_w - self.load_w, 0.0)
        return np.where(self.para14a, self.para14a_limit_w + surplus, np.inf)

    def soc_from_battery(self, battery_w: np.ndarray) -> np.ndarray:
        """Stored energy in Wh, ``(N, T+1)``, from battery setpoints (+ discharge, − charge)."""
        charge = np.maximum(-battery_w, 0.0)
        discharge = np.maximum(battery_w, 0.0)
        eta_c = self.eta_charge[:, None]
        eta_d = np.where(self.has_battery, self.eta_discharge, 1.0)[:, None]
        delta = (charge * eta_c - discharge / eta_d) * self.dt_h[None, :]
        return self.energy_now_wh[:, None] + np.concatenate([np.zeros((delta.shape[0], 1)), np.cumsum(delta, 1)], 1)


def _per_period(values: np.ndarray | None) -> np.ndarray:
    """A per-period field of a :class:`SiteProblem`, which its ``__post_init__`` has filled."""
    if values is None:
        raise TypeError("a SiteProblem without per-period stage_ceiling_w or para14a (see its __post_init__)")
    return values


def feed_in_caps_w(sites: Sequence[SiteProblem]) -> np.ndarray:
    """Each site's feed-in cap at the meter, ``(N,)`` in W; ``inf`` where it has none."""
    return np.array([np.inf if s.feed_in_cap_w is None else s.feed_in_cap_w for s in sites])


def terminal_price_eur_per_kwh(sites: Sequence[SiteProblem], import_eur_per_kwh: np.ndarray) -> np.ndarray:
    """``(N,)``: the import price a stored kWh left at the end is worth: the site's own
    ``terminal_eur_per_kwh``, else its mean import price over the plan (docs/definitions.md "Economics")."""
    mean = import_eur_per_kwh.mean(1)
    return np.array(
        [m if s.terminal_eur_per_kwh is None else s.terminal_eur_per_kwh for s, m in zip(sites, mean, strict=True)]
    )


def fleet_arrays(problem: DispatchProblem) -> FleetArrays:
    """Stack a :class:`DispatchProblem` into :class:`FleetArrays`."""
    sites = problem.sites
    n, t = len(sites), problem.periods
    dt_h = problem.period_s / 3600.0
    avail = np.stack([s.pv_available_w for s in sites])
    load = np.stack([s.load_w for s in sites])
    curtailable = np.array([s.pv_curtailable for s in sites])
    # A stage cannot hold PV that cannot be limited: such PV is planned at its forecast (within the
    # installer's ceiling, which the inverter keeps by itself).
    stage = np.stack([_per_period(s.stage_ceiling_w) for s in sites])
    stage = np.where(curtailable[:, None], stage, np.nan)
    ceiling = np.array([s.pv_ceiling_w for s in sites])[:, None]
    pv_ceiling = np.fmin(np.broadcast_to(ceiling, (n, t)), stage)
    pv_ceiling = np.maximum(pv_ceiling, 0.0)
    conn = np.array([s.connection_limit_w for s in sites])
    rule = np.array([s.negative_price_rule for s in sites])
    price = problem.price_eur_per_mwh
    export_max = export_ceiling_series(CAP_PLAN_SHARE * feed_in_caps_w(sites), conn, rule, price)

    has_bat = np.array([s.battery is not None for s in sites])
    bats = [s.battery for s in sites]
    capacity = np.array([b.capacity_wh if b else 0.0 for b in bats])
    ch_max = np.array([b.max_charge_w if b else 0.0 for b in bats])
    dis_max = np.array([b.max_discharge_w if b else 0.0 for b in bats])
    eta_c = np.array([b.eta_charge if b else 1.0 for b in bats])
    eta_d = np.array([b.eta_discharge if b else 1.0 for b in bats])
    e_now = np.array([b.soc_now * b.capacity_wh if b else 0.0 for b in bats])
    soc_min = np.array([b.soc_min if b else 0.0 for b in bats])
    soc_max = np.array([b.soc_max if b else 0.0 for b in bats])
    p14 = np.stack([_per_period(s.para14a) for s in sites]) & has_bat[:, None]
    pv_max = np.minimum(avail, pv_ceiling)

    # A measured SoC can lie outside soc_min..soc_max; the bounds then open up to what the battery
    # can reach from now, so the LP stays feasible and moves back into range as fast as allowed.
    charge_reach = np.minimum(ch_max[:, None], np.maximum(conn[:, None] - load + pv_max, 0.0))
    charge_reach = np.where(p14, np.minimum(charge_reach, problem.para14a_limit_w), charge_reach)
    e_up = e_now[:, None] + np.cumsum(charge_reach * eta_c[:, None] * dt_h, 1)
    # Discharge needs a sink: the load, or export where allowed (curtailable PV makes way; fixed PV
    # takes its share of the cap first).
    fixed_pv = np.where(curtailable[:, None], 0.0, pv_max)
    discharge_reach = np.minimum(dis_max[:, None], np.maximum(load + export_max - fixed_pv, 0.0))
    e_down = e_now[:, None] - np.cumsum(discharge_reach / eta_d[:, None] * dt_h, 1)
    e_min = np.minimum((soc_min * capacity)[:, None], e_up)
    e_max = np.maximum((soc_max * capacity)[:, None], e_down)
    # A required end state pins the last period's energy, as far as it can be reached from now.
    for i, b in enumerate(bats):
        if b is not None and b.soc_end is not None:
            e_min[i, -1] = e_max[i, -1] = float(np.clip(b.soc_end * b.capacity_wh, e_down[i, -1], e_up[i, -1]))

    imp_price = np.stack([np.asarray(s.import_eur_per_kwh, dtype=float) for s in sites])
    dm = np.array([s.direct_marketing for s in sites])
    fixed = np.stack([np.asarray(s.export_eur_per_kwh, dtype=float) for s in sites])
    exp_price = export_price_eur_per_kwh(dm, fixed, rule, price)
    sched = problem.export_schedule_w if problem.export_schedule_w is not None else np.full(t, np.nan)
    w = problem.weights
    return FleetArrays(
        dt_h=dt_h,
        pv_max_w=pv_max,
        pv_ceiling_w=pv_ceiling,
        load_w=load,
        export_max_w=export_max,
        import_max_w=conn,
        charge_max_w=np.broadcast_to(ch_max[:, None], (n, t)).copy(),
        discharge_max_w=dis_max,
        para14a=p14,
        para14a_limit_w=problem.para14a_limit_w,
        has_battery=has_bat,
        capacity_wh=capacity,
        eta_charge=eta_c,
        eta_discharge=eta_d,
        energy_now_wh=e_now,
        energy_min_wh=e_min,
        energy_max_wh=e_max,
        import_eur_per_kwh=imp_price,
        export_eur_per_kwh=exp_price,
        terminal_eur_per_kwh=terminal_price_eur_per_kwh(sites, imp_price) * eta_d * has_bat,
        schedule_w=sched,
        schedule_eur_per_kwh=w.schedule_penalty_eur_per_kwh,
        throughput_eur_per_kwh=w.battery_throughput_eur_per_kwh,
        curtailment_eur_per_kwh=w.curtailment_penalty_eur_per_kwh,
        pv_curtailable=curtailable,
    )
