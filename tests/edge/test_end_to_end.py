"""Simulated sites → edges → Mosquitto (TLS, ACL) → central → plan → edges → devices."""

from __future__ import annotations

import math

import pytest
import pytest_asyncio

from sparcs.config.grid_rules import feed_in_cap_w
from tests.edge.conftest import close_world, make_world

pytestmark = pytest.mark.slow


@pytest_asyncio.fixture
async def full_world(tmp_path):
    """The edge world with lej-002's battery full at noon: the plan must limit its PV at the 60 % cap.
    (With room in the batteries the plan charges the surplus at noon and limits nothing.)"""
    w = await make_world(tmp_path, soc_initial={1: 0.95})
    try:
        yield w
    finally:
        await close_world(w)


async def test_the_central_plans_from_edge_telemetry_and_the_edges_put_the_plan_in_force(full_world):
    w = full_world
    await w.step(10)
    # the central's fleet state is built from what the edges sent: every device online
    assert all(t.status == "online" for t in w.hub.telemetry(w.clock.now()).values())
    report = await w.step(10, dispatch=True)
    assert report.dispatched and report.plan_path == "optimal", w.central_store.alarms()
    plan = w.central.plan
    await w.until(
        lambda: all(e.planner.plan_id(s) is not None for e in w.edges.values() for s in e.sites),
        what="every edge holding its sites' plans",
    )
    for _ in range(3):
        await w.step(10)
    await w.until(
        lambda: all(w.hub.acks.get(s.id) and w.hub.acks[s.id].plan_id is not None for s in w.hub.sites),
        what="every edge site acknowledging the plan",
    )
    assert w.hub.plan_acked == {s.id for s in w.hub.sites}  # counted as the plan in force
    now = w.clock.now()
    for e in w.edges.values():
        assert e.ctl.plan is not None
        for sid in e.sites:
            want = plan.setpoint(sid, now)
            got = e.ctl.plan.setpoint(sid, now)
            assert got is not None and want is not None
            assert (got.pv_limit_w is None) == (want.pv_limit_w is None)
            if want.pv_limit_w is not None:
                assert got.pv_limit_w == pytest.approx(want.pv_limit_w)
    # ground truth at the devices: the limit each edge wrote is in force, and every cap holds at the meters
    limited = 0
    for e in w.edges.values():
        for dev, sp in e.ctl.setpoints.items():
            truth = w.host.truth(dev)
            if "limit_w" in truth and sp.pv_limit_w is not None:
                assert truth["limit_w"] == pytest.approx(sp.pv_limit_w, rel=0.02, abs=20.0), dev
                limited += 1
    assert limited, "at noon without clouds the plan limits the inverter of the site whose battery is full"
    for site in w.cfg.sites:
        cap = feed_in_cap_w(site)
        if cap is not None:
            assert -w.host.site_truth(site.id)["grid_w"] <= cap * 1.01 + 1.0, site.id
    # the central history holds every edge poll of every site once, by sequence number
    w.hub.flush()
    for site in w.hub.sites:
        rows = w.central_store.edge_polls(site.id, 0, math.inf)
        seqs = [r["seq"] for r in rows]
        assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) >= 4
