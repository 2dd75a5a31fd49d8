"""The broker stopped mid-run: caps hold at the meters, the stored plan is followed, and afterwards
the central's history holds every poll of every edge site exactly once."""

from __future__ import annotations

import math

import pytest

from sparcs.config.grid_rules import feed_in_cap_w

pytestmark = pytest.mark.slow

OUTAGE_S = 60.0
POLL_S = 10.0


def caps_held(w) -> list[str]:
    """The sites whose meter (ground truth) exports more than their cap + 1 %."""
    out = []
    for site in w.cfg.sites:
        cap = feed_in_cap_w(site)
        if cap is not None and -w.host.site_truth(site.id)["grid_w"] > cap * 1.01 + 1.0:
            out.append(site.id)
    return out


async def test_a_broker_outage_loses_no_poll_duplicates_none_and_never_loosens_a_limit(world):
    w = world
    await w.step(POLL_S)
    await w.step(POLL_S, dispatch=True)
    plan = w.central.plan
    assert plan is not None and plan.path == "optimal"
    await w.until(lambda: all(e.planner.plan_id(s) is not None for e in w.edges.values() for s in e.sites))
    for _ in range(2):
        await w.step(POLL_S)
    followed = {e.edge_id: e.ctl.plan for e in w.edges.values()}

    w.broker.stop()  # really stopped: the edges and the central lose the connection
    await w.until(lambda: not any(e.connected for e in w.edges.values()) and not w.hub.connected, what="link lost")
    for _ in range(int(OUTAGE_S / POLL_S)):
        await w.step(POLL_S)
        assert not caps_held(w), "a cap was exceeded at a meter during the outage"
        now = w.clock.now()
        for e in w.edges.values():
            assert e.ctl.plan is followed[e.edge_id], "the edge keeps the plan it stored"
            for site in e.ctl.cfg.sites:
                planned = plan.setpoint(site.id, now)
                for d in site.devices:
                    limit = w.host.truth(d.id).get("limit_w")
                    if d.kind == "pv_inverter" and planned is not None and planned.pv_limit_w is not None:
                        assert limit is not None and limit <= planned.pv_limit_w + 20.0, d.id
    assert all(len(e.outbox) > 0 for e in w.edges.values()), "the edges buffered their polls"
    assert all("broker" in e.ctl.alarms.open for e in w.edges.values())
    # the central saw the edge sites go stale, as it would directly polled ones
    assert all(t.status == "stale" for t in w.hub.telemetry(w.clock.now()).values())

    w.broker.start()
    await w.until(lambda: all(e.connected for e in w.edges.values()) and w.hub.connected, 30, "reconnect")
    await w.until(lambda: all(len(e.outbox) == 0 for e in w.edges.values()), 30, "outboxes sent")
    await w.step(POLL_S)
    assert not caps_held(w)
    w.hub.flush()
    for e in w.edges.values():
        assert "broker" not in e.ctl.alarms.open
        for sid in e.sites:
            rows = w.central_store.edge_polls(sid, 0, math.inf)
            seqs = [r["seq"] for r in rows]
            polls = e.seqs[sid] - 1
            assert seqs == list(range(1, polls + 1)), (sid, seqs)
            ts = [r["ts"] for r in rows]
            assert ts == sorted(ts) and len(set(ts)) == len(ts)
