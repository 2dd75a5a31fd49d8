"""Clear-sky PV and the H0 load profile: plausible magnitudes, orientation, DST and annual scaling."""

from __future__ import annotations

import datetime as dt

import numpy as np

from sparcs.optimizer.curves import PvGeometry, clearsky_w_per_kwp, h0_w_per_annual_kwh, quarter_hours_of_local_day

LEIPZIG = dict(lat=51.34, lon=12.37)


def day_times(day: dt.date, step_s: int = 900) -> np.ndarray:
    t0 = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()
    return t0 + np.arange(0, 86_400, step_s)


def test_clear_june_day_yields_typical_rooftop_energy_and_nothing_at_night():
    t = day_times(dt.date(2026, 6, 21), 60)
    w = clearsky_w_per_kwp(PvGeometry(**LEIPZIG, tilt_deg=35, azimuth_deg=180), t)
    kwh_per_kwp = w.sum() * 60 / 3.6e6
    assert 5.5 < kwh_per_kwp < 8.0
    assert w[0] == 0.0 and w[-1] == 0.0  # 00:00 and 23:59 UTC: night in Leipzig
    assert 700 < w.max() < 1000


def test_east_array_peaks_before_west_array():
    t = day_times(dt.date(2026, 6, 21), 60)
    east = clearsky_w_per_kwp(PvGeometry(**LEIPZIG, tilt_deg=40, azimuth_deg=90), t)
    west = clearsky_w_per_kwp(PvGeometry(**LEIPZIG, tilt_deg=40, azimuth_deg=270), t)
    assert t[np.argmax(east)] + 3 * 3600 < t[np.argmax(west)]


def test_winter_yields_far_less_than_summer():
    geom = PvGeometry(**LEIPZIG)
    summer = clearsky_w_per_kwp(geom, day_times(dt.date(2026, 6, 21))).sum()
    winter = clearsky_w_per_kwp(geom, day_times(dt.date(2026, 12, 21))).sum()
    assert winter < 0.35 * summer


def test_h0_scales_to_the_annual_consumption():
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp()
    t = t0 + np.arange(0, 365 * 86_400, 900)
    kwh = (h0_w_per_annual_kwh(t) * 4000.0).sum() * 900 / 3.6e6
    assert abs(kwh - 4000.0) / 4000.0 < 0.01


def test_h0_has_an_evening_peak_in_local_time():
    t = day_times(dt.date(2026, 1, 14))  # a Wednesday in winter, UTC+1
    w = h0_w_per_annual_kwh(t) * 3500
    evening = w[(18 - 1) * 4 : (21 - 1) * 4].mean()  # 18:00-21:00 local
    night = w[(2 - 1) * 4 : (5 - 1) * 4].mean()  # 02:00-05:00 local
    assert evening > 2.5 * night


def test_local_days_have_92_96_or_100_quarter_hours():
    assert len(quarter_hours_of_local_day(dt.date(2026, 3, 29))) == 92
    assert len(quarter_hours_of_local_day(dt.date(2026, 6, 21))) == 96
    assert len(quarter_hours_of_local_day(dt.date(2026, 10, 25))) == 100
