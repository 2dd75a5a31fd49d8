"""APScheduler in real time: polls go on while a dispatch overruns, and dispatches never stack."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from sparcs.config.schema import validate_config
from sparcs.controller.commands import StageRequest
from sparcs.controller.cycle import classify_error
from sparcs.controller.scheduler import ControlScheduler, aligned_start
from sparcs.controller.store import Store
from sparcs.factory import build_controller
from sparcs.simulators.fleet import FleetHost
from tests.controller.conftest import small_fleet_data


def test_dispatch_ticks_align_to_the_clock():
    t = dt.datetime(2026, 6, 21, 10, 7, 31, tzinfo=dt.UTC).timestamp()
    assert aligned_start(t, 300) == dt.datetime(2026, 6, 21, 10, 5, tzinfo=dt.UTC)
    assert aligned_start(t, 900) == dt.datetime(2026, 6, 21, 10, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("cannot connect to 127.0.0.1:15001: connection refused or timed out", "connection"),
        ("connection to 127.0.0.1:15001 lost during read: reset", "connection"),
        ("no reply from 127.0.0.1:15001 to read 40000+70 within 1 s", "timeout"),
        ("Modbus exception 4 on 127.0.0.1:15001 read", "exception"),
        ("model 103 expected at 40070, found id 0: rediscovering", "other"),
    ],
)
def test_modbus_errors_are_classified_for_the_metrics(text, kind):
    assert classify_error(text) == kind


@pytest.mark.slow
async def test_an_overrunning_dispatch_never_stacks_under_the_scheduler(tmp_path):
    data = small_fleet_data(2)
    data["dispatch"] = {"poll_interval_s": 0.3, "dispatch_interval_s": 1, "solve_timeout_s": 3}
    host = FleetHost(validate_config(data), auto_ports=True)
    await host.start()
    store = Store(data_dir=tmp_path)
    ctl = build_controller(host.config, store, host.clock)
    running = peak = calls = 0
    real_plan = ctl.planner.plan

    async def counting_plan(*args):
        nonlocal running, peak, calls
        running += 1
        calls += 1
        peak = max(peak, running)
        try:
            return await real_plan(*args)
        finally:
            running -= 1

    ctl.planner.plan = counting_plan
    await asyncio.to_thread(ctl.planner.start)  # as sparcs run does: the hung solve, not the start-up, meets the bound
    ctl.planner.worker.inject_fault("hang")
    sched = ControlScheduler(ctl)
    try:
        sched.start()
        while calls == 0:
            await asyncio.sleep(0.05)
        count_before = _poll_count(ctl)
        while ctl.dispatching:  # the hung solve: about solve_timeout_s
            await asyncio.sleep(0.1)
        assert _poll_count(ctl) > count_before + 2, "polling stopped while the dispatch overran"
        await asyncio.sleep(1.5)  # further ticks after the overrun
    finally:
        await sched.stop()
        await ctl.close()
        alarms = store.alarms()
        store.close()
        await host.stop()
    assert peak == 1
    assert calls >= 2  # dispatching went on after the overrun
    assert any("timed out" in a["message"] for a in alarms if a["source"] == "dispatch")


def _poll_count(ctl) -> float:
    text = ctl.metrics.render().decode()
    line = next(x for x in text.splitlines() if x.startswith("sparcs_poll_cycle_duration_seconds_count"))
    return float(line.split()[-1])


@pytest.mark.slow
async def test_a_burst_of_operator_commands_is_planned_together(tmp_path):
    """Each command asks for a re-plan: the first one after a quiet spell re-plans at once, the ones
    within ``min_replan_interval_s`` of that dispatch share one more."""
    data = small_fleet_data(2)
    data["dispatch"] = {"poll_interval_s": 0.5, "dispatch_interval_s": 3600, "min_replan_interval_s": 2}
    host = FleetHost(validate_config(data), auto_ports=True)
    await host.start()
    store = Store(data_dir=tmp_path)
    ctl = build_controller(host.config, store, host.clock)
    sched = ControlScheduler(ctl)
    expiry = dt.datetime.fromtimestamp(ctl.clock.now() + 3600, dt.UTC)
    try:
        sched.start()
        while ctl.plan is None or ctl.dispatching:  # the start-up dispatch
            await asyncio.sleep(0.05)
        # A quiet spell first: the burst must come more than min_replan_interval_s after the start-up
        # dispatch began, however fast that dispatch was.
        await asyncio.sleep(max(0.0, ctl.last_dispatch_s + 2.0 - ctl.clock.now()) + 0.2)
        first = _dispatch_count(ctl)
        for stage in ("K4", "K3", "K2", "K3", "K4", "K3"):
            ctl.operations.submit(StageRequest(stage=stage, expires_at=expiry), "op")
            await asyncio.sleep(0.1)
        await asyncio.sleep(3.0)
        while ctl.dispatching:
            await asyncio.sleep(0.05)
        assert _dispatch_count(ctl) == first + 2  # six commands: one re-plan at once, one for the other five
        await asyncio.sleep(2.5)  # quiet for longer than the interval: the next command re-plans at once
        ctl.operations.submit(StageRequest(stage="K2", expires_at=expiry), "op")
        await asyncio.sleep(1.0)
        while ctl.dispatching:
            await asyncio.sleep(0.05)
        assert _dispatch_count(ctl) == first + 3
    finally:
        await sched.stop()
        await ctl.close()
        store.close()
        await host.stop()


def _dispatch_count(ctl) -> float:
    text = ctl.metrics.render().decode()
    return sum(float(x.split()[-1]) for x in text.splitlines() if x.startswith("sparcs_dispatch_total{"))
