"""Building a SiteProblem from a site's configuration, and the checks that name what is wrong."""

from __future__ import annotations

import numpy as np
import pytest

from sparcs.config.schema import SiteConfig
from sparcs.optimizer.problem import site_problem


def config(**grid: object) -> SiteConfig:
    return SiteConfig.model_validate(
        {
            "id": "lej-x",
            "location": {"lat": 51.34, "lon": 12.37},
            "pv": {"kwp": 8.0, "installer_limit_pct": 70},
            "battery": {"capacity_kwh": 10, "max_charge_w": 4000, "max_discharge_w": 5000, "soc_initial": 0.4},
            "grid": {"connection_limit_w": 3000, **grid},
            "devices": [{"id": "lej-x-pv", "kind": "pv_inverter", "port": 15001}],
        }
    )


def test_site_problem_converts_config_units_and_rules() -> None:
    s = site_problem(config(feed_in_cap_pct=60, negative_price_rule=True), np.full(4, 5000.0), np.full(4, 500.0))
    assert s.feed_in_cap_w == pytest.approx(4800.0)  # 60 % of 8 kWp, at the meter
    assert s.pv_ceiling_w == pytest.approx(5600.0)  # the installer's 70 % of the 8 kW rating
    assert s.negative_price_rule
    assert s.battery is not None
    assert (s.battery.capacity_wh, s.battery.max_charge_w, s.battery.soc_now) == (10_000.0, 4000.0, 0.4)
    assert np.isnan(s.stage_ceiling_w).all() and not s.para14a.any()


def test_measured_soc_replaces_the_initial_one_and_load_is_clipped_to_the_fuse() -> None:
    s = site_problem(config(), np.zeros(3), np.array([100.0, 2000.0, 9000.0]), soc_now=0.9)
    assert s.battery is not None and s.battery.soc_now == 0.9
    assert s.load_w.tolist() == [100.0, 2000.0, 3000.0]
    assert s.feed_in_cap_w is None


def test_a_negative_stage_ceiling_is_refused_with_the_site_named() -> None:
    with pytest.raises(ValueError, match="site lej-x: stage_ceiling_w must be ≥ 0 W"):
        site_problem(config(), np.zeros(2), np.zeros(2), stage_ceiling_w=np.array([np.nan, -1.0]))
