"""How good the forecasts are: normalised MAE per kind and lead-time band, and skill against references.

Each issued forecast (a kind such as ``pv`` or ``load``, per site and plan period) is kept with
the forecasts of two references issued at the same time — *persistence* (what is measured now,
held) and *climatology* (what is typical) — until its periods have been measured. As periods end,
the absolute errors of all three go into accumulators per lead-time band.

- nMAE = Σ|forecast − measured| ÷ Σ norm, per band: the mean absolute error as a share of each
  site's norm (for PV its kWp in W, so "% of capacity"; for load its mean load in W).
- skill = 1 − MAE(forecast) ÷ MAE(reference): above 0 the forecast beats the reference.

A period counts only where it was measured (the caller passes NaN for a period it cannot judge,
e.g. PV held by a limit). Issues are kept at most ``keep_s`` (48 h), at most one per
``issue_every_s`` and for at most ``max_sites`` sites (an even sample of the fleet), so that
memory stays bounded at 1,000 sites.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

LEAD_BANDS_H: tuple[tuple[float, float], ...] = ((0, 1), (1, 6), (6, 24), (24, 48))
REFERENCES = ("persistence", "climatology")


@dataclass(frozen=True)
class QualityRow:
    """The figures of one kind and lead band; None where nothing has been measured yet."""

    kind: str
    band_h: tuple[float, float]
    periods: int
    nmae: float | None
    skill: dict[str, float | None]

    def as_dict(self) -> dict[str, object]:
        """Its JSON form (API and twin report): ``kind``, ``lead_h`` [from, to), ``periods``, ``nmae``, ``skill``."""
        return {
            "kind": self.kind,
            "lead_h": list(self.band_h),
            "periods": self.periods,
            "nmae": self.nmae,
            "skill": self.skill,
        }


@dataclass
class _Issue:
    kind: str
    issued_s: float
    starts: np.ndarray
    ends: np.ndarray
    sites: list[str]
    values: np.ndarray  # (3, sites, periods): forecast, persistence, climatology
    judged: np.ndarray  # (periods,) bool: already scored


@dataclass
class _Band:
    abs_err: np.ndarray = field(default_factory=lambda: np.zeros(3))
    norm: float = 0.0
    periods: int = 0


class ForecastQuality:
    """Accumulates forecast errors as measurements arrive (see the module docstring)."""

    def __init__(
        self,
        norm_w: dict[str, dict[str, float]],
        *,
        keep_s: float = 48 * 3600.0,
        issue_every_s: float = 3600.0,
        max_sites: int = 200,
    ):
        """``norm_w``: per kind, each site's norm (W), e.g. ``{"pv": {site: kWp × 1000}, "load": ...}``."""
        ids = sorted({site for norms in norm_w.values() for site in norms})
        step = max(1, len(ids) // max_sites)
        self.sample = set(ids[::step][:max_sites])
        self.norm_w = norm_w
        self.keep_s = keep_s
        self.issue_every_s = issue_every_s
        self.issues: list[_Issue] = []
        self.bands: dict[tuple[str, int], _Band] = {}
        self._last_issue: dict[str, float] = {}

    def due(self, kind: str, now_s: float) -> bool:
        """Whether a forecast of ``kind`` issued at ``now_s`` would be kept."""
        last = self._last_issue.get(kind)
        return last is None or now_s - last >= self.issue_every_s

    def issue(
        self,
        kind: str,
        issued_s: float,
        starts: np.ndarray,
        ends: np.ndarray,
        forecast: dict[str, np.ndarray],
        persistence: dict[str, np.ndarray],
        climatology: dict[str, np.ndarray],
    ) -> None:
        """Keep a forecast of ``kind`` (W per site and period) with its two references."""
        if not self.due(kind, issued_s):
            return
        sites = [s for s in forecast if s in self.sample]
        if not sites:
            return
        self._last_issue[kind] = issued_s
        values = np.array([[src[s] for s in sites] for src in (forecast, persistence, climatology)], dtype=float)
        n = len(starts)
        self.issues.append(
            _Issue(kind, issued_s, np.asarray(starts), np.asarray(ends), sites, values, np.zeros(n, bool))
        )

    def evaluate(self, now_s: float, measured: Callable[[str, str, float, float], float]) -> None:
        """Score every kept period that has ended by ``now_s``; ``measured(kind, site, start, end)`` gives
        the period's measured mean (W) or NaN where it cannot be judged."""
        seen: dict[tuple[str, str, float], float] = {}  # one measurement per kind, site and period

        def measure(kind: str, site: str, start: float, end: float) -> float:
            key = (kind, site, start)
            if key not in seen:
                seen[key] = measured(kind, site, start, end)
            return seen[key]

        for iss in self.issues:
            due = ~iss.judged & (iss.ends <= now_s)
            for p in np.flatnonzero(due):
                lead_h = (iss.starts[p] - iss.issued_s) / 3600.0
                band = next((i for i, (lo, hi) in enumerate(LEAD_BANDS_H) if lo <= lead_h < hi), None)
                iss.judged[p] = True
                if band is None:
                    continue
                acc = self.bands.setdefault((iss.kind, band), _Band())
                for j, site in enumerate(iss.sites):
                    m = measure(iss.kind, site, float(iss.starts[p]), float(iss.ends[p]))
                    if not np.isfinite(m):
                        continue
                    acc.abs_err += np.abs(iss.values[:, j, p] - m)
                    acc.norm += self.norm_w[iss.kind][site]
                    acc.periods += 1
        self.issues = [i for i in self.issues if not i.judged.all() and now_s - i.issued_s < self.keep_s]

    def rows(self) -> list[QualityRow]:
        """The figures per kind and band, in band order."""
        out = []
        for (kind, band), acc in sorted(self.bands.items()):
            if acc.periods == 0:
                out.append(QualityRow(kind, LEAD_BANDS_H[band], 0, None, dict.fromkeys(REFERENCES)))
                continue
            skill = {
                ref: (None if acc.abs_err[k + 1] <= 0 else float(1.0 - acc.abs_err[0] / acc.abs_err[k + 1]))
                for k, ref in enumerate(REFERENCES)
            }
            out.append(QualityRow(kind, LEAD_BANDS_H[band], acc.periods, float(acc.abs_err[0] / acc.norm), skill))
        return out
