"""A device that comes back after a long outage is online again within the back-off cap, over TCP.

The probe of 1,000 devices found stale devices back only ~14 polls after their faults ended: the
back-off grew to 300 s. Here a device of its own (port closed) and a unit behind a gateway
(exception 11) stay offline long enough to reach the longest back-off; the fault is cleared just
after a failed attempt (the worst case), and each must be online again no later than
``dispatch.max_backoff_s`` after the clear, in the very poll that first reaches it.
"""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from pydantic import ValidationError

from sparcs.config.schema import DispatchConfig, FaultSpec
from sparcs.drivers.poller import FleetPoller
from sparcs.simulators.fleet import FleetHost
from tests.drivers.conftest import good, step_and_poll

START = dt.datetime(2026, 6, 21, 10, 0, tzinfo=dt.UTC).timestamp()
POLL_S = 10.0
SETTINGS = DispatchConfig(modbus_timeout_s=0.3, stale_after_polls=2, poll_interval_s=POLL_S)
OUTAGE_POLLS = 70  # > 300 s: the old cap's longest back-off is reached too

FLEET = {
    "simulation": {"seed": 4},
    "sites": [
        {
            "id": own,
            "location": {"lat": 51.34, "lon": 12.37},
            "pv": {"kwp": 6.0},
            "grid": {"feed_in_cap_pct": 60},
            "devices": [
                {"id": f"{own}-pv", "kind": "pv_inverter", "port": port, "unit": 1},
                {"id": f"{own}-meter", "kind": "meter", "port": port if gateway else port + 1, "unit": 2},
            ],
        }
        for own, port, gateway in (("own", 36000, False), ("gw", 36010, True))
    ],
}
DOWN = ("own-pv", "gw-pv")  # own-pv on its own port; gw-pv behind a gateway with gw-meter


async def _outage(host: FleetHost, poller: FleetPoller, device: str) -> list[float]:
    """Keep ``device`` offline for OUTAGE_POLLS polls; the sim times of its attempts."""
    attempts: list[float] = []
    host.inject_fault(FaultSpec(device=device, mode="offline"))
    for _ in range(OUTAGE_POLLS):
        before = poller.state(device).attempt_failures
        tel = await step_and_poll(host, poller, POLL_S)
        if poller.state(device).attempt_failures > before:
            attempts.append(host.clock.now())
        # the neighbour behind the same gateway never pays for the silent unit
        assert all(t.status == "online" for i, t in tel.items() if i != device), tel
    assert tel[device].status == "stale"
    return attempts


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("device", DOWN)
async def test_device_back_from_a_long_outage_is_online_within_the_backoff_cap(fleet, poller, device) -> None:
    host, clock = fleet
    assert (await step_and_poll(host, poller, POLL_S))[device].status == "online"
    attempts = await _outage(host, poller, device)
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    # A failing device is still probed at least every max_backoff_s (60 s), once the back-off is at its cap.
    assert max(gaps) <= SETTINGS.max_backoff_s + 1e-6, gaps
    assert gaps[-1] == pytest.approx(SETTINGS.max_backoff_s), gaps  # the longest back-off was reached

    # Worst case: the fault ends just after a failed attempt. Run on until one has happened.
    while clock.now() != attempts[-1]:
        before = poller.state(device).attempt_failures
        await step_and_poll(host, poller, POLL_S)
        if poller.state(device).attempt_failures > before:
            attempts.append(clock.now())
    host.clear_fault(device)
    cleared = clock.now()
    polls = 0
    while True:
        tel = await step_and_poll(host, poller, POLL_S)
        polls += 1
        if tel[device].status == "online" or polls > 60:
            break
    assert tel[device].status == "online", (polls, tel[device].error)
    assert clock.now() - cleared <= SETTINGS.max_backoff_s + 1e-6, clock.now() - cleared
    # Online with the first poll that reached it again, and its values good at once.
    assert poller.state(device).last_good_at == clock.now()
    assert good(tel[device], "pv_w") == pytest.approx(host.truth(device)["pv_w"], abs=5)


def test_backoff_cap_is_validated_and_lands_on_polls() -> None:
    with pytest.raises(ValidationError, match="max_backoff_s"):
        DispatchConfig(max_backoff_s=300)  # a failing device must be probed at least every 60 s
    with pytest.raises(ValidationError, match="max_backoff_s"):
        DispatchConfig(max_backoff_s=0)
    # A 25 s poll: the cap allows 2 polls (50 s), never 3 (75 s); a cap below one poll tries every poll.
    p = FleetPoller([], DispatchConfig(poll_interval_s=25, max_backoff_s=60), lambda: 0.0)
    assert [p._backoff_s(k) for k in range(1, 6)] == [12.5, 37.5, 37.5, 37.5, 37.5]
    p = FleetPoller([], DispatchConfig(poll_interval_s=120, max_backoff_s=60), lambda: 0.0)
    assert {p._backoff_s(k) for k in range(1, 40)} == {60.0}
