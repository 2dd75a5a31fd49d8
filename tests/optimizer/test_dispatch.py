"""The dispatch planner on a synthetic fleet: netting, hierarchy against the monolithic optimum, interface checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import sparcs.optimizer.pyomo_model as pyomo_model
from sparcs.cli import app
from sparcs.optimizer.baselines import no_control_plan, self_consumption_plan
from sparcs.optimizer.caps import violations
from sparcs.optimizer.dispatch import net_battery_w, plan, plan_hierarchical, plan_monolithic
from sparcs.optimizer.fleet_arrays import fleet_arrays
from sparcs.optimizer.problem import DispatchProblem, period_grid
from sparcs.optimizer.scoring import gap_to_monolithic
from sparcs.optimizer.site_lp import ChunkSolver, SiteSolution, build_chunk
from sparcs.optimizer.synthetic import synthetic_problem
from tests.optimizer.small import setpoints_of, site


@pytest.fixture(scope="module")
def fleet() -> DispatchProblem:
    return synthetic_problem(30, seed=3)


@pytest.fixture(scope="module")
def monolithic(fleet: DispatchProblem):  # type: ignore[no-untyped-def]
    return plan_monolithic(fleet)


def test_interior_point_solution_never_charges_and_discharges_in_one_period(
    fleet: DispatchProblem, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pyomo_model, "SIMPLEX_MAX_CELLS", 0)  # force ipm without crossover
    sol = pyomo_model.solve_model(fleet_arrays(fleet)).solution
    both = np.minimum(sol.charge_w, sol.discharge_w)
    assert sol.charge_w.max() > 1000 and sol.discharge_w.max() > 1000
    assert both.max() < 1.0  # W: losses and wear make a round trip in one period strictly worse


def test_netting_cancels_simultaneous_charge_and_discharge() -> None:
    z = np.zeros((1, 3))
    sol = SiteSolution(z, z, z, np.array([[1000.0, 0.0, 300.0]]), np.array([[400.0, 200.0, 300.0]]))
    assert net_battery_w(sol).tolist() == [[-600.0, 200.0, 0.0]]


def test_plan_is_consistent_and_respects_caps(fleet: DispatchProblem, monolithic) -> None:  # type: ignore[no-untyped-def]
    fa = fleet_arrays(fleet)
    for p in (monolithic, plan_hierarchical(fleet)):
        assert violations(fa, setpoints_of(p, fa)) == []
        assert p.grid_w == pytest.approx(fa.load_w - p.pv_w - p.battery_w)
        assert p.soc_end_kwh == pytest.approx(np.nansum(p.soc[:, -1] * fa.capacity_wh) / 1000.0)


def test_hierarchical_plan_comes_close_to_the_monolithic_optimum(fleet: DispatchProblem, monolithic) -> None:  # type: ignore[no-untyped-def]
    hier = plan_hierarchical(fleet)
    none = no_control_plan(fleet)
    rules = self_consumption_plan(fleet)
    assert monolithic.objective_eur <= hier.objective_eur + 1e-6
    assert hier.objective_eur < rules.objective_eur < none.objective_eur
    assert gap_to_monolithic(hier.objective_eur, monolithic.objective_eur, none.objective_eur) < 0.005


def test_plan_chooses_monolithic_for_small_and_hierarchical_for_large_fleets() -> None:
    assert plan(synthetic_problem(3, periods=8)).reason == "monolithic"
    assert plan(synthetic_problem(25, periods=8)).reason.startswith("hierarchical")


def test_first_period_is_the_rest_of_the_quarter_hour() -> None:
    start, periods = period_grid(1_782_000_000.0 + 420.0, horizon_h=24)
    assert start == 1_782_000_420.0
    assert periods[0] == 480.0
    assert periods.size == 97 and np.all(periods[1:] == 900.0)


def test_a_plan_ends_at_until_s_and_keeps_at_least_its_first_period() -> None:
    now = 1_782_000_000.0 + 420.0  # 7 min into a quarter-hour
    start, periods = period_grid(now, horizon_h=24, until_s=now - 420.0 + 3 * 900.0)
    assert start + periods.sum() == now - 420.0 + 3 * 900.0 and periods.size == 3
    _, last = period_grid(now, horizon_h=24, until_s=now - 420.0 + 900.0)
    assert last.tolist() == [480.0]
    _, beyond = period_grid(now, horizon_h=24, until_s=now + 3 * 86_400.0)
    assert beyond.size == 97  # a later end does not lengthen the horizon


def test_a_bad_forecast_names_the_site() -> None:
    with pytest.raises(ValueError, match=r"site s1: load_w exceeds connection_limit_w .* in period 1;"):
        site([0, 0, 0], [1000, 50_000, 40_000])
    for bad in (np.nan, np.inf, -1.0):
        with pytest.raises(ValueError, match="site s1: pv_available_w must be finite and ≥ 0"):
            site([0, bad], 100)
        with pytest.raises(ValueError, match="site s1: load_w must be finite and ≥ 0"):
            site([0, 0], [100, bad])
    with pytest.raises(ValueError, match="site s1: import_eur_per_kwh must be known"):
        site([0, 0], 100, import_eur_per_kwh=[0.3, np.nan])
    with pytest.raises(ValueError, match=r"site s1: export_eur_per_kwh needs one value or one per period \(2\)"):
        site([0, 0], 100, export_eur_per_kwh=[0.08, 0.08, 0.08])
    assert site([0, 0], 100, import_eur_per_kwh=0.3).import_eur_per_kwh.tolist() == [0.3, 0.3]


def test_bench_dispatch_prints_json_with_the_gap() -> None:
    result = CliRunner().invoke(app, ["bench", "dispatch", "--sites", "25", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("sites", "periods", "build_s", "solve_s", "split_s", "total_s", "peak_rss_mb", "objective"):
        assert key in data
    assert data["sites"] == 25 and data["periods"] == 96
    assert 0.0 <= data["gap_to_monolithic"] < 0.05


def test_hot_started_chunks_reach_the_same_optimum_as_cold_solves() -> None:
    p = synthetic_problem(40, seed=11, periods=24)
    fa = fleet_arrays(p)
    rng = np.random.default_rng(1)
    fa.eta_charge = np.where(fa.has_battery, rng.uniform(0.85, 1.0, fa.shape[0]), 1.0)  # coefficients change too
    targets = np.where(np.isfinite(fa.schedule_w), -fa.load_w + 0.3 * fa.pv_max_w, np.nan)
    chunks = np.array_split(np.flatnonzero(fa.has_battery), 6)
    hot = ChunkSolver(60.0)
    lp_export = fa.lp_export_eur_per_kwh()
    for idx in chunks:
        lp = build_chunk(fa, idx[: chunks[-1].size], targets[idx[: chunks[-1].size]], 1.0, lp_export)
        x_hot = hot.solve(lp)
        x_cold = ChunkSolver(60.0).solve(lp)
        assert lp.cost @ x_hot == pytest.approx(lp.cost @ x_cold, abs=1e-6)
        assert np.all(x_hot >= lp.lower - 1e-6) and np.all(x_hot <= lp.upper + 1e-6)
