"""The hierarchical planner's grouping helpers: sums per plant, tariff shapes, the split-back order
(and the simplex iterations it saves), and the synthetic fleet's memoised tariffs (same values as
without the memo)."""

from __future__ import annotations

import numpy as np

from sparcs.optimizer.aggregate import aggregate, cluster_sites, group_sum, split_order, split_targets, tariff_shapes
from sparcs.optimizer.dispatch import default_clusters
from sparcs.optimizer.fleet_arrays import fleet_arrays
from sparcs.optimizer.pyomo_model import solve_model
from sparcs.optimizer.site_lp import ChunkSolver, battery_chunks, build_chunk
from sparcs.optimizer.synthetic import day_ahead_curve, synthetic_import_price, synthetic_problem


def test_group_sum_equals_adding_row_by_row() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(50, 7))
    labels = rng.integers(0, 6, 50)
    expected = np.zeros((6, 7))
    np.add.at(expected, labels, x)
    assert np.allclose(group_sum(x, labels, 6), expected, rtol=0, atol=1e-12)
    assert group_sum(x[:, 0], labels, 6).shape == (6,)


def test_tariff_shapes_group_the_sites_whose_tariffs_differ_by_a_constant() -> None:
    fa = fleet_arrays(synthetic_problem(60, seed=2))
    imp = fa.import_eur_per_kwh
    steps = np.round((imp - imp.mean(1, keepdims=True)) / 0.02).astype(np.int64)
    shapes = tariff_shapes(fa)
    for i in range(60):
        same = np.all(steps == steps[i], axis=1)
        assert np.array_equal(shapes == shapes[i], same)


def test_split_order_keeps_plants_together_and_orders_them_by_pv_timing_and_fill() -> None:
    fa = fleet_arrays(synthetic_problem(80, seed=4))
    labels = np.arange(80) % 3
    order = split_order(fa, labels)
    assert np.array_equal(np.sort(order), np.arange(80))
    assert np.all(np.diff(labels[order]) >= 0)  # plant after plant


def test_memoised_synthetic_tariffs_are_the_same_series_and_draws() -> None:
    t_s = 1_781_992_800.0 + 900.0 * np.arange(96)
    price = day_ahead_curve(t_s)
    plain, memo_rng = np.random.default_rng(9), np.random.default_rng(9)
    memo: dict[tuple[int, float], np.ndarray] = {}
    for _ in range(300):
        a = synthetic_import_price(plain, t_s, price)
        b = synthetic_import_price(memo_rng, t_s, price, memo)
        assert np.array_equal(a, b)
        b[:] = 0.0  # the caller owns what it got: the memo is not changed through it
    assert 0 < len(memo) < 300
    assert plain.random() == memo_rng.random()


def test_split_order_takes_fewer_simplex_iterations_than_plant_order() -> None:
    """Hot starts from the chunk before are shorter when the sites in one place of neighbouring
    chunks are alike (the split-back's time; iteration counts are deterministic)."""
    n = 400
    problem = synthetic_problem(n, seed=3)
    fa = fleet_arrays(problem)
    labels = cluster_sites(problem, fa, default_clusters(n))
    agg = aggregate(fa, labels)
    targets = split_targets(fa, agg, labels, solve_model(agg, 60.0).solution)
    lp_export = fa.lp_export_eur_per_kwh()

    def iterations(order: np.ndarray) -> int:
        solver = ChunkSolver(60.0)
        for idx in battery_chunks(fa, order, 20):
            solver.solve(build_chunk(fa, idx, targets[idx], fa.schedule_eur_per_kwh, lp_export))
        return solver.iterations

    by_plant = iterations(np.argsort(labels, kind="stable"))
    assert iterations(split_order(fa, labels)) < 0.95 * by_plant
