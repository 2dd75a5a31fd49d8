"""Tiered polling over TCP: meters at every poll, inverters and batteries every n-th poll, and at the
poll after a write (docs/devices.md "Tiered polling")."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import ValidationError

from sparcs.config.schema import DispatchConfig
from sparcs.drivers.writer import Setpoint, SetpointWriter
from tests.drivers.conftest import step_and_poll

START = dt.datetime(2026, 6, 21, 10, 0, tzinfo=dt.UTC).timestamp()
POLL_S = 10.0
SETTINGS = DispatchConfig(poll_interval_s=POLL_S, device_poll_interval_s={"pv_inverter": 30, "battery": 35})
SITES = ("a", "b", "c")

FLEET = {
    "simulation": {"seed": 5},
    "sites": [
        {
            "id": sid,
            "location": {"lat": 51.34, "lon": 12.37},
            "pv": {"kwp": 6.0},
            "grid": {"feed_in_cap_pct": 60},
            "battery": {"capacity_kwh": 10.0, "max_charge_w": 4000, "max_discharge_w": 4000},
            "devices": [
                {"id": f"{sid}-pv", "kind": "pv_inverter", "port": 36100 + 10 * i},
                {"id": f"{sid}-bat", "kind": "battery", "port": 36101 + 10 * i},
                {"id": f"{sid}-meter", "kind": "meter", "port": 36102 + 10 * i},
            ],
        }
        for i, sid in enumerate(SITES)
    ],
}


def test_a_tier_is_the_whole_polls_within_its_interval():
    assert SETTINGS.polls_between_reads("pv_inverter") == 3
    assert SETTINGS.polls_between_reads("battery") == 3  # 35 s holds three 10 s polls
    assert SETTINGS.polls_between_reads("meter") == SETTINGS.polls_between_reads("hybrid") == 1
    slow = SETTINGS.model_copy(update={"poll_interval_s": 60.0})
    assert slow.polls_between_reads("pv_inverter") == 1  # never less often than every poll
    with pytest.raises(ValidationError, match=r"device_poll_interval_s\.meter"):
        DispatchConfig(device_poll_interval_s={"meter": 30})  # the export guard reads meters at every poll
    with pytest.raises(ValidationError, match=r"device_poll_interval_s\.battery"):
        DispatchConfig(device_poll_interval_s={"battery": 0})


@pytest.mark.asyncio(loop_scope="module")
async def test_meters_every_poll_inverters_and_batteries_every_third_spread_over_the_polls(fleet, poller):
    host, clock = fleet
    first = await step_and_poll(host, poller, POLL_S)
    assert all(t.status == "online" and t.read_at == clock.now() for t in first.values())  # all read at start-up
    reads: dict[str, list[int]] = {d: [] for d in first}
    for k in range(1, 10):
        tel = await step_and_poll(host, poller, POLL_S)
        assert all(t.status == "online" for t in tel.values())
        for dev_id, t in tel.items():
            if t.read_at == clock.now():
                reads[dev_id].append(k)
            else:  # not read: the latest reading as it was, never a value made up
                assert clock.now() - t.read_at < 3 * POLL_S
    for sid in SITES:
        assert reads[f"{sid}-meter"] == list(range(1, 10))
    for kind in ("pv", "bat"):
        polls = [reads[f"{sid}-{kind}"] for sid in SITES]
        assert all(len(p) == 3 and p[1] - p[0] == p[2] - p[1] == 3 for p in polls), polls
        assert len({p[0] % 3 for p in polls}) == 3, polls  # each at another poll: the load is spread


@pytest.mark.asyncio(loop_scope="module")
async def test_a_device_written_to_is_read_at_the_next_poll(fleet, poller):
    host, clock = fleet
    await step_and_poll(host, poller, POLL_S)
    writer = SetpointWriter(poller, SETTINGS, clock.now)
    for _ in range(3):  # find a poll after which a-pv is not due
        tel = await step_and_poll(host, poller, POLL_S)
        if tel["a-pv"].read_at == clock.now():
            break
    r = (await writer.apply({"a-pv": Setpoint(pv_limit_w=2000.0)}))["a-pv"]
    assert r.ok and r.action == "limit", r
    tel = await step_and_poll(host, poller, POLL_S)
    assert tel["a-pv"].read_at == clock.now()  # read out of its turn, to confirm the setpoint
    again = (await writer.apply({"a-pv": Setpoint(pv_limit_w=2000.0)}))["a-pv"]
    assert again.action == "unchanged", again  # confirmed by that reading: not written again
    tel = await step_and_poll(host, poller, POLL_S)
    assert tel["a-pv"].read_at < clock.now()  # and back in its tier
