"""Where a benchmark's processes spend their time, from Linux's /proc: CPU time and time spent
runnable but waiting for a core (the scheduler's run-queue delay), summed over a process's threads.

`sparcs bench load` takes these per phase for the control process, its children and its load
clients, so that a slower loaded poll cycle can be told apart as more work (CPU time per poll up)
or as waiting for a core (run-queue delay up). Figures are cumulative seconds since each thread
started; a phase's figures are differences. On a system without /proc (or a process that ended)
the figures are zero.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class CpuUse:
    """A process's CPU time (``cpu_s``) and run-queue delay (``wait_s``), seconds, all threads summed."""

    cpu_s: float = 0.0
    wait_s: float = 0.0

    def __sub__(self, other: CpuUse) -> CpuUse:
        return CpuUse(self.cpu_s - other.cpu_s, self.wait_s - other.wait_s)

    def __add__(self, other: CpuUse) -> CpuUse:
        return CpuUse(self.cpu_s + other.cpu_s, self.wait_s + other.wait_s)


def parse_schedstat(text: str) -> CpuUse:
    """One ``/proc/<pid>/task/<tid>/schedstat`` line: "on-CPU ns, run-queue wait ns, time slices"."""
    on_cpu_ns, wait_ns, *_ = text.split()
    return CpuUse(int(on_cpu_ns) / 1e9, int(wait_ns) / 1e9)


def _per_thread(pid: int, name: str, proc: Path) -> list[str]:
    """The text of ``/proc/<pid>/task/<tid>/<name>`` for every thread of ``pid``; none once it ended,
    and none for a thread that ended between the listing and the read."""
    texts: list[str] = []
    try:
        tasks = list((proc / str(pid) / "task").iterdir())
    except OSError:
        return texts
    for task in tasks:
        with contextlib.suppress(OSError):
            texts.append((task / name).read_text())
    return texts


def cpu_use(pid: int, proc: Path = PROC) -> CpuUse:
    """The CPU time and run-queue delay of process ``pid`` so far, its threads summed; zero once it ended."""
    return sum((parse_schedstat(text) for text in _per_thread(pid, "schedstat", proc)), CpuUse())


def children(pid: int, proc: Path = PROC) -> list[int]:
    """The process ids of ``pid``'s children (every thread's), from ``/proc/<pid>/task/*/children``."""
    return sorted({int(c) for text in _per_thread(pid, "children", proc) for c in text.split()})


def niceness(pid: int) -> int | None:
    """The nice value of process ``pid``; None once it ended."""
    try:
        return os.getpriority(os.PRIO_PROCESS, pid)
    except OSError:
        return None
