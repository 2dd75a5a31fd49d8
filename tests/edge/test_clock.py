"""Clock skew between an edge and the central is detected and alarmed."""

from __future__ import annotations

import pytest

from sparcs.edge import messages as m
from sparcs.edge.link import Credential, client
from tests.edge.conftest import PASSWORDS

pytestmark = pytest.mark.slow


async def test_an_edge_clock_a_minute_ahead_raises_the_clock_alarm_and_a_true_one_clears_it(world):
    w = world
    await w.step(10)

    async def states(offset_s: float) -> None:
        async with client(w.cfg.broker, Credential("edge-2", PASSWORDS["edge-2"], "edge-2-clock")) as c:
            for _ in range(2):
                msg = m.StateMsg("edge-2", True, w.clock.now() + offset_s, w.cfg.broker.edge("edge-2").sites)
                await c.publish(m.state_topic("edge-2"), m.encode(msg), qos=1)

    def open_alarms() -> set[str]:
        return {a["source"] for a in w.central_store.alarms(active_only=True)}

    await states(60.0)
    await w.until(lambda: "edge:edge-2:clock" in open_alarms(), what="the clock alarm")
    assert w.hub.skew_s["edge-2"] == pytest.approx(60.0, abs=2.0)
    await states(0.0)
    await states(0.0)
    await w.until(lambda: "edge:edge-2:clock" not in open_alarms(), what="the clock alarm cleared")
    assert "edge:edge-1:clock" not in open_alarms()
