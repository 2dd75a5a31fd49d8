"""Forecast quality: nMAE per lead band and skill against persistence and climatology, bounded memory."""

from __future__ import annotations

import numpy as np
import pytest

from sparcs.optimizer.forecast_quality import ForecastQuality

T0 = 1_780_000_000.0 - (1_780_000_000.0 % 900)


def grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    starts = T0 + 900.0 * np.arange(n)
    return starts, starts + 900.0


def test_errors_land_in_their_lead_band_and_skill_compares_with_the_references():
    q = ForecastQuality({"pv": {"a": 1000.0, "b": 1000.0}})
    starts, ends = grid(12)  # three hours: bands 0-1 h and 1-6 h
    truth = 500.0
    q.issue(
        "pv",
        T0,
        starts,
        ends,
        forecast={"a": np.full(12, 550.0), "b": np.full(12, 450.0)},  # 50 W off
        persistence={"a": np.full(12, 600.0), "b": np.full(12, 400.0)},  # 100 W off
        climatology={"a": np.full(12, 400.0), "b": np.full(12, 700.0)},  # 100 / 200 W off
    )
    q.evaluate(T0 + 2 * 3600, lambda kind, site, start, end: truth)
    rows = {r.band_h: r for r in q.rows()}
    first = rows[(0, 1)]
    assert first.periods == 8 and first.nmae == pytest.approx(0.05)
    assert first.skill["persistence"] == pytest.approx(0.5)
    assert first.skill["climatology"] == pytest.approx(1 - 50 / 150)
    assert rows[(1, 6)].periods == 8  # 4 of 8 periods have ended (per site)
    q.evaluate(T0 + 4 * 3600, lambda kind, site, start, end: truth)
    assert {r.band_h: r.periods for r in q.rows()} == {(0, 1): 8, (1, 6): 16}
    assert q.issues == []  # every period judged: the issue is released


def test_unmeasured_periods_do_not_count_and_issues_are_thinned_and_sampled():
    q = ForecastQuality({"load": {f"s{i}": 500.0 for i in range(1000)}}, max_sites=10, issue_every_s=3600)
    starts, ends = grid(4)
    values = {f"s{i}": np.full(4, 500.0) for i in range(1000)}
    q.issue("load", T0, starts, ends, values, values, values)
    q.issue("load", T0 + 300, starts, ends, values, values, values)  # too soon: not kept
    assert len(q.issues) == 1 and len(q.issues[0].sites) == 10
    q.evaluate(T0 + 3600, lambda kind, site, start, end: float("nan"))
    assert q.rows()[0].periods == 0 and q.rows()[0].nmae is None
