"""The solver subprocess: a wall-clock bound (also on a stopped process), a restart after a timeout, and fallbacks
that honour the caps."""

from __future__ import annotations

import os
import pickle
import signal
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from sparcs.config.grid_rules import stage_ceiling_w
from sparcs.optimizer.caps import violations
from sparcs.optimizer.fleet_arrays import fleet_arrays
from sparcs.optimizer.problem import DispatchProblem
from sparcs.optimizer.solver import PlanningWorker, fallback_plan
from sparcs.optimizer.synthetic import synthetic_problem
from tests.optimizer.small import battery, problem, setpoints_of, site

PERIODS = 8


@pytest.fixture(scope="module")
def worker() -> Iterator[PlanningWorker]:
    w = PlanningWorker()
    w.start()
    try:
        yield w
    finally:
        w.close()


def fleet(start_offset_s: float = 0.0, stage: str | None = None) -> DispatchProblem:
    """Two sites: one with a capped meter and a battery, one under the negative-price rule."""
    pv = np.linspace(2000, 8000, PERIODS)
    ceiling = np.full(PERIODS, np.nan if stage is None else stage_ceiling_w(stage, 10_000.0))
    a = site(pv, 800, site_id="a", battery=battery(), feed_in_cap_w=6000.0, stage_ceiling_w=ceiling)
    b = site(pv, 500, site_id="b", negative_price_rule=True)
    p = problem([a, b], price=np.where(np.arange(PERIODS) % 3 == 0, -20.0, 60.0))
    p.start_s += start_offset_s
    return p


def assert_caps_hold(problem_: DispatchProblem, plan) -> None:  # type: ignore[no-untyped-def]
    fa = fleet_arrays(problem_)
    assert violations(fa, setpoints_of(plan, fa)) == []
    negative = problem_.price_eur_per_mwh < 0
    assert np.all(plan.grid_w[1, negative] >= -1e-6)  # site b: no export at negative prices


def test_solve_returns_the_optimal_plan(worker: PlanningWorker) -> None:
    p = fleet()
    result = worker.plan(p, timeout_s=60)
    assert result.path == "optimal"
    assert worker.last_good is result
    assert_caps_hold(p, result)


def test_injected_failure_falls_back_to_the_last_good_plan_shifted(worker: PlanningWorker) -> None:
    assert worker.plan(fleet(), timeout_s=60).path == "optimal"
    # 30 minutes later a K3 stage is in force on site a: the shifted plan must obey it.
    later = fleet(start_offset_s=1800.0, stage="K3")
    worker.inject_fault("fail")
    result = worker.plan(later, timeout_s=60)
    assert result.path == "fallback_shifted"
    assert "injected solver failure" in result.reason
    assert np.all(result.pv_w[0] <= 6000.0 + 1e-6)
    assert_caps_hold(later, result)


def test_timeout_kills_the_solver_falls_back_and_the_next_solve_works(worker: PlanningWorker) -> None:
    p = fleet()
    restarts = worker.restarts
    worker.last_good = None
    worker.inject_fault("hang")
    result = worker.plan(p, timeout_s=1.0)
    assert result.path == "fallback_rules"
    assert "timed out" in result.reason
    assert worker.restarts == restarts + 1
    assert_caps_hold(p, result)
    assert worker.plan(p, timeout_s=120).path == "optimal"


def test_fallback_without_overlap_uses_the_rules() -> None:
    p = fleet()
    stale = fallback_plan(p, "first")
    much_later = fleet(start_offset_s=3 * 86_400.0)
    result = fallback_plan(much_later, "solver failed", stale)
    assert result.path == "fallback_rules"
    assert result.reason == "solver failed"
    assert_caps_hold(much_later, result)


def test_shifted_plan_moves_setpoints_to_the_new_periods() -> None:
    big = battery(capacity_kwh=100.0, power_w=5000.0)
    p = problem([site(np.full(PERIODS, 3000.0), 1000, battery=big)])
    old = fallback_plan(p, "seed plan")
    old.battery_w = np.array([[-1000.0, 500.0, -2000.0, 1500.0, 0.0, 700.0, -300.0, 100.0]])
    later = problem([site(np.full(PERIODS, 3000.0), 1000, battery=big)])
    later.start_s += 1800.0
    result = fallback_plan(later, "solver failed", old)
    assert result.path == "fallback_shifted"
    assert result.battery_w[0, :-2] == pytest.approx(old.battery_w[0, 2:])
    # past the old plan's end: self-consumption (charge the 2 kW surplus)
    assert result.battery_w[0, -2:] == pytest.approx([-2000.0, -2000.0])


