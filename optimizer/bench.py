"""`sparcs bench dispatch`: plan a seeded synthetic fleet and report timings, memory and quality.

Timings cover the planner from a ready problem (forecast inputs ready) to final per-site
setpoints: ``build_s`` (model building), ``solve_s`` (the fleet or aggregate solve), ``split_s``
(split-back, per-site LPs, repair and caps), ``total_s`` (wall clock of :func:`optimizer.dispatch.plan`),
``cpu_s`` (CPU time of all its threads), ``problem_s`` (making the synthetic problem, per-site
tariffs included), ``end_to_end_s`` (``problem_s`` + ``total_s``), ``peak_rss_mb`` (the process's
peak resident memory) and ``load_avg_1m`` (the machine's load: on a shared machine wall-clock times
inflate with it).
For fleets up to :data:`GAP_MAX_SITES` the monolithic optimum and the no-control baseline are also
computed, after the timed run, for ``gap_to_monolithic`` (docs/definitions.md "Gap to the monolithic
optimum").
"""

from __future__ import annotations

import contextlib
import os
import resource
import sys
import time
from collections.abc import Iterator
from typing import Any

from sparcs.optimizer.baselines import no_control_plan
from sparcs.optimizer.dispatch import plan, plan_monolithic
from sparcs.optimizer.scoring import gap_to_monolithic
from sparcs.optimizer.synthetic import synthetic_problem

GAP_MAX_SITES = 100


@contextlib.contextmanager
def _native_stdout_to_stderr() -> Iterator[None]:
    """Send what native code prints to stdout (HiGHS's banner) to stderr, keeping ``--json`` clean."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def dispatch_bench(sites: int, seed: int = 7, periods: int = 96) -> dict[str, Any]:
    """Run the benchmark for ``sites`` synthetic sites × ``periods`` quarter-hours; a JSON-ready dict."""
    with _native_stdout_to_stderr():
        return _run(sites, seed, periods)


def _run(sites: int, seed: int, periods: int) -> dict[str, Any]:
    tp = time.perf_counter()
    problem = synthetic_problem(sites, seed=seed, periods=periods)
    problem_s = time.perf_counter() - tp
    t0, c0 = time.perf_counter(), time.process_time()
    result = plan(problem, time_limit_s=600.0)
    total, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    gap = None
    mono_obj = none_obj = None
    if sites <= GAP_MAX_SITES:
        mono_obj = plan_monolithic(problem, 600.0).objective_eur
        none_obj = no_control_plan(problem).objective_eur
        gap = gap_to_monolithic(result.objective_eur, mono_obj, none_obj)
    return {
        "sites": sites,
        "periods": problem.periods,
        "method": result.reason,
        "build_s": round(result.build_s, 3),
        "solve_s": round(result.solve_s, 3),
        "split_s": round(result.split_s, 3),
        "total_s": round(total, 3),
        "problem_s": round(problem_s, 3),
        "end_to_end_s": round(problem_s + total, 3),
        "cpu_s": round(cpu, 3),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "peak_rss_mb": round(peak_rss_mb, 1),
        "objective": round(result.objective_eur, 4),
        "objective_monolithic": None if mono_obj is None else round(mono_obj, 4),
        "objective_no_control": None if none_obj is None else round(none_obj, 4),
        "gap_to_monolithic": None if gap is None else round(gap, 6),
        "soc_end_kwh": round(result.soc_end_kwh, 3),
        "seed": seed,
    }
