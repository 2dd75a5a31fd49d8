"""Tiered polling behind edges (docs/devices.md "Tiered polling"): an inverter or battery read every
sixth poll by its edge is not stale at the central between its reads — the central's stale window is
``stale_after_polls`` of the device's own read interval, as for a directly polled device."""

from __future__ import annotations

import pytest

from tests.edge.conftest import close_world, make_world

pytestmark = pytest.mark.slow


async def test_devices_read_every_sixth_poll_behind_an_edge_stay_online_at_the_central(tmp_path):
    w = await make_world(tmp_path, tiers={"pv_inverter": 60, "battery": 60})
    try:
        seen = set()
        for _ in range(9):  # 90 s of 10 s polls: inverters and batteries read at most twice
            await w.step(10)
            telemetry = w.hub.telemetry(w.clock.now())
            assert {t.status for t in telemetry.values()} == {"online"}, {d: t.error for d, t in telemetry.items()}
            seen |= {t.read_at for t in telemetry.values() if t.kind != "meter"}
        meters = {t.read_at for t in w.hub.telemetry(w.clock.now()).values() if t.kind == "meter"}
        assert meters == {w.clock.now()}  # meters at every poll
        assert len(seen) < 9  # the others kept a reading between their reads
    finally:
        await close_world(w)
