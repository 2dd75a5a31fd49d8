"""The pvlib chain from a weather forecast to AC watts: clear sky in gives the clear-sky curve out."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from sparcs.optimizer.curves import PvGeometry, clearsky_irradiance_w_m2, clearsky_w_per_kwp
from sparcs.optimizer.pv_power import Irradiance, pv_ac_w

GEOM = PvGeometry(51.34, 12.37, 110.0, 30.0, 180.0)
DAY = dt.datetime(2026, 6, 21, tzinfo=dt.UTC).timestamp()
T = DAY + np.arange(4 * 3600, 19 * 3600, 900.0)  # 06:00–21:00 local summer time


def clear_sky(temp_c: float = float("nan")) -> Irradiance:
    ghi, dni, dhi = clearsky_irradiance_w_m2(GEOM, T)
    return Irradiance(T, ghi, np.full(T.size, temp_c), dni, dhi)


def test_a_clear_sky_forecast_gives_the_clear_sky_pv():
    pv = pv_ac_w(GEOM, 8.0, clear_sky())
    assert pv == pytest.approx(clearsky_w_per_kwp(GEOM, T) * 8.0, rel=0.01, abs=5.0)


def test_ghi_alone_is_decomposed_and_lands_near_the_clear_sky_pv():
    w = clear_sky()
    pv = pv_ac_w(GEOM, 8.0, Irradiance(T, w.ghi_w_m2, w.temp_air_c))
    expected = clearsky_w_per_kwp(GEOM, T) * 8.0
    noon = expected > 0.5 * expected.max()
    # Erbs splits a clear sky's GHI into beam and diffuse within a few percent around noon.
    assert np.abs(pv[noon] / expected[noon] - 1.0).max() < 0.08
    assert pv.sum() == pytest.approx(expected.sum(), rel=0.06)


def test_hot_cells_yield_less_and_cold_ones_more():
    reference = pv_ac_w(GEOM, 8.0, clear_sky())
    hot = pv_ac_w(GEOM, 8.0, clear_sky(35.0))
    cold = pv_ac_w(GEOM, 8.0, clear_sky(-5.0))
    noon = int(np.argmax(reference))
    assert hot[noon] < reference[noon] < cold[noon]


def test_the_inverter_clips_at_its_ac_rating_and_night_gives_nothing():
    pv = pv_ac_w(GEOM, 8.0, clear_sky(), ac_limit_w=4000.0)
    assert pv.max() == pytest.approx(4000.0)
    night = T[:1] - 6 * 3600
    ghi = clearsky_irradiance_w_m2(GEOM, night)[0]
    assert pv_ac_w(GEOM, 8.0, Irradiance(night, ghi + 50.0, np.array([10.0]))) == pytest.approx([0.0])
