"""PV output from a weather forecast: irradiance and air temperature → AC watts of one array (pvlib).

The chain, per array and time (Unix s, UTC), in the order pvlib documents it:

1. Sun position at the array's place (shared with :mod:`sparcs.optimizer.curves`' one-minute sky
   table, interpolated).
2. Decomposition where only GHI is given: Erbs (GHI → DNI, DHI). Where the forecast gives DNI and
   DHI (Open-Meteo does), they are used as given.
3. Transposition to the plane of the roof: isotropic sky, as the clear-sky curve uses, so that a
   clear-sky forecast gives the clear-sky curve back.
4. Cell temperature: SAPM, close-mounted glass/glass modules (a roof), from plane irradiance, air
   temperature and wind.
5. DC → AC: ``SYSTEM_EFFICIENCY`` (curves) at the reference cell temperature, a power temperature
   coefficient of ``TEMP_COEFF_PER_K`` around it (none where the air temperature is unknown),
   clipped at the inverter's AC rating.

Irradiances are W/m², temperatures °C, wind m/s, power W (≥ 0). Values in a forecast period are
that period's means; callers pass the times they want the output at.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sparcs.optimizer.curves import DAY_S, SYSTEM_EFFICIENCY, PvGeometry, sky_minutes

TEMP_COEFF_PER_K = -0.004
"""Relative change of crystalline-silicon module power per kelvin of cell temperature (typical −0.3…−0.45 %/K)."""
REFERENCE_CELL_C = 45.0
"""Cell temperature at which ``SYSTEM_EFFICIENCY`` holds: a roof array's typical operating temperature
at high irradiance, since that efficiency already includes the typical temperature loss."""
DEFAULT_WIND_M_S = 1.0
"""Wind speed assumed where a forecast gives none: a still roof is the warm (conservative) case."""


@dataclass(frozen=True)
class Irradiance:
    """Irradiance and weather at times ``t_s`` (Unix s, UTC); arrays of one length.

    ``dni_w_m2`` and ``dhi_w_m2`` are optional together: without them the chain decomposes ``ghi_w_m2``.
    """

    t_s: np.ndarray
    ghi_w_m2: np.ndarray
    temp_air_c: np.ndarray
    dni_w_m2: np.ndarray | None = None
    dhi_w_m2: np.ndarray | None = None
    wind_m_s: np.ndarray | None = None


def _sun(geom: PvGeometry, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Apparent zenith and azimuth (degrees) at times ``t``, from the one-minute sky table of each UTC day."""
    zenith = np.empty_like(t)
    azimuth = np.empty_like(t)
    days = np.floor(t / DAY_S).astype(np.int64)
    for day in np.unique(days):
        mask = days == day
        sky = sky_minutes(geom, int(day))
        minute = (t[mask] - day * DAY_S) / 60.0
        grid = np.arange(len(sky))
        zenith[mask] = np.interp(minute, grid, sky["apparent_zenith"].to_numpy())
        # Interpolate the azimuth as a direction, so that north (0/360) does not average to south.
        rad = np.radians(sky["azimuth"].to_numpy())
        s = np.interp(minute, grid, np.sin(rad))
        c = np.interp(minute, grid, np.cos(rad))
        azimuth[mask] = np.degrees(np.arctan2(s, c)) % 360.0
    return zenith, azimuth


def plane_irradiance_w_m2(geom: PvGeometry, weather: Irradiance) -> np.ndarray:
    """Global irradiance on the roof's plane (W/m², ≥ 0) at ``weather.t_s``: steps 1–3 of the chain."""
    import pvlib

    t = np.asarray(weather.t_s, dtype=float)
    ghi = np.clip(np.nan_to_num(np.asarray(weather.ghi_w_m2, dtype=float)), 0.0, None)
    zenith, azimuth = _sun(geom, t)
    if weather.dni_w_m2 is None or weather.dhi_w_m2 is None:
        doy = ((t % (365.2425 * DAY_S)) / DAY_S).astype(int) + 1
        split = pvlib.irradiance.erbs(ghi, zenith, doy)
        dni, dhi = np.asarray(split["dni"], dtype=float), np.asarray(split["dhi"], dtype=float)
    else:
        dni = np.clip(np.nan_to_num(np.asarray(weather.dni_w_m2, dtype=float)), 0.0, None)
        dhi = np.clip(np.nan_to_num(np.asarray(weather.dhi_w_m2, dtype=float)), 0.0, None)
    poa = pvlib.irradiance.get_total_irradiance(
        surface_tilt=geom.tilt_deg,
        surface_azimuth=geom.azimuth_deg,
        solar_zenith=zenith,
        solar_azimuth=azimuth,
        dni=dni,
        ghi=ghi,
        dhi=dhi,
        model="isotropic",
    )
    out = np.nan_to_num(np.asarray(poa["poa_global"], dtype=float), nan=0.0)
    return np.where(zenith < 90.0, np.clip(out, 0.0, None), 0.0)


def cell_temperature_c(poa_w_m2: np.ndarray, temp_air_c: np.ndarray, wind_m_s: np.ndarray | float) -> np.ndarray:
    """Cell temperature (°C) of a close-mounted glass/glass module: pvlib's SAPM model (step 4)."""
    import pvlib

    params = pvlib.temperature.TEMPERATURE_MODEL_PARAMETERS["sapm"]["close_mount_glass_glass"]
    return np.asarray(pvlib.temperature.sapm_cell(poa_w_m2, temp_air_c, wind_m_s, **params), dtype=float)


def pv_ac_w(geom: PvGeometry, kwp: float, weather: Irradiance, ac_limit_w: float | None = None) -> np.ndarray:
    """AC output (W, 0 … ``ac_limit_w``) of an array of ``kwp`` kWp at ``weather.t_s``: the whole chain."""
    poa = plane_irradiance_w_m2(geom, weather)
    temp_air = np.asarray(weather.temp_air_c, dtype=float)
    wind = DEFAULT_WIND_M_S if weather.wind_m_s is None else np.nan_to_num(weather.wind_m_s, nan=DEFAULT_WIND_M_S)
    cell = cell_temperature_c(poa, temp_air, wind)
    # Without an air temperature the cell is taken at the reference: SYSTEM_EFFICIENCY as it stands.
    derate = np.where(np.isfinite(cell), np.clip(1.0 + TEMP_COEFF_PER_K * (cell - REFERENCE_CELL_C), 0.0, None), 1.0)
    ac = poa * kwp * SYSTEM_EFFICIENCY * derate  # 1 kWp yields 1 kW DC at 1000 W/m²
    if ac_limit_w is not None:
        ac = np.minimum(ac, ac_limit_w)
    return np.clip(ac, 0.0, None)
