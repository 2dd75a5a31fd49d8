"""Between plans, a fleet-level feedback on every poll moves the batteries to follow the export schedule."""

from __future__ import annotations

import datetime as dt

import pytest
import pytest_asyncio

from sparcs.controller.commands import ScheduleRequest
from sparcs.controller.setpoints import SCHEDULE_CAP_MARGIN, BatteryRoom, battery_room, schedule_feedback
from tests.controller.conftest import make_plan, small_fleet_data
from tests.controller.serving import simulated

EVENING = dt.datetime(2026, 6, 21, 17, 30, tzinfo=dt.UTC).timestamp()  # 19:30 in Leipzig: PV low, caps far


def room(**kw) -> BatteryRoom:
    args = dict(
        command_w=0.0,
        max_discharge_w=3000.0,
        max_charge_w=3000.0,
        soc=0.5,
        soc_min=0.1,
        soc_max=0.9,
        grid_w=-1000.0,
        battery_w=0.0,
        export_cap_w=None,
    )
    args.update(kw)
    return battery_room(**args)


def test_the_room_keeps_caps_soc_bounds_and_never_charges_from_the_grid():
    assert room() == BatteryRoom(more_w=3000.0, less_w=1000.0)  # charging more only what would be exported
    assert room(export_cap_w=2000.0).more_w == pytest.approx(SCHEDULE_CAP_MARGIN * 2000.0 - 1000.0)
    assert room(soc=0.105) == BatteryRoom(0.0, 1000.0)
    assert room(soc=0.895).less_w == 0.0
    assert room(soc=None) == BatteryRoom(0.0, 0.0) == room(battery_w=None)
    # a battery still ramping toward last poll's command: the export is predicted from what it does now
    ramping = room(command_w=500.0, grid_w=-1700.0, battery_w=200.0, export_cap_w=3000.0)
    assert ramping.more_w == pytest.approx(SCHEDULE_CAP_MARGIN * 3000.0 - 1500.0 - 500.0)
    assert room(grid_w=400.0).less_w == 0.0  # an importing site is not charged harder


def test_the_feedback_integrates_the_error_clips_to_the_room_and_splits_by_room():
    rooms = {"a": BatteryRoom(3000.0, 0.0), "b": BatteryRoom(1000.0, 500.0)}
    first = schedule_feedback(2000.0, {}, rooms)
    assert first == pytest.approx({"a": 750.0, "b": 250.0})  # half the error, in proportion to the room
    second = schedule_feedback(2000.0, first, rooms)
    assert sum(second.values()) == pytest.approx(2000.0)
    assert sum(schedule_feedback(1e6, second, rooms).values()) == pytest.approx(4000.0)  # all the room there is
    assert schedule_feedback(-1e6, {}, rooms) == pytest.approx({"b": -500.0})


@pytest_asyncio.fixture
async def fleet(tmp_path):
    data = small_fleet_data(3)
    data["simulation"]["weather"]["cloudiness"] = 0.0
    async with simulated(data, tmp_path / "store", EVENING) as fleet:
        yield fleet


def fleet_export_w(host) -> float:
    return -sum(host.site_truth(s.id)["grid_w"] for s in host.config.sites)


@pytest.mark.asyncio
async def test_the_fleet_follows_the_schedule_between_plans_over_modbus(fleet):
    host, ctl, _clock = fleet
    await ctl.cycle()
    quarter = EVENING - EVENING % 900
    batteries = [s.id for s in host.config.sites if s.battery is not None]
    assert batteries, "the small fleet needs a battery"
    # A plan that holds every battery at 0 W, as if its forecast had missed what the schedule needs.
    ctl.plan = make_plan(quarter, [900.0] * 4, {sid: ([None] * 4, [0.0] * 4) for sid in batteries})
    for _ in range(2):  # written, then in force at the simulators
        await host.step(10)
        await ctl.cycle()
    assert sum(host.site_truth(sid)["battery_w"] for sid in batteries) == pytest.approx(0.0, abs=50.0)
    before = fleet_export_w(host)
    target = max(0.0, before) + 2500.0
    stamp = dt.datetime.fromtimestamp(quarter, dt.UTC)
    points = [{"start": (stamp + dt.timedelta(minutes=15 * i)).isoformat(), "export_w": target} for i in range(4)]
    cmd = ctl.operations.submit(ScheduleRequest.model_validate({"points": points}), "test")
    for _ in range(10):
        await host.step(10)
        await ctl.cycle()  # polls and writes; no dispatch: the plan stays the one above
    assert fleet_export_w(host) == pytest.approx(target, abs=250.0)
    assert sum(host.site_truth(sid)["battery_w"] for sid in batteries) > 2000.0  # the batteries discharge
    ctl.operations.cancel(cmd.id, "test")
    for _ in range(3):
        await host.step(10)
        await ctl.cycle()
    assert ctl.schedule_offsets_w == {}
    assert all(
        abs(ctl.setpoints[d.id].battery_w or 0.0) < 1.0
        for s in host.config.sites
        for d in s.devices
        if d.kind == "battery"
    )
