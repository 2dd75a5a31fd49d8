"""The /proc figures `sparcs bench load` splits a phase's time by: CPU time and run-queue delay of a
process (its threads summed), its children, its niceness."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sparcs.proc_cpu import CpuUse, children, cpu_use, niceness, parse_schedstat

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")


def test_a_schedstat_line_is_cpu_and_wait_in_seconds():
    assert parse_schedstat("1500000000 250000000 42\n") == CpuUse(1.5, 0.25)
    assert CpuUse(2.0, 1.0) - CpuUse(0.5, 0.25) == CpuUse(1.5, 0.75)


def test_cpu_use_sums_every_thread_of_the_process():
    before = cpu_use(os.getpid())
    done, release = threading.Event(), threading.Event()

    def spin() -> None:
        end = time.thread_time() + 0.2
        while time.thread_time() < end:
            pass
        done.set()
        release.wait()  # an ended thread leaves /proc, and its time with it

    worker = threading.Thread(target=spin)
    worker.start()
    done.wait()
    spent = cpu_use(os.getpid()) - before
    release.set()
    worker.join()
    assert spent.cpu_s >= 0.2
    assert spent.wait_s >= 0.0


def test_children_and_their_niceness_and_nothing_for_a_process_that_ended():
    child = subprocess.Popen(
        [sys.executable, "-c", "import os, sys; os.nice(3); sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 30
        while niceness(child.pid) != os.getpriority(os.PRIO_PROCESS, 0) + 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert child.pid in children(os.getpid())
        assert niceness(child.pid) == os.getpriority(os.PRIO_PROCESS, 0) + 3
    finally:
        child.communicate(b"")
    assert child.pid not in children(os.getpid())
    assert cpu_use(child.pid) == CpuUse()
    assert niceness(child.pid) is None
