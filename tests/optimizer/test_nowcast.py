"""The city-wide nowcast: a cloud seen by neighbours lowers a site's next-hour forecast."""

from __future__ import annotations

import numpy as np
import pytest

from sparcs.optimizer.nowcast import city_ratios, correction, site_ratio, xy_km


def test_a_cloud_over_the_neighbours_lowers_a_site_without_its_own_measurement():
    # Four sites within a kilometre see a cloud (ratio 0.4); the fifth has no usable sample (its
    # PV is held by a limit); a sixth, 30 km away, sees a clear sky.
    lat = np.array([51.340, 51.345, 51.338, 51.342, 51.341, 51.610])
    lon = np.array([12.370, 12.372, 12.375, 12.368, 12.371, 12.370])
    x, y = xy_km(lat, lon)
    ratios = np.array([0.4, 0.4, 0.4, 0.4, np.nan, 1.0])
    samples = np.array([60, 60, 60, 60, 0, 60])
    r = city_ratios(x, y, ratios, samples)
    assert r[4] < 0.5  # the neighbours' cloud
    assert r[5] == pytest.approx(1.0, abs=0.01)  # too far away to share it
    assert r[:4] == pytest.approx(0.4, abs=0.05)


def test_no_measurement_anywhere_means_no_correction():
    x, y = xy_km(np.array([51.3, 51.4]), np.array([12.3, 12.4]))
    assert city_ratios(x, y, np.array([np.nan, np.nan]), np.zeros(2)).tolist() == [1.0, 1.0]


def test_one_site_alone_is_pulled_toward_no_correction_by_the_prior():
    x, y = xy_km(np.array([51.3]), np.array([12.3]))
    assert city_ratios(x, y, np.array([0.5]), np.array([2]))[0] > 0.8
    assert city_ratios(x, y, np.array([0.5]), np.array([60]))[0] < 0.6


def test_the_correction_fades_with_lead_time_and_ratios_skip_unusable_samples():
    c = correction(0.5, np.array([0.0, 5400.0, 86_400.0]))
    assert c[0] == pytest.approx(0.5) and 0.5 < c[1] < 1.0 and c[2] == pytest.approx(1.0)
    ratio, n = site_ratio(np.array([100.0, 900.0, 50.0]), np.array([200.0, 1000.0, 100.0]), np.array([1, 0, 1], bool))
    assert (ratio, n) == (pytest.approx(0.5), 2)
    assert site_ratio(np.zeros(2), np.zeros(2), np.ones(2, bool))[1] == 0
