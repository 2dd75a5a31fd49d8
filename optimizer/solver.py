"""A wall-clock bound on every plan, and the fallback plans.

:class:`PlanningWorker` keeps one long-lived solver subprocess (multiprocessing, spawn): Pyomo's
model building holds the Python lock, so a thread could neither be abandoned nor leave the
controller's polling alone. HiGHS's own ``time_limit`` is set a little below the bound so that a
slow solve usually ends by itself first.

One deadline, ``solve_timeout_s`` from the call of :meth:`PlanningWorker.plan`, covers the whole
exchange: waiting for a starting process, sending the problem, the solve, receiving the plan. The
exchange runs in a short-lived helper thread (:class:`_Exchange`) while the caller waits on it with
the deadline. A blocking ``send`` is the problem: the pickled problem (~2.7 MB at 1,000 sites,
~27 MB at 10,000) is far larger than the pipe's buffer, so a stopped or hung process that does not
read blocks the writer, and so does one stopped while sending its plan back. At the deadline the
process is killed (SIGKILL also ends a stopped process); that closes its end of the pipe, so the
helper's blocked write fails with EPIPE or its read sees EOF and the thread ends. The pipe is
closed only after the thread has let go of it, never under it. Why a thread rather than the
alternatives: it keeps multiprocessing's framing and pickling as they are, so the normal path costs
what it did (one thread start per plan, ~0.1 ms; the blocked thread holds no Python lock), and it
bounds the receive as well as the send. Chunked non-blocking writes with ``select`` would
re-implement the framing on both ends; a temp file or shared memory would add a copy and a cleanup
per plan and still need the reply bounded. A process that has not answered is then killed, the
fallback computed, and a fresh process started, which loads while the controller goes on. A
process not yet ready at the deadline also gets a fallback, but is replaced only once it has been
starting for ``STARTUP_TIMEOUT_S`` (a slow start on a loaded machine is no fault).

Every call returns a plan. When the solve times out, fails or is infeasible, the plan is the last
good plan shifted to the new periods (re-clamped by the caps in force now), else the rule-based
self-consumption plan; ``path`` says which and ``reason`` why: for a timeout, the phase it stuck in
(waiting for the process to start, sending the problem, solving, receiving the plan) and the
process's state (e.g. stopped), so the controller's dispatch alarm names it. The fallback is
vectorised over sites (0.3-0.5 s at 10,000 sites) so that it fits the second after the deadline.
:meth:`PlanningWorker.inject_fault` makes the next solve fail or hang, for tests and drills.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import signal
import threading
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
KILL_WAIT_S = 0.5
"""How long to wait for a killed process to be reaped and for the exchange thread to let go of the pipe."""
PROCESS_STATES = {"R": "running", "S": "sleeping", "D": "in uninterruptible sleep", "T": "stopped", "t": "traced"}


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


class _Exchange(threading.Thread):
    """One request to the solver process and its reply, off the caller's thread.

    ``phase`` says where the exchange is, for the reason of a timeout. The thread ends with a reply,
    or with ``error`` once the process is gone (a blocked write fails with EPIPE, a read sees EOF).
    """

    def __init__(self, conn: Connection, request: tuple[DispatchProblem, float, Fault | None]) -> None:
        super().__init__(name="sparcs-solver-exchange", daemon=True)
        self._conn = conn
        self._request: tuple[DispatchProblem, float, Fault | None] | None = request
        self.phase = "sending the problem"
        self.reply: tuple[str, object] | None = None
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            request, self._request = self._request, None
            self._conn.send(request)
            self.phase = "solving"
            self._conn.poll(None)  # readable: the reply has begun (or EOF: recv raises)
            self.phase = "receiving the plan"
            self.reply = self._conn.recv()
        except Exception as exc:  # handed to the caller, which decides
            self.error = exc


def _process_state(pid: int | None) -> str:
    """The process's scheduler state from /proc (Linux), e.g. "stopped"; "" where unknown."""
    if pid is None:
        return ""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return ""
    code = stat[stat.rfind(")") + 2 : stat.rfind(")") + 3]
    return PROCESS_STATES.get(code, code)


