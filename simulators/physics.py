"""The true PV potential and household load of a site, and the pure maths of batteries and ramps.

Ground truth for the simulators and for the optimizer's perfect-foresight strategy is the same
function: :func:`site_signals` returns a :class:`SiteSignals` whose :meth:`SiteSignals.pv_potential_w`
and :meth:`SiteSignals.load_w` give, for arbitrary Unix times (s, UTC),

- ``pv_potential_w``: the AC power (W, ≥ 0) the site's whole PV array would deliver with no
  limit and no inverter clipping: pvlib clear sky per kWp × kWp × seeded clearness;
- ``load_w``: the household consumption (W, > 0): BDEW H0 per annual kWh × annual kWh × seeded
  noise;

or, with ``simulation.recorded_dir``, a recorded day's clearness (in place of the seeded one) and
load (CSV per site, written by :mod:`twin.history` from the controller's own store).

Both are sampled once per simulated minute of a UTC day and interpolated linearly, so any step
size and any caller see identical values. The inverter's AC rating clips PV per device
(``min(potential × share, rating)``); limits and batteries act on top of that in
:mod:`simulators.site`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from sparcs.config.schema import SimulationConfig, SiteConfig
from sparcs.optimizer.curves import PvGeometry, clearsky_w_per_kwp, h0_w_per_annual_kwh
from sparcs.simulators.weather import DAY_S, clearness, clearness_from_csv, load_factor, recorded_from_csv

SAMPLE_S = 60.0
_SAMPLES = int(DAY_S / SAMPLE_S) + 1


@dataclass
class SiteSignals:
    """PV potential and load of one site as functions of time; cached per UTC day (see module doc)."""

    site: SiteConfig
    sim: SimulationConfig
    _days: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)

    def _day(self, day: int) -> tuple[np.ndarray, np.ndarray]:
        curves = self._days.get(day)
        if curves is None:
            # The last sample (next midnight) is taken a millisecond early so that one day's curve
            # needs only that day's clear sky and profile (each costs tens of ms to compute).
            t = day * DAY_S + np.minimum(np.arange(_SAMPLES) * SAMPLE_S, DAY_S - 1e-3)
            loc, pv = self.site.location, self.site.pv
            geom = PvGeometry(loc.lat, loc.lon, loc.altitude_m, pv.tilt_deg, pv.azimuth_deg)
            weather = self.sim.weather
            if self.sim.recorded_dir is not None:
                k, load_w = recorded_from_csv(self.sim.recorded_dir, self.site.id, t)
            else:
                if weather.irradiance_csv is not None:
                    k = clearness_from_csv(weather.irradiance_csv, t)
                else:
                    k = clearness(self.sim.seed, self.site.id, t, weather.cloudiness)
                load_w = (
                    h0_w_per_annual_kwh(t)
                    * self.site.load.annual_kwh
                    * load_factor(self.sim.seed, self.site.id, t, self.sim.load_noise)
                )
            pv_w = clearsky_w_per_kwp(geom, t) * pv.kwp * k
            if len(self._days) >= 3:  # a replay moves forward: keep yesterday, today, tomorrow
                self._days.pop(min(self._days))
            curves = self._days[day] = (pv_w, load_w)
        return curves

    def _sample(self, which: int, t_s: np.ndarray | float) -> np.ndarray:
        t = np.atleast_1d(np.asarray(t_s, dtype=float))
        days = np.floor(t / DAY_S).astype(np.int64)
        out = np.empty_like(t)
        for day in np.unique(days):
            mask = days == day
            curve = self._day(int(day))[which]
            out[mask] = np.interp((t[mask] - day * DAY_S) / SAMPLE_S, np.arange(_SAMPLES), curve)
        return out

    def pv_potential_w(self, t_s: np.ndarray | float) -> np.ndarray:
        """Whole-array PV AC potential (W, ≥ 0) before clipping and limits, at Unix times ``t_s``."""
        return self._sample(0, t_s)

    def load_w(self, t_s: np.ndarray | float) -> np.ndarray:
        """Household load (W, > 0) at Unix times ``t_s``."""
        return self._sample(1, t_s)

    def at(self, t_s: float) -> tuple[float, float]:
        """``(pv_potential_w, load_w)`` at one time; the simulators' per-tick fast path."""
        day = math.floor(t_s / DAY_S)
        pv, load = self._day(day)
        x = (t_s - day * DAY_S) / SAMPLE_S
        i = min(int(x), _SAMPLES - 2)
        u = x - i
        return (
            float(pv[i] + (pv[i + 1] - pv[i]) * u),
            float(load[i] + (load[i + 1] - load[i]) * u),
        )


def site_signals(site: SiteConfig, sim: SimulationConfig | None = None) -> SiteSignals:
    """The ground-truth PV potential and load of ``site`` under ``sim`` (seed, weather, noise)."""
    return SiteSignals(site, sim if sim is not None else SimulationConfig())


@dataclass(frozen=True)
class BatteryCell:
    """What limits a battery's energy: capacity (Wh), efficiencies (fractions), SoC bounds (0..1)."""

    capacity_wh: float
    eta_charge: float
    eta_discharge: float
    soc_min: float
    soc_max: float


def battery_step(cell: BatteryCell, soc: float, power_w: float, dt_s: float) -> tuple[float, float]:
    """Apply AC power ``power_w`` (> 0 discharge, < 0 charge) for ``dt_s`` seconds.

    Charging stores ``−power × eta_charge``; discharging draws ``power / eta_discharge`` from the
    cells. Power is reduced so that SoC stops exactly at its bounds. Returns ``(power_w, soc)``
    actually achieved.
    """
    if dt_s <= 0:
        return 0.0, soc
    dt_h = dt_s / 3600.0
    if power_w < 0:
        room_wh = max(0.0, cell.soc_max - soc) * cell.capacity_wh
        power_w = max(power_w, -room_wh / (cell.eta_charge * dt_h))
        soc = min(cell.soc_max, soc - power_w * cell.eta_charge * dt_h / cell.capacity_wh)
    elif power_w > 0:
        stored_wh = max(0.0, soc - cell.soc_min) * cell.capacity_wh
        power_w = min(power_w, stored_wh * cell.eta_discharge / dt_h)
        soc = max(cell.soc_min, soc - power_w * dt_h / (cell.eta_discharge * cell.capacity_wh))
    return power_w, soc


def ramp_toward(current: float, target: float, rate_per_s: float, dt_s: float) -> float:
    """Move ``current`` toward ``target`` by at most ``rate_per_s × dt_s``."""
    room = rate_per_s * dt_s
    if abs(target - current) <= room:
        return target
    return current + math.copysign(room, target - current)
