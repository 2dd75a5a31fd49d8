"""Forecasts: PV clearness learnt and decaying, load level robust to one odd hour, prices with a flat fallback, MAE."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from sparcs.optimizer.curves import PvGeometry, clearsky_w_per_kwp, h0_w_per_annual_kwh
from sparcs.optimizer.forecast import (
    TYPICAL_CLEARNESS,
    Forecast,
    learn_clearness,
    learn_load_level,
    load_forecast,
    price_forecast,
    pv_forecast,
)

GEOM = PvGeometry(51.34, 12.37, 110.0, 30.0, 180.0)
NOON = dt.datetime(2026, 6, 21, 10, 0, tzinfo=dt.UTC).timestamp()
MORNING = NOON - 4 * 3600.0 + 60.0 * np.arange(240)  # the four hours before noon, each minute


def test_clearness_is_learnt_from_daylight_measurements_and_ignores_curtailed_ones() -> None:
    clear = clearsky_w_per_kwp(GEOM, MORNING) * 8.0
    measured = 0.4 * clear
    curtailed = np.zeros(MORNING.size, dtype=bool)
    curtailed[-60:] = True
    measured[-60:] = 100.0  # a limit, not the sky
    assert learn_clearness(GEOM, 8.0, MORNING, measured, curtailed) == pytest.approx(0.4)
    assert learn_clearness(GEOM, 8.0, MORNING, measured) < 0.35
    night = NOON - 12 * 3600.0 + 60.0 * np.arange(60)
    assert learn_clearness(GEOM, 8.0, night, np.zeros(60)) is None


def test_pv_forecast_decays_from_the_learnt_clearness_toward_the_typical_one() -> None:
    t = NOON + np.array([0.0, 3600.0, 24 * 3600.0])
    f = pv_forecast(GEOM, 8.0, NOON, t, clearness_now=0.3)
    ratio = f.values / (clearsky_w_per_kwp(GEOM, t) * 8.0)
    assert ratio[0] == pytest.approx(0.3)
    assert 0.3 < ratio[1] < TYPICAL_CLEARNESS
    assert ratio[2] == pytest.approx(TYPICAL_CLEARNESS, abs=1e-3)
    assert pv_forecast(GEOM, 8.0, NOON, t, clearness_now=None).values / (clearsky_w_per_kwp(GEOM, t) * 8.0) == (
        pytest.approx(TYPICAL_CLEARNESS)
    )


def test_load_level_follows_a_day_of_measurements_but_not_one_odd_hour() -> None:
    t = NOON - 24 * 3600.0 + 900.0 * np.arange(96)
    h0 = h0_w_per_annual_kwh(t) * 4000.0
    assert learn_load_level(4000.0, t, 1.4 * h0) == pytest.approx(1.2)  # shrunk halfway toward 1
    spike = h0.copy()
    spike[40:44] *= 6.0  # one hour with the oven, the kettle and the heat pump at once
    assert learn_load_level(4000.0, t, spike) == pytest.approx(1.0)
    assert learn_load_level(4000.0, t, np.full(96, np.nan)) == 1.0


def test_load_forecast_scales_h0_and_respects_the_fuse() -> None:
    t = NOON + 900.0 * np.arange(4)
    f = load_forecast(4000.0, t, level=1.1, limit_w=500.0)
    assert f.values == pytest.approx(np.minimum(h0_w_per_annual_kwh(t) * 4400.0, 500.0))


def test_prices_come_from_the_series_and_the_flat_tariff_where_it_has_none() -> None:
    t = NOON + 450.0 + 900.0 * np.arange(4)
    series_t = NOON + 900.0 * np.arange(2)
    f = price_forecast(t, series_t, np.array([-20.0, 130.0]), flat_eur_per_mwh=80.0)
    assert f.values.tolist() == [-20.0, 130.0, 80.0, 80.0]
    assert price_forecast(t, None, None, 75.0).values.tolist() == [75.0] * 4


def test_mae_against_later_measurements() -> None:
    f = Forecast(np.array([0.0, 900.0, 1800.0, 2700.0]), np.array([100.0, 200.0, 300.0, 400.0]))
    measured_t = np.array([0.0, 900.0, 1800.0])
    assert f.mae(measured_t, np.array([110.0, 180.0, np.nan])) == pytest.approx(15.0)
    assert np.isnan(f.mae(np.array([10_000.0]), np.array([1.0])))
