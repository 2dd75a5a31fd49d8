"""A household's own load profile, learnt from its history and shrunk toward the standard profile.

Per site, the mean load (W) in each local quarter-hour of the day (Europe/Berlin wall clock, 96
slots; on the 23- and 25-hour days of a clock change the missing hour has no samples and the
repeated one shares its slot) for three day types: working day, Saturday, Sunday or public
holiday (Saxony). Older days fade with a half-life of ``HALF_LIFE_DAYS``.

The forecast of a slot blends the learnt mean with the standard profile (BDEW H0 × annual kWh ×
the recent level factor of :func:`sparcs.optimizer.forecast.learn_load_level`) by how many days
back it: ``w = days / (days + PRIOR_DAYS)``. A site with no history gets H0; after a few weeks its
own habits dominate.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pandas as pd

from sparcs.optimizer.curves import BERLIN, h0_w_per_annual_kwh

SLOTS = 96
DAY_TYPES = ("working day", "saturday", "sunday or holiday")
PRIOR_DAYS = 3.0
"""Weight of the standard profile, in days of the site's own history."""
HALF_LIFE_DAYS = 28.0
"""Older days count half after this many days: habits change with the seasons."""
SAMPLES_PER_SLOT_DAY = 15.0
"""One sample a minute (controller.planning) makes a slot's day worth 15 samples."""


@lru_cache(maxsize=16)
def _holidays(year: int) -> frozenset[dt.date]:
    import holidays

    return frozenset(holidays.Germany(subdiv="SN", years=[year]).keys())


def day_type_and_slot(t_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Day type (index into DAY_TYPES) and local quarter-hour slot (0..95) of Unix times ``t_s``."""
    local = pd.to_datetime(np.asarray(t_s, dtype=float), unit="s", utc=True).tz_convert(BERLIN)
    slot = (local.hour * 4 + local.minute // 15).to_numpy()
    weekday = local.day_of_week.to_numpy()
    dates = local.date
    holiday = np.array([d in _holidays(d.year) for d in dates], dtype=bool)
    kind = np.where((weekday == 6) | holiday, 2, np.where(weekday == 5, 1, 0))
    return kind.astype(int), slot.astype(int)


@dataclass
class LoadProfile:
    """Decaying sums of one site's load (W × samples) and sample counts per day type and slot."""

    sums: np.ndarray = field(default_factory=lambda: np.zeros((len(DAY_TYPES), SLOTS)))
    counts: np.ndarray = field(default_factory=lambda: np.zeros((len(DAY_TYPES), SLOTS)))
    last_s: float | None = None

    def learn(
        self,
        t_s: np.ndarray,
        load_w: np.ndarray,
        where: tuple[np.ndarray, np.ndarray] | None = None,
        samples: np.ndarray | None = None,
    ) -> None:
        """Add samples (Unix s, W; NaN skipped), fading what was learnt before by the time passed.

        ``where``: the samples' :func:`day_type_and_slot`, if the caller has it (a fleet's sites share
        their poll times). ``samples``: how many one-a-minute samples each value stands for (a mean
        over a stored quarter-hour counts as its samples; default 1 each).
        """
        t = np.asarray(t_s, dtype=float)
        w = np.asarray(load_w, dtype=float)
        n = np.ones_like(w) if samples is None else np.asarray(samples, dtype=float)
        kind, slot = where if where is not None else day_type_and_slot(t)
        ok = np.isfinite(w) & np.isfinite(t) & (n > 0)
        if not ok.any():
            return
        t, w, n, kind, slot = t[ok], w[ok], n[ok], kind[ok], slot[ok]
        newest = float(t.max())
        if self.last_s is not None and newest > self.last_s:
            fade = 0.5 ** ((newest - self.last_s) / (HALF_LIFE_DAYS * 86_400.0))
            self.sums *= fade
            self.counts *= fade
        self.last_s = newest if self.last_s is None else max(self.last_s, newest)
        np.add.at(self.sums, (kind, slot), w * n)
        np.add.at(self.counts, (kind, slot), n)

    def learn_history(
        self,
        start_s: np.ndarray,
        mean_w: np.ndarray,
        samples: np.ndarray,
        where: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        """Learn stored quarter-hour means (start Unix s, W, samples behind each) at once, each faded by
        its age relative to the newest, as if it had been learnt as it was measured (after a restart).
        ``where``: their :func:`day_type_and_slot`, if the caller has it."""
        t = np.asarray(start_s, dtype=float)
        if t.size == 0:
            return
        age_days = (t.max() - t) / 86_400.0
        weight = np.asarray(samples, dtype=float) * 0.5 ** (age_days / HALF_LIFE_DAYS)
        self.learn(t, mean_w, where, samples=weight)

    def forecast_w(
        self,
        t_s: np.ndarray,
        annual_kwh: float,
        level: float = 1.0,
        where: tuple[np.ndarray, np.ndarray] | None = None,
        h0_w_per_kwh: np.ndarray | None = None,
    ) -> np.ndarray:
        """Load (W) at ``t_s``: the learnt slot means blended with H0 × ``annual_kwh`` × ``level``.

        ``where`` (:func:`day_type_and_slot` of ``t_s``) and ``h0_w_per_kwh`` (H0 at ``t_s``) may be
        given by a caller that forecasts many sites for the same times.
        """
        t = np.asarray(t_s, dtype=float)
        h0 = h0_w_per_annual_kwh(t) if h0_w_per_kwh is None else h0_w_per_kwh
        standard = h0 * annual_kwh * level
        kind, slot = day_type_and_slot(t) if where is None else where
        n = self.counts[kind, slot]
        learnt = np.divide(self.sums[kind, slot], n, out=np.zeros_like(n), where=n > 0)
        days = n / SAMPLES_PER_SLOT_DAY
        weight = days / (days + PRIOR_DAYS)
        return weight * learnt + (1.0 - weight) * standard