class PlanningWorker:
    """Plans in a long-lived subprocess with a hard wall-clock bound; always returns a plan.

    Blocking: the controller calls :meth:`plan` from a thread (``asyncio.to_thread``), which only
    waits (on a pipe while the process starts, on the exchange thread while it solves) and so leaves
    the event loop free. One caller at a time.
    """

    def __init__(self) -> None:
        self._ctx = mp.get_context("spawn")
        self._proc: mp.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._ready = False
        self._spawned_at = 0.0
        self._fault: Fault | None = None
        self.last_good: DispatchPlan | None = None
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        """The solver process's id (None before the first start)."""
        return None if self._proc is None else self._proc.pid

    def _spawn(self) -> None:
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(target=_worker_main, args=(child,), name="sparcs-solver", daemon=True)
        proc.start()
        child.close()
        self._proc, self._conn, self._ready = proc, parent, False
        self._spawned_at = time.monotonic()

    def _await_ready(self, deadline: float) -> bool:
        """Start the process if it is not running; True once it is ready, False at ``deadline``."""
        if self._proc is None or not self._proc.is_alive():
            self._drop()
            self._spawn()
        if self._ready:
            return True
        assert self._conn is not None
        # The ready message is a few bytes, written at once: once readable, recv does not block.
        if not self._conn.poll(max(deadline - time.monotonic(), 0.0)):
            return False
        self._conn.recv()
        self._ready = True
        return True

    def start(self) -> None:
        """Start the solver process (if not running) and wait until it is ready to solve."""
        try:
            ready = self._await_ready(time.monotonic() + STARTUP_TIMEOUT_S)
        except (OSError, EOFError) as exc:
            self._drop()
            raise RuntimeError(f"solver process died while starting: {exc!r}") from exc
        if not ready:
            self._drop()
            raise RuntimeError(f"solver process did not start within {STARTUP_TIMEOUT_S:.0f} s")

    def _drop(self, exchange: _Exchange | None = None) -> None:
        """Kill the solver process, if any, and forget it.

        SIGKILL also ends a stopped process. Its death closes the far end of the pipe, which frees an
        exchange thread blocked on it; the pipe is closed once that thread has let go of it (a thread
        that does not is left with it: closing a descriptor under a blocked call could hit another
        file that reuses the number).
        """
        if self._proc is not None:
            self._proc.kill()
            self._proc.join(timeout=KILL_WAIT_S)
        if exchange is not None:
            exchange.join(timeout=KILL_WAIT_S)
        if self._conn is not None and (exchange is None or not exchange.is_alive()):
            self._conn.close()
        self._proc, self._conn, self._ready = None, None, False

    def _restart(self, exchange: _Exchange | None = None) -> None:
        """Replace a stuck or broken solver process; the new one loads while the controller goes on."""
        self._drop(exchange)
        self.restarts += 1
        self._spawn()

    def close(self) -> None:
        """Stop the solver process."""
        if self._proc is not None and self._conn is not None and self._ready:
            with contextlib.suppress(OSError):
                self._conn.send(None)  # a few bytes into an empty pipe: does not block
            self._proc.join(timeout=5)
        self._drop()

    def inject_fault(self, fault: Fault | None) -> None:
        """Make the next solve fail (``"fail"``) or never answer (``"hang"``)."""
        self._fault = fault

    def plan(self, problem: DispatchProblem, timeout_s: float | None = None) -> DispatchPlan:
        """Solve ``problem`` within ``timeout_s`` (default: the problem's ``solve_timeout_s``) or fall back.

        The bound runs from this call: start-up of the process, send, solve and receive. A fallback
        after a timeout is returned within about the bound + 1 s (the kill, the fallback plan, the
        start of a fresh process).
        """
        t0 = time.monotonic()
        limit = problem.weights.solve_timeout_s if timeout_s is None else timeout_s
        deadline = t0 + limit
        fault, self._fault = self._fault, None

        def elapsed() -> str:
            return f"after {time.monotonic() - t0:.1f} s (bound {limit:.1f} s)"

        try:
            ready = self._await_ready(deadline)
        except (OSError, EOFError) as exc:  # the process died while starting
            self._restart()
            return fallback_plan(problem, f"solver process lost while starting: {exc!r}; restarted", self.last_good)
        if not ready:
            starting = time.monotonic() - self._spawned_at
            state = _process_state(self.pid)
            what = f"solver process not ready {elapsed()}, starting for {starting:.0f} s" + (
                f", process {state}" if state else ""
            )
            if starting < STARTUP_TIMEOUT_S:
                return fallback_plan(problem, f"{what}; still starting", self.last_good)
            self._drop()
            fb = fallback_plan(problem, f"{what}; killed and restarted", self.last_good)
            self.restarts += 1
            self._spawn()
            return fb
        assert self._conn is not None
        highs_limit = max(deadline - time.monotonic(), 0.0) * HIGHS_SHARE_OF_TIMEOUT
        exchange = _Exchange(self._conn, (problem, highs_limit, fault))
        exchange.start()
        exchange.join(max(deadline - time.monotonic(), 0.0))
        if exchange.is_alive():
            phase, state = exchange.phase, _process_state(self.pid)
            reason = f"solver timed out {elapsed()} while {phase}" + (f", process {state}" if state else "")
            # Kill first (frees the CPU a spinning solver holds), plan the fallback, then respawn:
            # the new process's start-up does not compete with the fallback for the CPU.
            self._drop(exchange)
            fb = fallback_plan(problem, f"{reason}; killed and restarted", self.last_good)
            self.restarts += 1
            self._spawn()
            return fb
        if exchange.error is not None:
            # The process died (killed, out of memory), or a message did not (un)pickle: either way
            # the pipe's state is unknown, so the process is replaced.
            what = "lost" if isinstance(exchange.error, (OSError, EOFError)) else "exchange failed"
            self._restart(exchange)
            reason = f"solver process {what} while {exchange.phase}: {exchange.error!r}; restarted"
            return fallback_plan(problem, reason, self.last_good)
        assert exchange.reply is not None
        status, payload = exchange.reply
        if status == "ok" and isinstance(payload, DispatchPlan):
            self.last_good = payload
            return payload
        return fallback_plan(problem, f"solver failed: {payload}", self.last_good)
