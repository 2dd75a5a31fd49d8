"""Seeded weather and load noise as pure functions of (seed, site, time).

docs/definitions.md "Randomness": weather and load noise never come from a random generator that is
advanced tick by tick; they are hashes of (seed, stream, knot index), smoothly interpolated
between knots. Any caller — the simulator at any step size, a replay, the optimizer's
perfect-foresight strategy — therefore sees exactly the same day.

- :func:`clearness`: multiplier of clear-sky PV output, 0.25 (overcast) .. 1.0 (clear sky).
  A regional cloud field shared by every site of a seed, plus a small site-local part, plus a
  daily cloud level, all scaled by ``cloudiness`` (0 = clear sky all day, 1 = overcast).
- :func:`load_factor`: multiplier of the standard load profile, mean 1, relative standard
  deviation about ``load_noise``.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

DAY_S = 86_400
REGIONAL_PERIOD_S = 1200.0
"""Knot spacing of the regional cloud field (s): clouds pass over a city in tens of minutes."""
LOCAL_PERIOD_S = 300.0
"""Knot spacing of the site-local cloud and load noise (s)."""
OVERCAST_CLEARNESS = 0.25
"""Clearness under full cloud cover: diffuse light still reaches the panels."""

_U64 = np.uint64


def stream_key(*parts: str | int) -> int:
    """A stable 64-bit key for a named random stream (Python's ``hash`` differs between processes)."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 arrays (wrapping arithmetic is intended)."""
    x = x + _U64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> _U64(27))) * _U64(0x94D049BB133111EB)
    return x ^ (x >> _U64(31))


def uniform_at(key: int, index: ArrayLike) -> np.ndarray:
    """Uniform numbers in [0, 1), one per integer ``index``, fixed by ``key``."""
    idx = np.asarray(index, dtype=np.int64).astype(_U64)
    with np.errstate(over="ignore"):
        h = _mix(_mix(idx) ^ _U64(key))
    return (h >> _U64(11)).astype(np.float64) * (1.0 / 2**53)


def value_noise(key: int, t_s: np.ndarray | float, period_s: float) -> np.ndarray:
    """Smooth noise in [0, 1] at times ``t_s`` (s): hashed knots every ``period_s``, smoothstep between."""
    t = np.atleast_1d(np.asarray(t_s, dtype=float)) / period_s
    k = np.floor(t)
    u = t - k
    u = u * u * (3.0 - 2.0 * u)
    a = uniform_at(key, k)
    b = uniform_at(key, k + 1)
    return a + (b - a) * u


def cloud_cover(seed: int, site_id: str, t_s: np.ndarray | float, cloudiness: float) -> np.ndarray:
    """Cloud cover 0..1 over a site at ``t_s``; its mean over many days is about ``cloudiness``."""
    t = np.atleast_1d(np.asarray(t_s, dtype=float))
    if cloudiness <= 0.0:
        return np.zeros_like(t)
    day_level = uniform_at(stream_key(seed, "weather-day"), np.floor(t / DAY_S))
    regional = value_noise(stream_key(seed, "weather-regional"), t, REGIONAL_PERIOD_S)
    local = value_noise(stream_key(seed, "weather-local", site_id), t, LOCAL_PERIOD_S)
    # The spread vanishes at both ends so that 0 is a clear and 1 an overcast day.
    spread = 4.0 * cloudiness * (1.0 - cloudiness)
    wobble = 0.35 * (day_level - 0.5) + 0.45 * (regional - 0.5) + 0.2 * (local - 0.5)
    return np.clip(cloudiness + 2.0 * spread * wobble, 0.0, 1.0)


def clearness(seed: int, site_id: str, t_s: np.ndarray | float, cloudiness: float = 0.3) -> np.ndarray:
    """Multiplier of clear-sky PV output at a site, OVERCAST_CLEARNESS..1, at Unix times ``t_s``."""
    return 1.0 - (1.0 - OVERCAST_CLEARNESS) * cloud_cover(seed, site_id, t_s, cloudiness)


def load_factor(seed: int, site_id: str, t_s: np.ndarray | float, load_noise: float) -> np.ndarray:
    """Multiplier (≥ 0.05, mean 1) of a site's standard load profile at ``t_s``."""
    t = np.atleast_1d(np.asarray(t_s, dtype=float))
    if load_noise <= 0.0:
        return np.ones_like(t)
    n = value_noise(stream_key(seed, "load", site_id), t, LOCAL_PERIOD_S)
    # Smoothstep interpolation shrinks a uniform's spread; 2.2 restores std ≈ load_noise.
    return np.clip(1.0 + load_noise * 2.2 * (2.0 * n - 1.0), 0.05, None)


@lru_cache(maxsize=8)
def _csv_series(path: Path, columns: tuple[str, ...] = ("clearness",)) -> tuple[np.ndarray, ...]:
    """Unix s and the named columns of a CSV ``timestamp,<columns...>``, sorted by time."""
    import pandas as pd

    frame = pd.read_csv(path)
    if list(frame.columns[: len(columns) + 1]) != ["timestamp", *columns]:
        raise ValueError(f"{path}: expected the columns timestamp,{','.join(columns)}")
    ts = pd.to_datetime(frame["timestamp"], utc=True)
    order = np.argsort(ts.to_numpy())
    # Seconds since the epoch whatever unit pandas parsed to (pandas 3 parses ISO strings to µs, not ns).
    t_s = (ts - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy()[order]
    return (t_s, *(frame[c].to_numpy(dtype=float)[order] for c in columns))


def clearness_from_csv(path: Path, t_s: np.ndarray | float) -> np.ndarray:
    """Clearness from a measured series (CSV ``timestamp,clearness``), linear between samples."""
    t = np.atleast_1d(np.asarray(t_s, dtype=float))
    times, values = _csv_series(Path(path))
    return np.interp(t, times, np.clip(values, 0.0, 1.2))


RECORDED_COLUMNS = ("clearness", "load_w")
"""The columns of a recorded site's CSV after ``timestamp`` (``simulation.recorded_dir``)."""


def recorded_file(folder: Path, site_id: str) -> Path:
    """Where a site's recorded day lies in ``simulation.recorded_dir``."""
    return Path(folder) / f"{site_id}.csv"


def recorded_from_csv(folder: Path, site_id: str, t_s: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """A site's recorded clearness (multiplier of its clear-sky PV, ≥ 0) and load (W ≥ 0) at ``t_s``,
    linear between samples and held beyond the first and last (CSV ``timestamp,clearness,load_w``)."""
    t = np.atleast_1d(np.asarray(t_s, dtype=float))
    times, k, load = _csv_series(recorded_file(folder, site_id), RECORDED_COLUMNS)
    return np.interp(t, times, np.maximum(k, 0.0)), np.interp(t, times, np.maximum(load, 0.0))
