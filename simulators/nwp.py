"""The simulated world's weather forecast: a numerical weather prediction issued in runs, seeded.

What a utility really has is a weather model's forecast, not the truth. This module forecasts the
simulators' own weather (:mod:`sparcs.simulators.weather`) the way such a model does:

- **Runs**: a run every ``RUN_EVERY_S`` (00, 06, 12, 18 UTC), available ``AVAILABLE_AFTER_S``
  after its nominal time, reaching ``HORIZON_S`` ahead of it. At any time the newest available
  run answers.
- **What it resolves**: the day's cloud level (a weather model gets the synoptic situation
  right), not the individual clouds of the regional field or over a single roof: those stay
  forecast error, as in reality. With a measured clearness series the model sees it smoothed
  over ``SMOOTH_S``.
- **Error growing with lead time**: a smooth, seeded error in clearness whose standard deviation
  grows linearly from ``SIGMA_AT_0`` to ``SIGMA_AT_48H``; a new draw per run. It is shared by the
  whole city (``CITY_SHARE`` of it) plus a part per grid cell, so neighbouring sites are wrong
  together, as they are under one model's grid.
- **Calibration**: PV from this forecast has a mean absolute error of about 5.5–7 % of installed
  capacity over daylight periods of 0–48 h at the shipped weather (``cloudiness`` 0.3–0.5),
  within the 5–7 % that good operational PV forecasts reach (docs/forecasts.md;
  ``tests/simulators/test_nwp.py`` measures it).

The simulated world has no temperature effect on PV (simulators.physics), so the forecast gives
no air temperature: the forecast chain then applies no temperature correction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sparcs.config.schema import WeatherConfig
from sparcs.optimizer.curves import PvGeometry, clearsky_irradiance_w_m2
from sparcs.simulators.weather import (
    DAY_S,
    OVERCAST_CLEARNESS,
    clearness_from_csv,
    stream_key,
    uniform_at,
    value_noise,
)

RUN_EVERY_S = 6 * 3600.0
AVAILABLE_AFTER_S = 4 * 3600.0
HORIZON_S = 54 * 3600.0
PERIOD_S = 900.0
ERROR_KNOT_S = 3 * 3600.0
"""Knot spacing of the forecast error (s): a weather model is wrong by hours-long stretches."""
SIGMA_AT_0 = 0.02
SIGMA_AT_48H = 0.08
"""Standard deviation of the clearness error at lead 0 and 48 h (fraction of clear sky)."""
CITY_SHARE = 0.8
"""Share of the error common to the whole city (the rest differs per grid cell)."""
SMOOTH_S = 7200.0
"""Window over which a measured clearness series is seen by the model (s)."""
_UNIT_STD = 2.2
"""Multiplier that gives smoothstep-interpolated uniform noise (2u − 1) a standard deviation of 1."""


@dataclass(frozen=True)
class NwpRun:
    """One run's forecast at one place: period starts (Unix s), clearness and irradiance (W/m²)."""

    run_s: float
    start_s: np.ndarray
    clearness: np.ndarray
    ghi_w_m2: np.ndarray
    dni_w_m2: np.ndarray
    dhi_w_m2: np.ndarray


def latest_run_s(now_s: float) -> float:
    """Nominal time (Unix s) of the newest run available at ``now_s``."""
    return float(np.floor((now_s - AVAILABLE_AFTER_S) / RUN_EVERY_S) * RUN_EVERY_S)


def resolved_clearness(weather: WeatherConfig, seed: int, t_s: np.ndarray) -> np.ndarray:
    """The part of the true clearness (simulators.weather) that a weather model resolves, at ``t_s``."""
    t = np.asarray(t_s, dtype=float)
    if weather.irradiance_csv is not None:
        offsets = np.linspace(-SMOOTH_S / 2, SMOOTH_S / 2, 9)
        samples = clearness_from_csv(weather.irradiance_csv, (t[:, None] + offsets[None, :]).ravel())
        return samples.reshape(t.size, offsets.size).mean(axis=1)
    c = weather.cloudiness
    if c <= 0.0:
        return np.ones_like(t)
    day_level = uniform_at(stream_key(seed, "weather-day"), np.floor(t / DAY_S))
    spread = 4.0 * c * (1.0 - c)
    cover = np.clip(c + 2.0 * spread * 0.35 * (day_level - 0.5), 0.0, 1.0)
    return 1.0 - (1.0 - OVERCAST_CLEARNESS) * cover


def lead_sigma(lead_s: np.ndarray) -> np.ndarray:
    """Standard deviation of the clearness error at lead times ``lead_s`` (s)."""
    frac = np.clip(np.asarray(lead_s, dtype=float) / (48 * 3600.0), 0.0, None)
    return SIGMA_AT_0 + (SIGMA_AT_48H - SIGMA_AT_0) * frac


def forecast_clearness(
    weather: WeatherConfig, seed: int, cell: tuple[float, float], run_s: float, t_s: np.ndarray
) -> np.ndarray:
    """Clearness the run of ``run_s`` forecasts for grid cell ``cell`` at ``t_s`` (OVERCAST_CLEARNESS..1)."""
    t = np.asarray(t_s, dtype=float)
    run = int(run_s // RUN_EVERY_S)
    city = _UNIT_STD * (2.0 * value_noise(stream_key(seed, "nwp-city", run), t, ERROR_KNOT_S) - 1.0)
    local = _UNIT_STD * (
        2.0 * value_noise(stream_key(seed, "nwp-cell", run, f"{cell[0]:.4f},{cell[1]:.4f}"), t, ERROR_KNOT_S) - 1.0
    )
    error = lead_sigma(t - run_s) * (np.sqrt(CITY_SHARE) * city + np.sqrt(1.0 - CITY_SHARE) * local)
    return np.clip(resolved_clearness(weather, seed, t) + error, OVERCAST_CLEARNESS, 1.0)


def forecast_run(weather: WeatherConfig, seed: int, cell: tuple[float, float], now_s: float) -> NwpRun:
    """The newest run available at ``now_s`` for ``cell`` (lat, lon in degrees), quarter-hourly."""
    run_s = latest_run_s(now_s)
    starts = run_s + np.arange(0.0, HORIZON_S, PERIOD_S)
    mid = starts + PERIOD_S / 2
    k = forecast_clearness(weather, seed, cell, run_s, mid)
    ghi, dni, dhi = clearsky_irradiance_w_m2(PvGeometry(cell[0], cell[1]), mid)
    return NwpRun(run_s, starts, k, ghi * k, dni * k, dhi * k)