def test_a_solver_process_that_dies_mid_solve_is_replaced(worker: PlanningWorker) -> None:
    p = fleet()
    worker.start()
    victim = worker._proc
    assert victim is not None
    worker.inject_fault("hang")
    killer = threading.Timer(0.5, victim.kill)  # the solver process this worker started, by its handle
    killer.start()
    try:
        result = worker.plan(p, timeout_s=60)
    finally:
        killer.cancel()
    assert result.path in ("fallback_shifted", "fallback_rules")
    assert "solver process lost" in result.reason
    assert_caps_hold(p, result)
    assert worker.plan(p, timeout_s=120).path == "optimal"


def test_ctrl_c_to_the_process_group_does_not_kill_the_solver(worker: PlanningWorker) -> None:
    assert worker.plan(fleet(), timeout_s=60).path == "optimal"
    assert worker._proc is not None
    os.kill(worker._proc.pid, signal.SIGINT)
    result = worker.plan(fleet(), timeout_s=60)
    assert result.path == "optimal"  # the same process answered: no restart, no fallback
    assert worker._proc.is_alive()


# A stopped or hung solver (issue 20, defect 1). The problem's pickle must exceed the pipe's buffer
# (a few hundred KB) so that a process that does not read blocks the send itself.
BIG_SITES = 1000
BOUND_S = 3.0
# The design promises a fallback within the bound + 1 s. The assertion allows bound + 5 s so that a
# loaded machine does not fail it: it checks the bound holds at all (the old code blocked without
# end), not how fast the fallback is (optimizer/solver.py's docstring gives that figure).
SLACK_S = 5.0


@pytest.fixture(scope="module")
def big_problem() -> DispatchProblem:
    p = synthetic_problem(BIG_SITES)
    assert len(pickle.dumps(p, protocol=pickle.HIGHEST_PROTOCOL)) > 1_000_000
    return p


def pid_of(w: PlanningWorker) -> int:
    assert w._proc is not None and w._proc.pid is not None
    return w._proc.pid


def stopped(pid: int) -> int:
    """SIGSTOP the solver process a worker started (by its pid); returns the pid."""
    os.kill(pid, signal.SIGSTOP)
    return pid


@pytest.mark.slow
def test_a_stopped_solver_cannot_block_the_send_of_a_large_problem(
    worker: PlanningWorker, big_problem: DispatchProblem
) -> None:
    worker.start()
    victim = stopped(pid_of(worker))
    restarts = worker.restarts
    t0 = time.monotonic()
    result = worker.plan(big_problem, timeout_s=BOUND_S)
    took = time.monotonic() - t0
    assert took < BOUND_S + SLACK_S, f"plan returned after {took:.1f} s, bound {BOUND_S} s"
    assert result.path in ("fallback_shifted", "fallback_rules")
    assert "timed out" in result.reason
    assert "sending the problem" in result.reason and "stopped" in result.reason
    assert worker.restarts == restarts + 1
    assert pid_of(worker) != victim
    with pytest.raises(ProcessLookupError):  # killed and reaped, not left stopped
        os.kill(victim, 0)
    assert worker.plan(fleet(), timeout_s=120).path == "optimal"


@pytest.mark.slow
def test_a_solver_stopped_mid_solve_is_replaced_within_the_bound(worker: PlanningWorker) -> None:
    worker.start()
    victim = pid_of(worker)
    worker.inject_fault("hang")  # the solve would never end by itself; stop the process during it
    stopper = threading.Timer(0.5, stopped, args=(victim,))
    stopper.start()
    t0 = time.monotonic()
    try:
        result = worker.plan(fleet(), timeout_s=BOUND_S)
    finally:
        stopper.cancel()
    assert time.monotonic() - t0 < BOUND_S + SLACK_S
    assert "timed out" in result.reason and "solving" in result.reason
    assert pid_of(worker) != victim
    assert worker.plan(fleet(), timeout_s=120).path == "optimal"


@pytest.mark.slow
def test_a_solver_stopped_while_starting_does_not_hold_the_plan() -> None:
    w = PlanningWorker()
    try:
        w._spawn()  # the process starts loading; stop it before it is ready
        stopped(pid_of(w))
        t0 = time.monotonic()
        result = w.plan(fleet(), timeout_s=BOUND_S)
        assert time.monotonic() - t0 < BOUND_S + SLACK_S
        assert result.path == "fallback_rules"
        assert "not ready" in result.reason
    finally:
        w.close()
