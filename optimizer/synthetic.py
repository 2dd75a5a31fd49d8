"""Seeded, realistic synthetic fleets for the dispatch benchmark and tests.

Sites around Leipzig with varied PV sizes and geometries (from :mod:`optimizer.curves`), about
two thirds with a battery, a mix of feed-in cap regimes, tariffs (fixed, or dynamic: day-ahead +
fees + VAT, some under one of two grid operators' §14a module 3 windows) and direct marketing; a summer
day-ahead price curve with a negative midday dip; a fleet export schedule at midday and in the
evening; a curtailment stage and §14a dimming on some sites for some hours.
"""

from __future__ import annotations

import datetime as dt

import numpy as np

from sparcs.config.grid_rules import QUARTER_S, stage_ceiling_w
from sparcs.config.schema import DispatchConfig, ExportTariff, GridFeeWindow, GridOperatorFees, ImportTariff
from sparcs.config.tariffs import SiteTariff, import_price_eur_per_kwh
from sparcs.optimizer.curves import BERLIN, PvGeometry, clearsky_w_per_kwp, h0_w_per_annual_kwh
from sparcs.optimizer.problem import BatteryProblem, DispatchProblem, SiteProblem

DAY = dt.date(2026, 6, 21)
TILTS = (15.0, 30.0, 45.0)
AZIMUTHS = (90.0, 135.0, 180.0, 225.0, 270.0)


def day_ahead_curve(t_s: np.ndarray) -> np.ndarray:
    """A summer day-ahead price in EUR/MWh: morning and evening peaks, negative at midday."""
    hour = (t_s - t_s[0]) / 3600.0
    morning = 40.0 * np.exp(-(((hour - 7.5) / 1.5) ** 2))
    evening = 90.0 * np.exp(-(((hour - 19.5) / 2.0) ** 2))
    midday = -130.0 * np.exp(-(((hour - 13.0) / 2.2) ** 2))
    return 85.0 + morning + evening + midday


GRID_OPERATORS = (
    GridOperatorFees(
        standard_eur_per_kwh=0.09,
        windows=[
            GridFeeWindow(start="00:00", end="06:00", eur_per_kwh=0.03, name="NT"),
            GridFeeWindow(start="17:00", end="20:00", eur_per_kwh=0.16, name="HT"),
        ],
    ),
    GridOperatorFees(
        standard_eur_per_kwh=0.08,
        windows=[
            GridFeeWindow(start="22:00", end="05:00", eur_per_kwh=0.02, name="NT"),
            GridFeeWindow(start="16:00", end="19:00", eur_per_kwh=0.14, name="HT"),
        ],
    ),
)
"""Two grid operators' module 3 windows for the synthetic fleet's dynamic tariffs (net of VAT)."""


def synthetic_import_price(
    rng: np.random.Generator,
    t_s: np.ndarray,
    price_eur_per_mwh: np.ndarray,
    memo: dict[tuple[int, float], np.ndarray] | None = None,
) -> np.ndarray:
    """One site's import tariff per period: fixed (half the sites), else dynamic, a third of those
    without module 3 windows and a third under each of :data:`GRID_OPERATORS`.

    ``memo`` keeps the series of each (operator, fees) drawn so far for ``t_s`` (fees are rounded to
    0.001 EUR/kWh, so a fleet draws a few hundred distinct dynamic tariffs); the series returned are
    the same with or without it, and so are the draws from ``rng``."""
    if rng.random() < 0.5:
        return np.full(t_s.shape, round(float(rng.uniform(0.28, 0.40)), 3))
    op = int(rng.integers(0, 3))
    fees_eur_per_kwh = round(float(rng.uniform(0.10, 0.16)), 3)
    key = (op, fees_eur_per_kwh)
    if memo is not None and key in memo:
        return memo[key].copy()
    fees = None if op == 0 else GRID_OPERATORS[op - 1]
    imp = ImportTariff(kind="dynamic", fees_eur_per_kwh=fees_eur_per_kwh)
    series = import_price_eur_per_kwh(SiteTariff("synthetic", imp, ExportTariff(), fees), t_s, price_eur_per_mwh)
    if memo is not None:
        memo[key] = series.copy()
    return series


def _clip(x: float, lo: float, hi: float) -> float:
    """``np.clip`` of one number, as a float (np.clip's array machinery is most of its cost here)."""
    return min(max(float(x), lo), hi)


