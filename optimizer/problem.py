"""The optimizer's interface: a dispatch problem in, a dispatch plan out (docs/definitions.md "Signs",
"Units", "Time").

The controller (and the twin) build a :class:`DispatchProblem` from the fleet state and forecasts,
call :func:`optimizer.dispatch.plan`, and write the :class:`DispatchPlan`'s per-site setpoints.

Units and signs, everywhere in this package:

- powers in W, energies in Wh (``*_kwh`` where the name says so), times in Unix seconds (UTC),
  period lengths in s, prices in EUR/MWh (day-ahead) or EUR/kWh (tariffs), SoC as a fraction 0..1;
- at the meter ``grid_w > 0`` is import and ``< 0`` export; ``battery_w > 0`` is discharge and
  ``< 0`` charge; ``pv_w ≥ 0``; the fleet's ``export_w`` is the sum of ``-grid_w`` over the sites
  (net export at the meters, negative when the fleet imports);
- a per-period value of NaN means "nothing in force" (no stage ceiling, no schedule);
- the grid rules in watts (stage ceilings, the installer ceiling, feed-in and export caps) come from
  :mod:`sparcs.config.grid_rules`.

How the controller uses it::

    start_s, period_s = period_grid(now_s, cfg.dispatch.horizon_h)
    sites = [site_problem(site_cfg, pv_w, load_w, soc_now=..., stage_ceiling_w=..., para14a=...), ...]
    problem = DispatchProblem(start_s, period_s, price_eur_per_mwh, sites, export_schedule_w,
                              cfg.dispatch, cfg.grid.para14a_limit_w)
    plan = worker.plan(problem)  # optimizer.solver.PlanningWorker: never raises, always capped

``plan.path`` / ``plan.reason`` say how the plan was made (raise an alarm unless "optimal").

Arrays of a plan are shaped ``(sites, periods)`` in the order of ``DispatchProblem.sites``; SoC is
``(sites, periods + 1)`` with column 0 the SoC now and column ``t + 1`` the SoC at the end of
period ``t`` (sites without a battery have NaN).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from sparcs.config.grid_rules import QUARTER_S, feed_in_cap_w, installer_ceiling_w
from sparcs.config.schema import DispatchConfig, SiteConfig

PlanPath = Literal["optimal", "fallback_shifted", "fallback_rules", "baseline"]
"""Which path produced a plan; ``baseline`` marks the comparison plans of optimizer.baselines."""


def period_grid(now_s: float, horizon_h: int = 24, until_s: float | None = None) -> tuple[float, np.ndarray]:
    """Plan periods from ``now_s``: the remainder of the current quarter-hour, then quarter-hours.

    Returns ``(start_s, period_s)``; the periods end at the quarter-hour ``horizon_h`` hours after
    the current one started, so a plan made at 12:07 covers 12:07..12:15, 12:15..12:30, …, and
    ends at 12:00 the next day + 15 min (``4 * horizon_h`` full quarter-hours after the first).
    ``until_s`` (Unix s, a quarter-hour boundary) ends the plan earlier: periods that would start
    at or after it are dropped; the first period always stays.
    """
    start_q = math.floor(now_s / QUARTER_S) * QUARTER_S
    first = start_q + QUARTER_S - now_s
    periods = 1 + 4 * horizon_h
    if until_s is not None:
        periods = min(periods, max(1, math.ceil((until_s - start_q) / QUARTER_S)))
    return float(now_s), np.concatenate([[first], np.full(periods - 1, float(QUARTER_S))])


@dataclass(frozen=True)
class BatteryProblem:
    """A site's battery as the planner sees it. Energies Wh, powers W (AC side), SoC fractions.

    ``soc_end``: where the battery must be at the end of the plan (None = free, valued by the
    objective's terminal value)."""

    capacity_wh: float
    max_charge_w: float
    max_discharge_w: float
    eta_charge: float
    eta_discharge: float
    soc_min: float
    soc_max: float
    soc_now: float
    soc_end: float | None = None

    def __post_init__(self) -> None:
        if self.capacity_wh <= 0 or self.max_charge_w < 0 or self.max_discharge_w < 0:
            raise ValueError("battery capacity_wh must be > 0 and power limits ≥ 0")
        if not 0 < self.eta_charge <= 1 or not 0 < self.eta_discharge <= 1:
            raise ValueError("battery efficiencies must lie in (0, 1]")
        if not 0 <= self.soc_min < self.soc_max <= 1:
            raise ValueError(f"battery soc_min ({self.soc_min}) must be below soc_max ({self.soc_max}), both in 0..1")
        if not 0 <= self.soc_now <= 1:
            raise ValueError(f"battery soc_now ({self.soc_now}) must lie in 0..1")
        if self.soc_end is not None and not self.soc_min <= self.soc_end <= self.soc_max:
            raise ValueError(f"battery soc_end ({self.soc_end}) must lie within soc_min..soc_max")


@dataclass(frozen=True)
class SitePrices:
    """A site's tariff for one plan: gross import price and fixed remuneration (EUR/kWh, one value or one
    per period), and whether export earns the day-ahead price instead (direct marketing)."""

    import_eur_per_kwh: float | np.ndarray
    export_eur_per_kwh: float | np.ndarray
    direct_marketing: bool = False
    terminal_eur_per_kwh: float | None = None


@dataclass
class SiteProblem:
    """One site for one plan: forecasts, limits and rules, per period where they vary.

    ``pv_available_w``: forecast PV output without any limit (W ≥ 0); ``load_w``: forecast household
    load (W ≥ 0); ``pv_rating_w``: the inverter's AC rating (reference of the stages);
    ``pv_ceiling_w``: the installer's ceiling, never lifted; ``feed_in_cap_w``: the feed-in cap at
    the meter (None = no cap); ``stage_ceiling_w``: PV output ceiling of an active curtailment
    stage per period (``grid_rules.stage_ceiling_w``; NaN = none); ``para14a``: §14a dimming of
    grid charging active per period. Both default to nothing in force in any period.
    ``import_eur_per_kwh``: the gross import tariff, one for all periods or one per period
    (config/tariffs.py: dynamic, §14a module 3); ``export_eur_per_kwh``: the remuneration likewise,
    replaced by the day-ahead price where ``direct_marketing``. Both are stored per period.
    ``terminal_eur_per_kwh``: the import price a kWh left in the battery at the end is valued at
    (× η_discharge); None = the mean import price over the plan. ``pv_curtailable``: False where
    the site's PV cannot be limited (no controlled PV limit, e.g. a vendor hybrid whose map has a
    battery command only): PV is planned at its forecast and never gets a limit, and export the
    battery and load cannot keep under the feed-in cap goes over it (docs/definitions.md "Sites whose PV
    cannot be curtailed").
    """

    site_id: str
    pv_available_w: np.ndarray
    load_w: np.ndarray
    pv_rating_w: float
    pv_ceiling_w: float
    kwp: float
    battery: BatteryProblem | None = None
    import_eur_per_kwh: float | np.ndarray = 0.32
    export_eur_per_kwh: float | np.ndarray = 0.08
    direct_marketing: bool = False
    feed_in_cap_w: float | None = None
    connection_limit_w: float = 30_000.0
    negative_price_rule: bool = False
    stage_ceiling_w: np.ndarray | None = None
    para14a: np.ndarray | None = None
    terminal_eur_per_kwh: float | None = None
    pv_curtailable: bool = True

    def __post_init__(self) -> None:
        self.pv_available_w = np.asarray(self.pv_available_w, dtype=float)
        self.load_w = np.asarray(self.load_w, dtype=float)
        n = self.pv_available_w.shape[0]
        if self.pv_available_w.shape != (n,) or self.load_w.shape != (n,):
            raise ValueError(f"site {self.site_id}: pv_available_w and load_w must be 1-D arrays of equal length")
        # Method reductions (``a.all()``) and one bound check per array, not numpy's wrappers and
        # broadcasting: a plan of a large fleet makes one of these per site.
        for name in ("import_eur_per_kwh", "export_eur_per_kwh"):
            given = getattr(self, name)
            price = np.full(n, float(given)) if np.ndim(given) == 0 else np.array(given, dtype=float)
            if price.shape != (n,):
                raise ValueError(f"site {self.site_id}: {name} needs one value or one per period ({n})")
            if not np.isfinite(price).all():
                raise ValueError(f"site {self.site_id}: {name} must be known (finite) in every period")
            setattr(self, name, price)
        if self.stage_ceiling_w is None:
            self.stage_ceiling_w = np.full(n, np.nan)
        if self.para14a is None:
            self.para14a = np.zeros(n, dtype=bool)
        self.stage_ceiling_w = np.asarray(self.stage_ceiling_w, dtype=float)
        self.para14a = np.asarray(self.para14a, dtype=bool)
        if self.stage_ceiling_w.shape != (n,) or self.para14a.shape != (n,):
            raise ValueError(f"site {self.site_id}: stage_ceiling_w and para14a need one value per period ({n})")
        if (self.stage_ceiling_w < 0).any():
            raise ValueError(f"site {self.site_id}: stage_ceiling_w must be ≥ 0 W, or NaN where no stage is active")
        for name in ("pv_available_w", "load_w"):
            values = getattr(self, name)
            if n and not 0.0 <= values.min() <= values.max() < np.inf:  # NaN fails every comparison
                raise ValueError(f"site {self.site_id}: {name} must be finite and ≥ 0 in every period")
        if n and self.load_w.max() > self.connection_limit_w:
            over = int(np.argmax(self.load_w > self.connection_limit_w))
            raise ValueError(
                f"site {self.site_id}: load_w exceeds connection_limit_w ({self.connection_limit_w:.0f} W) "
                f"in period {over}; clip the load forecast to the fuse limit"
            )
        if self.pv_rating_w <= 0 or self.pv_ceiling_w < 0 or self.connection_limit_w <= 0:
            raise ValueError(f"site {self.site_id}: pv_rating_w and connection_limit_w must be > 0")

    @property
    def periods(self) -> int:
        return int(self.pv_available_w.shape[0])


def site_problem(
    site: SiteConfig,
    pv_available_w: np.ndarray,
    load_w: np.ndarray,
    *,
    soc_now: float | None = None,
    stage_ceiling_w: np.ndarray | None = None,
    para14a: np.ndarray | None = None,
    prices: SitePrices | None = None,
    pv_curtailable: bool = True,
) -> SiteProblem:
    """A :class:`SiteProblem` from a site's configuration and its forecasts (SoC now: measured, else initial).

    ``prices``: the site's tariff per period (config/tariffs.py); without them the site's tariff must
    be its inline fixed one. ``pv_curtailable``: False where the site's PV limit is not controlled."""
    if prices is None:
        if isinstance(site.tariff, str):
            raise ValueError(f"site {site.id}: tariff '{site.tariff}' needs its prices per period")
        t = site.tariff
        prices = SitePrices(t.import_eur_per_kwh, t.export_eur_per_kwh, t.direct_marketing)
    battery = None
    if site.battery is not None:
        b = site.battery
        battery = BatteryProblem(
            capacity_wh=b.capacity_kwh * 1000.0,
            max_charge_w=b.max_charge_w,
            max_discharge_w=b.max_discharge_w,
            eta_charge=b.eta_charge,
            eta_discharge=b.eta_discharge,
            soc_min=b.soc_min,
            soc_max=b.soc_max,
            soc_now=b.soc_initial if soc_now is None else float(np.clip(soc_now, 0.0, 1.0)),
        )
    return SiteProblem(
        site_id=site.id,
        pv_available_w=pv_available_w,
        load_w=np.minimum(load_w, site.grid.connection_limit_w),
        pv_rating_w=site.pv.rating_w,
        pv_ceiling_w=installer_ceiling_w(site),
        kwp=site.pv.kwp,
        battery=battery,
        import_eur_per_kwh=prices.import_eur_per_kwh,
        export_eur_per_kwh=prices.export_eur_per_kwh,
        direct_marketing=prices.direct_marketing,
        terminal_eur_per_kwh=prices.terminal_eur_per_kwh,
        feed_in_cap_w=feed_in_cap_w(site),
        connection_limit_w=site.grid.connection_limit_w,
        negative_price_rule=site.grid.negative_price_rule,
        stage_ceiling_w=stage_ceiling_w,
        para14a=para14a,
        pv_curtailable=pv_curtailable,
    )


@dataclass
class DispatchProblem:
    """The whole fleet for one plan.

    ``period_s``: length of each period in s (the first is the rest of the current quarter-hour);
    ``price_eur_per_mwh``: day-ahead price per period (NaN = unknown: then no site may depend on it,
    and the negative-price rule does not apply); ``export_schedule_w``: the operator's fleet
    export target per period (W, net export at the meters; NaN = no schedule in that period), or
    None; ``para14a_limit_w``: the §14a ceiling on grid charging while dimming is active.
    """

    start_s: float
    period_s: np.ndarray
    price_eur_per_mwh: np.ndarray
    sites: list[SiteProblem]
    export_schedule_w: np.ndarray | None = None
    weights: DispatchConfig = field(default_factory=DispatchConfig)
    para14a_limit_w: float = 4200.0

    def __post_init__(self) -> None:
        self.period_s = np.asarray(self.period_s, dtype=float)
        self.price_eur_per_mwh = np.asarray(self.price_eur_per_mwh, dtype=float)
        n = self.period_s.shape[0]
        if n == 0 or np.any(self.period_s <= 0):
            raise ValueError("period_s needs at least one period, each longer than 0 s")
        if self.price_eur_per_mwh.shape != (n,):
            raise ValueError(f"price_eur_per_mwh needs one price per period ({n}); NaN where unknown")
        if self.export_schedule_w is not None:
            self.export_schedule_w = np.asarray(self.export_schedule_w, dtype=float)
            if self.export_schedule_w.shape != (n,):
                raise ValueError(f"export_schedule_w needs one value per period ({n}); NaN where none")
        if not self.sites:
            raise ValueError("a dispatch problem needs at least one site")
        for s in self.sites:
            if s.periods != n:
                raise ValueError(f"site {s.site_id}: forecasts have {s.periods} periods, the plan has {n}")
            if s.direct_marketing and not np.all(np.isfinite(self.price_eur_per_mwh)):
                raise ValueError(f"site {s.site_id} is directly marketed: it needs a day-ahead price in every period")

    @property
    def periods(self) -> int:
        return int(self.period_s.shape[0])

    @property
    def period_start_s(self) -> np.ndarray:
        """Start of each period, Unix s."""
        return self.start_s + np.concatenate([[0.0], np.cumsum(self.period_s)[:-1]])


@dataclass
class ObjectiveParts:
    """The fleet objective in EUR, by part; ``total`` is what the planner minimises.

    ``energy``: import cost minus export revenue; ``schedule``: penalty on the fleet export's
    deviation from the schedule; ``throughput``: battery wear (per kWh charged); ``curtailment``:
    penalty per kWh of available PV not produced; ``terminal_value``: value of the energy left in the
    batteries at the end (subtracted).
    """

    energy: float
    schedule: float
    throughput: float
    curtailment: float
    terminal_value: float

    @property
    def total(self) -> float:
        return self.energy + self.schedule + self.throughput + self.curtailment - self.terminal_value


@dataclass
class DispatchPlan:
    """Per-site setpoints and their expected consequences for every period (see module docstring).

    ``pv_w``: planned PV output; ``pv_limit_w``: the limit to write to the inverter (its installer
    ceiling when the plan does not curtail); ``battery_w``: battery setpoint (+ discharge, − charge);
    ``grid_w``: expected meter power (+ import, − export); ``soc``: fractions, ``(sites, periods+1)``;
    ``export_w``: fleet net export per period; ``path``: which path produced it and ``reason`` why.
    """

    site_ids: list[str]
    start_s: float
    period_s: np.ndarray
    pv_w: np.ndarray
    pv_limit_w: np.ndarray
    battery_w: np.ndarray
    grid_w: np.ndarray
    soc: np.ndarray
    export_w: np.ndarray
    objective_eur: float
    parts: ObjectiveParts
    soc_end_kwh: float
    path: PlanPath
    reason: str = ""
    build_s: float = 0.0
    solve_s: float = 0.0
    split_s: float = 0.0
