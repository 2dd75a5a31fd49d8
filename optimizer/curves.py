"""Clear-sky PV output and the BDEW household standard load profile, as pure cached functions.

The simulators and the forecasts share these, so physics and forecast differ only by the seeded
weather and noise (docs/definitions.md "Randomness"). Times are Unix seconds (UTC) as numpy arrays: the simulators call
these on every tick for every device, so a call must be a cached array lookup, not a pvlib or
demandlib computation.

- :func:`clearsky_w_per_kwp`: AC power in W per kWp of a PV array under a clear sky (pvlib
  Ineichen clear sky, isotropic transposition, a fixed system efficiency). The sky is computed
  once per place (0.1°) and UTC day, the array's share once per (geometry, day), both at
  one-minute resolution; calls interpolate.
- :func:`h0_w_per_annual_kwh`: household power in W per kWh of annual consumption from BDEW's
  2025 dynamic household profile (demandlib ``H25``) in Europe/Berlin local time with Saxony's
  public holidays. Computed once per UTC year at quarter-hour resolution.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import lru_cache
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from sparcs.config.grid_rules import QUARTER_S

BERLIN = ZoneInfo("Europe/Berlin")
DAY_S = 86_400
SYSTEM_EFFICIENCY = 0.85
"""DC-to-AC yield of a typical rooftop system (temperature, soiling, wiring, inverter), fraction."""


@dataclass(frozen=True)
class PvGeometry:
    """Where a PV array is and how it faces. Degrees; azimuth 180 = south (pvlib convention)."""

    lat: float
    lon: float
    altitude_m: float = 110.0
    tilt_deg: float = 30.0
    azimuth_deg: float = 180.0

    def rounded(self) -> PvGeometry:
        """Geometry rounded so that neighbouring sites share cache entries (0.01° ≈ 1 km).

        The sky itself (sun position, clear-sky irradiance) is shared at 0.1° (≈ 10 km, under a
        minute of solar time); orientation is what differs between neighbouring roofs.
        """
        return PvGeometry(
            round(self.lat, 2),
            round(self.lon, 2),
            round(self.altitude_m, -1),
            round(self.tilt_deg),
            round(self.azimuth_deg),
        )


@lru_cache(maxsize=512)
def _sky_day(lat: float, lon: float, altitude_m: float, day_index: int) -> pd.DataFrame:
    """Solar position and clear-sky irradiance (W/m²) at each minute of one UTC day at a place.

    Shared by every array near that place: the Linke turbidity lookup behind Ineichen reads a
    file, so it runs once per place and day, not once per site.
    """
    import pvlib  # imported here: pvlib costs ~1 s to import and only the clear sky needs it

    start = pd.Timestamp(day_index * DAY_S, unit="s", tz="UTC")
    times = pd.date_range(start, periods=1441, freq="1min")
    loc = pvlib.location.Location(lat, lon, tz="UTC", altitude=altitude_m)
    solpos = loc.get_solarposition(times)
    clear = loc.get_clearsky(times, model="ineichen", solar_position=solpos)
    return pd.concat([solpos[["apparent_zenith", "azimuth"]], clear[["dni", "ghi", "dhi"]]], axis=1)


def sky_minutes(geom: PvGeometry, day_index: int) -> pd.DataFrame:
    """Sun position (degrees) and clear-sky GHI/DNI/DHI (W/m²) at each minute of one UTC day (1441 rows)."""
    g = geom.rounded()
    return _sky_day(round(g.lat, 1), round(g.lon, 1), g.altitude_m, day_index)


def clearsky_irradiance_w_m2(geom: PvGeometry, t_s: np.ndarray | float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clear-sky (GHI, DNI, DHI) in W/m² at Unix times ``t_s`` at the array's place; 0 at night."""
    t = np.atleast_1d(np.asarray(t_s, dtype=float))
    out = np.zeros((3, t.size))
    days = np.floor(t / DAY_S).astype(np.int64)
    for day in np.unique(days):
        mask = days == day
        sky = sky_minutes(geom, int(day))
        minute = (t[mask] - day * DAY_S) / 60.0
        for row, column in enumerate(("ghi", "dni", "dhi")):
            out[row, mask] = np.interp(minute, np.arange(len(sky)), np.nan_to_num(sky[column].to_numpy()))
    return out[0], out[1], out[2]