def synthetic_problem(n_sites: int, seed: int = 7, periods: int = 96) -> DispatchProblem:
    """A fleet of ``n_sites`` for one summer day from local midnight, ``periods`` quarter-hours."""
    rng = np.random.default_rng(seed)
    start = dt.datetime.combine(DAY, dt.time(), tzinfo=BERLIN).timestamp()
    t_s = start + QUARTER_S * np.arange(periods)
    mid = t_s + QUARTER_S / 2
    hour = (t_s - start) / 3600.0
    h0 = h0_w_per_annual_kwh(mid)
    price = day_ahead_curve(t_s)

    sites: list[SiteProblem] = []
    total_kwp = 0.0
    battery_w = 0.0
    # Per orientation one clear-sky curve and per (operator, fees) one tariff: the fleet draws few of
    # each, and interpolating or pricing them per site was most of the time of making a large fleet.
    clearsky: dict[PvGeometry, np.ndarray] = {}
    tariffs: dict[tuple[int, float], np.ndarray] = {}
    for i in range(n_sites):
        kwp = _clip(rng.lognormal(np.log(7.0), 0.45), 2.0, 30.0)
        # TILTS[rng.integers(3)] draws as rng.choice(TILTS) does, without making an array of TILTS.
        geom = PvGeometry(51.34, 12.37, 110.0, TILTS[rng.integers(len(TILTS))], AZIMUTHS[rng.integers(len(AZIMUTHS))])
        if geom not in clearsky:
            clearsky[geom] = clearsky_w_per_kwp(geom, mid)
        # A site's sky: clear-sky shape times a smooth haze factor of its own.
        clearness = np.clip(0.85 + 0.1 * np.sin(hour / 24 * 2 * np.pi * rng.uniform(1, 3) + rng.uniform(0, 6)), 0, 1)
        avail = clearsky[geom] * kwp * clearness
        annual = float(rng.uniform(2500, 6500))
        load = h0 * annual * rng.uniform(0.85, 1.15)
        battery = None
        if rng.random() < 0.65:
            cap_kwh = _clip(kwp * rng.uniform(0.8, 1.5), 3.0, 30.0)
            power = _clip(cap_kwh * 500.0, 2500.0, 10_000.0)
            battery = BatteryProblem(
                cap_kwh * 1000.0, power, power, 0.95, 0.95, 0.05, 0.95, float(rng.uniform(0.1, 0.6))
            )
            battery_w += power
        regime = rng.random()
        cap_pct = 60 if regime < 0.4 else (70 if regime < 0.6 else None)
        rating = kwp * 1000.0
        stage = np.full(periods, np.nan)
        if i % 10 == 3:  # a K3 stage from 12:00 to 14:00 on every tenth site
            stage[(hour >= 12) & (hour < 14)] = stage_ceiling_w("K3", rating)
        para14a = np.zeros(periods, dtype=bool)
        if battery is not None and i % 5 == 1:
            para14a[(hour >= 17) & (hour < 21)] = True
        sites.append(
            SiteProblem(
                site_id=f"syn-{i:05d}",
                pv_available_w=avail,
                load_w=load,
                pv_rating_w=rating,
                pv_ceiling_w=rating,
                kwp=kwp,
                battery=battery,
                import_eur_per_kwh=synthetic_import_price(rng, t_s, price, tariffs),
                export_eur_per_kwh=round(float(rng.uniform(0.06, 0.12)), 3),
                direct_marketing=bool(rng.random() < 0.1),
                feed_in_cap_w=None if cap_pct is None else cap_pct / 100.0 * kwp * 1000.0,
                connection_limit_w=30_000.0,
                negative_price_rule=cap_pct == 60,
                stage_ceiling_w=stage,
                para14a=para14a,
            )
        )
        total_kwp += kwp
    # The operator asks for a steady midday export and for evening support from the batteries.
    schedule = np.full(periods, np.nan)
    schedule[(hour >= 10) & (hour < 15)] = 0.25 * total_kwp * 1000.0
    schedule[(hour >= 18) & (hour < 21)] = 0.15 * battery_w
    return DispatchProblem(
        start_s=start,
        period_s=np.full(periods, float(QUARTER_S)),
        price_eur_per_mwh=price,
        sites=sites,
        export_schedule_w=schedule,
        weights=DispatchConfig(),
    )
