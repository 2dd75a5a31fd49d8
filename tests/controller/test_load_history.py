"""After a restart the load forecast starts from the store's history, not from H0 (docs/forecasts.md)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from sparcs.controller.store import Store
from sparcs.factory import build_controller
from sparcs.optimizer.curves import BERLIN, h0_w_per_annual_kwh
from sparcs.optimizer.load_profile import day_type_and_slot

HABIT_W = 3000.0  # 07:00–08:00 local on working days
BASE_W = 300.0
MONDAY = dt.date(2026, 4, 20)


class FixedClock:
    def __init__(self, now_s: float):
        self.now_s = now_s

    def now(self) -> float:
        return self.now_s


def habit_w(t: np.ndarray) -> np.ndarray:
    kind, slot = day_type_and_slot(t)
    return np.where((kind == 0) & (slot >= 28) & (slot < 32), HABIT_W, BASE_W)


def store_ten_days(store: Store, site_id: str, end_s: float) -> None:
    """Ten days of one-a-minute site history rows, as the history writer leaves them."""
    t = end_s - 10 * 86_400.0 + 60.0 * np.arange(10 * 1440)
    rows = [
        {"ts": float(ts), "site_id": site_id, "load_w": float(w), "grid_w": float(w)}
        for ts, w in zip(t, habit_w(t), strict=True)
    ]
    store.add_poll([], None, rows)


def morning_forecast(ctl, site_id: str) -> np.ndarray:
    t = dt.datetime.combine(MONDAY, dt.time(7, 0), BERLIN).timestamp() + 450.0 + 900.0 * np.arange(4)
    site = next(s for s in ctl.cfg.sites if s.id == site_id)
    return ctl.planner.load_profiles[site_id].forecast_w(t, site.load.annual_kwh), h0_w_per_annual_kwh(
        t
    ) * site.load.annual_kwh


def test_a_restarted_controller_forecasts_the_load_habits_it_had_stored(store_url, small_cfg):
    now = dt.datetime.combine(MONDAY, dt.time(0, 0), BERLIN).timestamp()
    site_id = small_cfg.sites[0].id
    store = Store(store_url)
    try:
        fresh = build_controller(small_cfg, store, FixedClock(now))
        before, h0 = morning_forecast(fresh, site_id)
        assert before == pytest.approx(h0)  # nothing stored: the standard profile
        fresh.planner.close()
        store_ten_days(store, site_id, now)
        restarted = build_controller(small_cfg, store, FixedClock(now))
        restarted.planner.take_stored_load(wait=True)
        after, h0 = morning_forecast(restarted, site_id)
        restarted.planner.close()
        # 10 days against 3 of prior: the habit dominates (weight ≈ 0.74, less the fading)
        assert (after > 0.6 * HABIT_W).all() and (after > 3 * h0).all()
        other = restarted.planner.load_profiles[small_cfg.sites[1].id]
        assert other.counts.sum() == 0  # another site's history is not mixed in
    finally:
        store.close()
