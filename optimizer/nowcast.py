"""The city-wide PV nowcast: what the fleet measures now corrects every site's forecast for the next hours.

Neighbouring roofs see the same clouds. Each site's *ratio* is its measured PV over the forecast
baseline for the same recent samples (daylight, not held by a limit); a site's nowcast ratio is a
distance-weighted mean of its own and its neighbours' ratios (Gaussian kernel of ``radius_km``,
each weighted by how many samples it rests on), pulled toward 1 by a prior weight so that a
single odd site moves little. The correction fades with lead time into the baseline (e-folding
``fade_s``), because a cloud seen now says little about the afternoon.

Pure functions over arrays: distances in km, times in s, ratios dimensionless.
"""

from __future__ import annotations

import numpy as np

RADIUS_KM = 3.0
"""Kernel width: cloud fields are correlated over a few kilometres at quarter-hour scales."""
PRIOR_SAMPLES = 10.0
"""Weight of the prior ratio 1 (no correction), in samples of one site."""
FADE_S = 5400.0
"""E-folding lead time of the correction (s)."""
RATIO_RANGE = (0.05, 1.6)
"""Ratios outside this range are measurement faults, not weather: clipped."""


def xy_km(lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Local east/north coordinates (km) of places given in degrees (equirectangular: a city is small)."""
    lat = np.asarray(lat, dtype=float)
    lon = np.asarray(lon, dtype=float)
    lat0 = np.radians(float(np.mean(lat))) if lat.size else 0.0
    return np.radians(lon) * 6371.0 * np.cos(lat0), np.radians(lat) * 6371.0


def site_ratio(measured_w: np.ndarray, baseline_w: np.ndarray, usable: np.ndarray) -> tuple[float, int]:
    """(measured ÷ baseline energy over the usable samples, number of samples); (nan, 0) without any."""
    m = np.asarray(measured_w, dtype=float)
    b = np.asarray(baseline_w, dtype=float)
    use = np.asarray(usable, dtype=bool) & np.isfinite(m) & np.isfinite(b) & (b > 0)
    n = int(use.sum())
    if n == 0:
        return float("nan"), 0
    return float(np.clip(m[use].sum() / b[use].sum(), *RATIO_RANGE)), n


def city_ratios(
    x_km: np.ndarray,
    y_km: np.ndarray,
    ratios: np.ndarray,
    samples: np.ndarray,
    radius_km: float = RADIUS_KM,
    prior_samples: float = PRIOR_SAMPLES,
) -> np.ndarray:
    """Nowcast ratio of every site: kernel-weighted mean of all sites' ratios (nan ones left out), prior 1.

    ``samples`` weights each site's ratio; the site's own ratio enters at distance 0.
    """
    x = np.asarray(x_km, dtype=float)
    y = np.asarray(y_km, dtype=float)
    r = np.asarray(ratios, dtype=float)
    n = np.where(np.isfinite(r), np.asarray(samples, dtype=float), 0.0)
    r = np.where(np.isfinite(r), r, 1.0)
    if x.size == 0:
        return np.zeros(0)
    known = n > 0
    if not known.any():
        return np.ones_like(x)
    xk, yk, rk, nk = x[known], y[known], r[known], n[known]
    d2 = (x[:, None] - xk[None, :]) ** 2 + (y[:, None] - yk[None, :]) ** 2
    w = np.exp(-d2 / (2.0 * radius_km**2)) * nk[None, :]
    return (w @ rk + prior_samples) / (w.sum(axis=1) + prior_samples)


def correction(ratio: float, lead_s: np.ndarray, fade_s: float | np.ndarray = FADE_S) -> np.ndarray:
    """Multiplier of the baseline at lead times ``lead_s`` (s ≥ 0): ``ratio`` now, fading to 1 with
    e-folding time ``fade_s`` (s; one value or one per lead time)."""
    lead = np.maximum(np.asarray(lead_s, dtype=float), 0.0)
    return 1.0 + (ratio - 1.0) * np.exp(-lead / fade_s)