@lru_cache(maxsize=4096)
def _clearsky_day(geom: PvGeometry, day_index: int) -> np.ndarray:
    """AC W per kWp at each minute of one UTC day (1441 samples, both midnights included)."""
    import pvlib

    sky = sky_minutes(geom, day_index)
    poa = pvlib.irradiance.get_total_irradiance(
        surface_tilt=geom.tilt_deg,
        surface_azimuth=geom.azimuth_deg,
        solar_zenith=sky["apparent_zenith"],
        solar_azimuth=sky["azimuth"],
        dni=sky["dni"],
        ghi=sky["ghi"],
        dhi=sky["dhi"],
        model="isotropic",
    )
    w_per_kwp = np.nan_to_num(poa["poa_global"].to_numpy(), nan=0.0) * SYSTEM_EFFICIENCY
    return np.clip(w_per_kwp, 0.0, None)


def clearsky_w_per_kwp(geom: PvGeometry, t_s: np.ndarray | float) -> np.ndarray:
    """Clear-sky AC output in W per kWp at Unix times ``t_s`` (s, UTC); ≥ 0, 0 at night.

    Rating clipping is not applied here: the inverter's AC rating belongs to the device.
    """
    t = np.atleast_1d(np.asarray(t_s, dtype=float))
    g = geom.rounded()
    days = np.floor(t / DAY_S).astype(np.int64)
    out = np.empty_like(t)
    for day in np.unique(days):
        mask = days == day
        curve = _clearsky_day(g, int(day))
        minute = (t[mask] - day * DAY_S) / 60.0
        out[mask] = np.interp(minute, np.arange(1441), curve)
    return out


def _saxony_holidays(years: range) -> list[dt.date]:
    import holidays

    return sorted(holidays.Germany(subdiv="SN", years=list(years)).keys())


@lru_cache(maxsize=8)
def _h0_utc_year(year: int) -> np.ndarray:
    """W per kWh/a for every UTC quarter-hour of ``year`` (index = quarter since 1 Jan 00:00 UTC)."""
    from demandlib.bdew import H25

    utc = pd.date_range(f"{year}-01-01", f"{year + 1}-01-01", freq="15min", tz="UTC", inclusive="left")
    local = utc.tz_convert(BERLIN).tz_localize(None)
    # The local year can start before and end after the UTC one: build the profile over both edges.
    local_index = pd.date_range(local[0].floor("D"), local[-1].floor("D") + pd.Timedelta(days=1), freq="15min")
    profile = H25(local_index, holidays=_saxony_holidays(range(year - 1, year + 2)))
    # H25 is in kW for 1 GWh/a, so W per kWh/a = kW / 1e6 kWh * 1e3 W/kW.
    return profile.reindex(local).to_numpy(dtype=float) * 1e-3


def h0_w_per_annual_kwh(t_s: np.ndarray | float) -> np.ndarray:
    """Household power in W per kWh of annual consumption at Unix times ``t_s`` (s, UTC); > 0.

    The BDEW profile is a step function of quarter-hours; multiply by a site's ``annual_kwh``.
    """
    t = np.atleast_1d(np.asarray(t_s, dtype=float))
    out = np.empty_like(t)
    years = np.floor(t).astype("datetime64[s]").astype("datetime64[Y]").astype(int) + 1970
    for year in np.unique(years):
        mask = years == year
        start = dt.datetime(int(year), 1, 1, tzinfo=dt.UTC).timestamp()
        idx = ((t[mask] - start) // QUARTER_S).astype(np.int64)
        out[mask] = _h0_utc_year(int(year))[idx]
    return out


def quarter_hours_of_local_day(day: dt.date) -> pd.DatetimeIndex:
    """The quarter-hour starts (UTC) of one Europe/Berlin day: 92, 96 or 100 of them."""
    start = pd.Timestamp(day, tz=BERLIN)
    end = pd.Timestamp(day + dt.timedelta(days=1), tz=BERLIN)
    return pd.date_range(start, end, freq="15min", inclusive="left").tz_convert("UTC")
