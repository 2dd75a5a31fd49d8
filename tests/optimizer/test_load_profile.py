"""A site's own load profile: learnt per day type and local quarter-hour, shrunk toward H0, across clock changes."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from sparcs.optimizer.curves import BERLIN, h0_w_per_annual_kwh, quarter_hours_of_local_day
from sparcs.optimizer.load_profile import LoadProfile, day_type_and_slot

ANNUAL_KWH = 3500.0


def habit_w(t_s: np.ndarray) -> np.ndarray:
    """A household that runs 3 kW at 06:00-08:00 local on working days and 200 W otherwise."""
    kind, slot = day_type_and_slot(t_s)
    return np.where((kind == 0) & (slot >= 24) & (slot < 32), 3000.0, 200.0)


def period_starts(day: dt.date) -> np.ndarray:
    return np.array([ts.timestamp() for ts in quarter_hours_of_local_day(day)])


def minutes(first: dt.date, days: int) -> np.ndarray:
    start = dt.datetime.combine(first, dt.time(), BERLIN).timestamp()
    return start + 60.0 * np.arange(days * 1440)


def test_day_types_and_slots_follow_the_local_calendar():
    t = np.array(
        [
            dt.datetime(2026, 5, 1, 7, 0, tzinfo=BERLIN).timestamp(),  # Labour Day: a holiday
            dt.datetime(2026, 5, 2, 7, 0, tzinfo=BERLIN).timestamp(),  # Saturday
            dt.datetime(2026, 5, 4, 7, 15, tzinfo=BERLIN).timestamp(),
        ]
    )  # Monday
    kind, slot = day_type_and_slot(t)
    assert kind.tolist() == [2, 1, 0] and slot.tolist() == [28, 28, 29]


def test_after_two_weeks_the_sites_own_habits_dominate_and_without_history_h0_stands():
    profile = LoadProfile()
    t = minutes(dt.date(2026, 4, 6), 14)
    profile.learn(t, habit_w(t))
    monday = period_starts(dt.date(2026, 4, 20)) + 450
    fc = profile.forecast_w(monday, ANNUAL_KWH)
    _, slot = day_type_and_slot(monday)
    morning = (slot >= 24) & (slot < 32)
    assert fc[morning].min() > 2000.0 and fc[~morning].max() < 600.0
    sunday = period_starts(dt.date(2026, 4, 19)) + 450
    assert profile.forecast_w(sunday, ANNUAL_KWH)[morning].max() < 600.0  # Sundays learnt apart
    fresh = LoadProfile().forecast_w(monday, ANNUAL_KWH)
    assert fresh == pytest.approx(h0_w_per_annual_kwh(monday) * ANNUAL_KWH)


def test_one_day_of_history_is_shrunk_toward_h0():
    profile = LoadProfile()
    t = minutes(dt.date(2026, 4, 13), 1)
    profile.learn(t, habit_w(t))
    t_next = dt.datetime(2026, 4, 14, 7, 0, tzinfo=BERLIN).timestamp() + np.array([450.0])
    h0 = h0_w_per_annual_kwh(t_next) * ANNUAL_KWH
    fc = profile.forecast_w(t_next, ANNUAL_KWH)
    assert h0[0] < fc[0] < 0.5 * (h0[0] + 3000.0)  # a quarter of the way: 1 day against 3 of prior


@pytest.mark.parametrize(("day", "quarters"), [(dt.date(2026, 3, 29), 92), (dt.date(2026, 10, 25), 100)])
def test_clock_change_days_are_learnt_and_forecast_by_the_wall_clock(day, quarters):
    periods = period_starts(day)
    assert periods.size == quarters
    profile = LoadProfile()
    t = minutes(day - dt.timedelta(days=14), 14)
    profile.learn(t, habit_w(t))
    fc = profile.forecast_w(periods + 450, ANNUAL_KWH)
    assert fc.shape == (quarters,) and np.isfinite(fc).all()
    _, slot = day_type_and_slot(periods + 450)
    assert slot.min() == 0 and slot.max() == 95
