"""Forecasts fed with arrays: PV per site, household load per site, day-ahead prices.

Pure functions and small classes; the controller supplies the measurements (Unix s, W) and the
period grid. Every forecast is a :class:`Forecast` that reports its mean absolute error against
what was measured later.

- PV: a baseline — the weather forecast through pvlib (:mod:`sparcs.optimizer.pv_power`) where
  one covers the period, else clear sky per kWp × kWp × a typical clearness — corrected by the
  city-wide nowcast (:mod:`sparcs.optimizer.nowcast`): the fleet's recent measurements over the
  baseline, from the site and its neighbours, fading with lead time. (``pv_forecast``, clear sky ×
  a clearness learnt from the site alone, is the reference the forecast quality is judged against.)
- Load: BDEW H0 × annual kWh × a level factor learnt from the last day of measurements as the
  median of hourly ratios, shrunk toward 1 and clipped, so one unusual hour (a cloudy afternoon's
  kettle-and-oven peak, a holiday) barely moves it.
- Prices: a quarter-hourly day-ahead series handed in, the flat tariff where it has no value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sparcs.optimizer.curves import PvGeometry, clearsky_w_per_kwp, h0_w_per_annual_kwh
from sparcs.optimizer.pv_power import Irradiance, pv_ac_w

TYPICAL_CLEARNESS = 0.75
"""Mean ratio of real to clear-sky PV output at mid-latitudes over a year, fraction."""
CLEARNESS_DECAY_S = 3 * 3600.0
"""How fast a learnt clearness fades into the typical value with lead time (e-folding, s)."""
MIN_CLEARSKY_W_PER_KWP = 50.0
"""Below this clear-sky output (dawn, dusk) ratios are noise and are not learnt from."""


@dataclass
class Forecast:
    """Values at the midpoints ``t_s`` (Unix s) of the plan periods; units as the producer says (W, EUR/MWh)."""

    t_s: np.ndarray
    values: np.ndarray

    def mae(self, measured_t_s: np.ndarray, measured: np.ndarray) -> float:
        """Mean absolute error against later measurements at the forecast times (NaN if none overlap).

        Measurements are interpolated onto the forecast times; times outside the measured span and
        NaN measurements are left out.
        """
        mt = np.asarray(measured_t_s, dtype=float)
        mv = np.asarray(measured, dtype=float)
        ok = np.isfinite(mv)
        mt, mv = mt[ok], mv[ok]
        if mt.size == 0:
            return float("nan")
        inside = (self.t_s >= mt.min()) & (self.t_s <= mt.max())
        if not inside.any():
            return float("nan")
        return float(np.mean(np.abs(self.values[inside] - np.interp(self.t_s[inside], mt, mv))))


def learn_clearness(
    geom: PvGeometry,
    kwp: float,
    measured_t_s: np.ndarray,
    measured_w: np.ndarray,
    curtailed: np.ndarray | None = None,
) -> float | None:
    """Ratio of measured to clear-sky energy over the samples given (daylight, not curtailed), or None."""
    t = np.asarray(measured_t_s, dtype=float)
    w = np.asarray(measured_w, dtype=float)
    clear = clearsky_w_per_kwp(geom, t) * kwp
    use = np.isfinite(w) & (clear >= MIN_CLEARSKY_W_PER_KWP * kwp)
    if curtailed is not None:
        use &= ~np.asarray(curtailed, dtype=bool)
    if not use.any():
        return None
    return float(np.clip(w[use].sum() / clear[use].sum(), 0.0, 1.2))


def pv_forecast(
    geom: PvGeometry,
    kwp: float,
    now_s: float,
    t_s: np.ndarray,
    clearness_now: float | None,
    typical: float = TYPICAL_CLEARNESS,
    decay_s: float = CLEARNESS_DECAY_S,
) -> Forecast:
    """Available PV output in W at times ``t_s``: clear sky × kWp × clearness decaying to ``typical``."""
    t = np.asarray(t_s, dtype=float)
    k_now = typical if clearness_now is None else clearness_now
    lead = np.maximum(t - now_s, 0.0)
    k = typical + (k_now - typical) * np.exp(-lead / decay_s)
    return Forecast(t, clearsky_w_per_kwp(geom, t) * kwp * k)


def pv_baseline_w(
    geom: PvGeometry,
    kwp: float,
    t_s: np.ndarray,
    weather: Irradiance | None = None,
    covered: np.ndarray | None = None,
    typical: float = TYPICAL_CLEARNESS,
) -> np.ndarray:
    """PV output (W) before the nowcast: the weather forecast through pvlib where it covers ``t_s``,
    clear sky × ``typical`` clearness (climatology) where it does not."""
    t = np.asarray(t_s, dtype=float)
    out = clearsky_w_per_kwp(geom, t) * kwp * typical
    if weather is not None and covered is not None and covered.any():
        out[covered] = pv_ac_w(geom, kwp, weather)[covered]
    return out


def learn_load_level(annual_kwh: float, measured_t_s: np.ndarray, measured_w: np.ndarray, shrink: float = 0.5) -> float:
    """Level factor of the site's load against H0 × annual kWh: a robust, shrunk median of hourly ratios.

    Returns 1 without data. ``shrink`` (0..1) pulls the estimate toward 1; the result is clipped to
    0.5..2 so that a broken meter cannot make the forecast absurd.
    """
    t = np.asarray(measured_t_s, dtype=float)
    w = np.asarray(measured_w, dtype=float)
    ok = np.isfinite(w)
    if not ok.any():
        return 1.0
    t, w = t[ok], w[ok]
    expected = h0_w_per_annual_kwh(t) * annual_kwh
    hour = np.floor(t / 3600.0)
    ratios = []
    for h in np.unique(hour):
        sel = hour == h
        e = expected[sel].sum()
        if e > 0:
            ratios.append(w[sel].sum() / e)
    if not ratios:
        return 1.0
    level = 1.0 + (1.0 - shrink) * (float(np.median(ratios)) - 1.0)
    return float(np.clip(level, 0.5, 2.0))


def load_forecast(annual_kwh: float, t_s: np.ndarray, level: float = 1.0, limit_w: float | None = None) -> Forecast:
    """Household load in W at times ``t_s``: H0 × annual kWh × ``level``, at most ``limit_w`` (the fuse)."""
    t = np.asarray(t_s, dtype=float)
    w = h0_w_per_annual_kwh(t) * annual_kwh * level
    if limit_w is not None:
        w = np.minimum(w, limit_w)
    return Forecast(t, w)


def price_forecast(
    t_s: np.ndarray, series_t_s: np.ndarray | None, series_eur_per_mwh: np.ndarray | None, flat_eur_per_mwh: float
) -> Forecast:
    """Day-ahead price (EUR/MWh) at times ``t_s`` from a quarter-hourly series; flat where it has none.

    Each time takes the value of the quarter-hour (starting at ``series_t_s``) that contains it.
    """
    t = np.asarray(t_s, dtype=float)
    out = np.full(t.shape, float(flat_eur_per_mwh))
    if series_t_s is None or series_eur_per_mwh is None or len(series_t_s) == 0:
        return Forecast(t, out)
    st = np.asarray(series_t_s, dtype=float)
    sv = np.asarray(series_eur_per_mwh, dtype=float)
    order = np.argsort(st)
    st, sv = st[order], sv[order]
    idx = np.searchsorted(st, t, side="right") - 1
    inside = (idx >= 0) & (t < st[np.maximum(idx, 0)] + 900.0)
    vals = sv[np.maximum(idx, 0)]
    use = inside & np.isfinite(vals)
    out[use] = vals[use]
    return Forecast(t, out)
