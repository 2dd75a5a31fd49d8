"""A wall-clock bound on every solve, and the fallback plans.

:class:`PlanningWorker` keeps one long-lived solver subprocess (multiprocessing, spawn): Pyomo's
model building holds the Python lock, so a thread could neither be abandoned nor leave the
controller's polling alone. A solve that has not answered within ``solve_timeout_s`` gets its
process killed (a fresh one is started for the next plan); HiGHS's own ``time_limit`` is set a
little below so that a slow solve usually ends by itself first.

Every call returns a plan. When the solve times out, fails or is infeasible, the plan is the last
good plan shifted to the new periods (re-clamped by the caps in force now), else the rule-based
self-consumption plan; ``path`` says which and ``reason`` why. :meth:`PlanningWorker.inject_fault`
makes the next solve fail or hang, for tests and drills.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import signal
import time
from multiprocessing.connection import Connection
from typing import Literal

import numpy as np

from sparcs.optimizer.baselines import self_consumption_setpoints
from sparcs.optimizer.caps import Setpoints, apply_caps
from sparcs.optimizer.fleet_arrays import FleetArrays, fleet_arrays
from sparcs.optimizer.problem import DispatchPlan, DispatchProblem
from sparcs.optimizer.scoring import plan_from_setpoints

Fault = Literal["fail", "hang"]
HIGHS_SHARE_OF_TIMEOUT = 0.8
STARTUP_TIMEOUT_S = 120.0


def _worker_main(conn: Connection) -> None:
    """Solver process: answer each (problem, time limit, fault) with ("ok", plan) or ("error", text)."""
    # Ctrl-C reaches the whole process group; the parent decides when the solver ends (it sends
    # None or kills it), so the worker must not die with a KeyboardInterrupt traceback of its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from sparcs.optimizer.dispatch import plan  # imported here: the import is the slow part of start-up

    conn.send(("ready", None))
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        problem, time_limit_s, fault = msg
        try:
            if fault == "hang":
                time.sleep(10 * time_limit_s + 3600)
            if fault == "fail":
                raise RuntimeError("injected solver failure")
            conn.send(("ok", plan(problem, time_limit_s)))
        except Exception as exc:
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


def shifted_setpoints(last: DispatchPlan, problem: DispatchProblem, fa: FleetArrays) -> Setpoints | None:
    """The last good plan's setpoints moved onto the new periods, or None when they do not overlap.

    Each new period takes the old period containing its midpoint; sites or periods the old plan does
    not cover take the self-consumption setpoints (full PV, the battery covering the gap to the load).
    A curtailing PV limit is kept as a limit on the new forecast. The caps in force now are applied
    afterwards, once, over the whole mix (vectorised: this is the fallback after a timeout, ~0.5 s at
    10,000 sites).
    """
    mid = problem.period_start_s + problem.period_s / 2
    old_end = last.start_s + np.cumsum(last.period_s)
    covered = (mid >= last.start_s) & (mid < old_end[-1])
    if not covered.any():
        return None
    cols = np.flatnonzero(covered)
    src = np.minimum(np.searchsorted(old_end, mid[cols], side="right"), last.period_s.size - 1)
    pv = fa.pv_max_w.copy()
    bat = fa.load_w - fa.pv_max_w
    index = {sid: i for i, sid in enumerate(last.site_ids)}
    old_rows = [index.get(site.site_id, -1) for site in problem.sites]
    rows = np.array([r for r, i in enumerate(old_rows) if i >= 0], dtype=np.intp)
    olds = np.array([i for i in old_rows if i >= 0], dtype=np.intp)
    if rows.size:
        new_cells, old_cells = np.ix_(rows, cols), np.ix_(olds, src)
        pv[new_cells] = np.minimum(pv[new_cells], last.pv_limit_w[old_cells])
        bat[new_cells] = last.battery_w[old_cells]
    return apply_caps(fa, pv, bat)


def fallback_plan(problem: DispatchProblem, reason: str, last: DispatchPlan | None = None) -> DispatchPlan:
    """The last good plan shifted, else the self-consumption plan; both honour every cap."""
    fa = fleet_arrays(problem)
    if last is not None:
        sp = shifted_setpoints(last, problem, fa)
        if sp is not None:
            return plan_from_setpoints(problem, fa, sp, "fallback_shifted", reason)
    return plan_from_setpoints(problem, fa, self_consumption_setpoints(fa), "fallback_rules", reason)


class PlanningWorker:
    """Plans in a long-lived subprocess with a hard wall-clock bound; always returns a plan.

    Blocking: the controller calls :meth:`plan` from a thread (``asyncio.to_thread``), which only
    waits on a pipe and so leaves the event loop free.
    """

    def __init__(self) -> None:
        self._ctx = mp.get_context("spawn")
        self._proc: mp.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._ready = False
        self._fault: Fault | None = None
        self.last_good: DispatchPlan | None = None
        self.restarts = 0

    def _spawn(self) -> None:
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(target=_worker_main, args=(child,), name="sparcs-solver", daemon=True)
        proc.start()
        child.close()
        self._proc, self._conn, self._ready = proc, parent, False

    def start(self) -> None:
        """Start the solver process (if not running) and wait until it is ready to solve."""
        if self._proc is None or not self._proc.is_alive():
            self._drop()
            self._spawn()
        if self._ready:
            return
        assert self._conn is not None
        if not self._conn.poll(STARTUP_TIMEOUT_S):
            self._drop()
            raise RuntimeError(f"solver process did not start within {STARTUP_TIMEOUT_S:.0f} s")
        self._conn.recv()
        self._ready = True

    def _drop(self) -> None:
        """Kill the solver process, if any, and forget it."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.join()
        if self._conn is not None:
            self._conn.close()
        self._proc, self._conn, self._ready = None, None, False

    def _restart(self) -> None:
        """Replace a stuck or broken solver process; the new one loads while the controller goes on."""
        self._drop()
        self.restarts += 1
        self._spawn()

    def close(self) -> None:
        """Stop the solver process."""
        if self._proc is not None and self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.send(None)
            self._proc.join(timeout=5)
        self._drop()

    def inject_fault(self, fault: Fault | None) -> None:
        """Make the next solve fail (``"fail"``) or never answer (``"hang"``)."""
        self._fault = fault

    def plan(self, problem: DispatchProblem, timeout_s: float | None = None) -> DispatchPlan:
        """Solve ``problem`` within ``timeout_s`` (default: the problem's ``solve_timeout_s``) or fall back."""
        limit = problem.weights.solve_timeout_s if timeout_s is None else timeout_s
        fault, self._fault = self._fault, None
        try:
            self.start()
        except RuntimeError as exc:
            return fallback_plan(problem, str(exc), self.last_good)
        assert self._conn is not None
        t0 = time.perf_counter()
        try:
            self._conn.send((problem, limit * HIGHS_SHARE_OF_TIMEOUT, fault))
            if not self._conn.poll(limit):
                self._restart()
                reason = f"solver timed out after {time.perf_counter() - t0:.1f} s (bound {limit:.1f} s); restarted"
                return fallback_plan(problem, reason, self.last_good)
            status, payload = self._conn.recv()
        except (OSError, EOFError) as exc:  # the process died (killed, out of memory)
            self._restart()
            return fallback_plan(problem, f"solver process lost: {exc!r}; restarted", self.last_good)
        if status == "ok":
            self.last_good = payload
            return payload
        return fallback_plan(problem, f"solver failed: {payload}", self.last_good)
