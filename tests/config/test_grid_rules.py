"""The grid rules in watts: stages, installer ceiling, and the export cap and ceiling, now and per period."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sparcs.config import grid_rules
from sparcs.config.schema import SiteConfig


def site(kwp: float = 10.0, connection_limit_w: float = 30_000.0, **grid: object) -> SiteConfig:
    return SiteConfig.model_validate(
        {
            "id": "lej-g",
            "location": {"lat": 51.34, "lon": 12.37},
            "pv": {"kwp": kwp, "installer_limit_pct": 70},
            "grid": {"connection_limit_w": connection_limit_w, **grid},
            "devices": [{"id": "lej-g-pv", "kind": "pv_inverter", "port": 15001}],
        }
    )


def test_stage_ceilings_follow_the_domain_rules() -> None:
    rating = 10_000.0
    assert [grid_rules.stage_ceiling_w(k, rating) for k in ("K1", "K2", "K3", "K4")] == [0.0, 3000.0, 6000.0, 10_000.0]
    assert grid_rules.stage_ceiling_w("relay-undefined", rating) == 0.0  # undefined relay state: 0 %
    assert grid_rules.most_restrictive_stage(["K4", "K2", "K3"]) == "K2"
    assert grid_rules.most_restrictive_stage([]) is None


def test_installer_ceiling_is_its_share_of_the_rating() -> None:
    s = site(kwp=8.0)
    assert grid_rules.installer_ceiling_w(s) == pytest.approx(0.7 * s.pv.rating_w)
    assert grid_rules.installer_ceiling_w(s, rating_w=4000.0) == pytest.approx(2800.0)


def test_export_cap_series_is_zero_at_negative_prices_under_the_rule_else_the_feed_in_cap() -> None:
    caps = grid_rules.export_cap_series([6000.0, 7000.0, math.inf], [True, False, True], [30.0, -5.0, 0.0, np.nan])
    assert caps.shape == (3, 4)
    assert caps[0].tolist() == [6000.0, 0.0, 6000.0, 6000.0]  # 0 EUR/MWh and unknown prices are not negative
    assert caps[1].tolist() == [7000.0] * 4  # not under the rule
    assert caps[2].tolist() == [math.inf, 0.0, math.inf, math.inf]  # no feed-in cap, but the rule holds


def test_export_ceiling_series_never_exceeds_the_connection_limit() -> None:
    ceil = grid_rules.export_ceiling_series([6000.0, math.inf], [5000.0, 30_000.0], [True, False], [-1.0, 10.0])
    assert ceil.tolist() == [[0.0, 5000.0], [30_000.0, 30_000.0]]


@pytest.mark.parametrize("price", [None, 40.0, 0.0, -0.01, -300.0])
@pytest.mark.parametrize(
    "grid",
    [
        {"feed_in_cap_pct": 60, "negative_price_rule": True},
        {"feed_in_cap_pct": 70},
        {"negative_price_rule": True},
        {},
    ],
)
def test_export_cap_and_ceiling_now_match_the_rules(grid: dict, price: float | None) -> None:
    s = site(kwp=10.0, connection_limit_w=5000.0, **grid)
    pct = grid.get("feed_in_cap_pct")
    negative = bool(grid.get("negative_price_rule")) and price is not None and price < 0
    cap = 0.0 if negative else (None if pct is None else pct / 100 * 10_000.0)
    assert grid_rules.negative_price_applies(s, price) is negative
    assert grid_rules.export_cap_w(s, price) == cap
    assert grid_rules.export_ceiling_w(s, price) == (5000.0 if cap is None else min(cap, 5000.0))


def test_export_ceiling_now_is_one_period_of_the_series() -> None:
    sites = [
        site(feed_in_cap_pct=60, negative_price_rule=True),
        site(connection_limit_w=4000.0),
        site(feed_in_cap_pct=70),
    ]
    prices = np.array([55.0, -20.0])
    series = grid_rules.export_ceiling_series(
        [math.inf if (c := grid_rules.feed_in_cap_w(s)) is None else c for s in sites],
        [s.grid.connection_limit_w for s in sites],
        [s.grid.negative_price_rule for s in sites],
        prices,
    )
    now = [[grid_rules.export_ceiling_w(s, float(p)) for p in prices] for s in sites]
    assert series.tolist() == now == [[6000.0, 0.0], [4000.0, 4000.0], [7000.0, 7000.0]]


def test_export_ceiling_series_is_the_export_cap_series_bounded_by_the_connection() -> None:
    rng = np.random.default_rng(3)
    n, t = 50, 24
    cap = np.where(rng.random(n) < 0.3, math.inf, rng.uniform(0.0, 20_000.0, n))
    conn = rng.uniform(1000.0, 30_000.0, n)
    rule = rng.random(n) < 0.5
    price = rng.normal(10.0, 40.0, t)
    expected = np.minimum(grid_rules.export_cap_series(cap, rule, price), conn[:, None])
    np.testing.assert_array_equal(grid_rules.export_ceiling_series(cap, conn, rule, price), expected)
