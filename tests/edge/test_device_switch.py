"""The per-device control switch across the broker (protocol v1 revision 2, docs/edges.md): a device
behind an edge switched to monitor-only at the central is released by its edge (ground truth at the
simulated inverter), reported released, and is controlled again when switched back; an edge of
revision 1 is reported as unable to take the switch."""

from __future__ import annotations

import datetime as dt

import pytest

from sparcs.controller.command_port import switch_control
from sparcs.controller.commands import StageRequest
from sparcs.edge import messages as m

pytestmark = pytest.mark.slow


async def test_a_device_behind_an_edge_switched_to_monitor_only_is_released_by_its_edge(world):
    w = world
    site = w.cfg.sites[0]
    pv = next(d.id for d in site.devices if d.kind == "pv_inverter")
    edge = next(e for e in w.edges.values() if site.id in e.sites)
    # Curtailed by a stage: the inverter holds a limit the edge wrote.
    expires = dt.datetime.fromtimestamp(w.clock.now() + 3600, dt.UTC)
    w.central.commands.submit_stage(StageRequest(stage="K2", sites=[site.id], expires_at=expires), "op", w.clock.now())
    await w.step(10, dispatch=True)
    await w.until(lambda: edge.ctl.commands.stage(site.id, w.clock.now()) is not None, what="the stage at the edge")
    for _ in range(3):
        await w.step(10)
    assert w.host.truth(pv)["limit_w"] == pytest.approx(0.3 * site.pv.rating_w, rel=0.02)

    view = switch_control(w.central, pv, False, "mara")
    assert view["releasing"] is True
    await w.step(10)  # the central publishes the switch with the site's control message
    await w.until(lambda: pv in edge.ctl.device_control.monitor_only, what="the switch at the edge")
    for _ in range(2):
        await w.step(10)  # the edge releases the inverter and acknowledges the release
    await w.until(lambda: pv in w.hub.acks[site.id].released, what="the edge's release ack")
    await w.step(10)
    assert w.central.device_control.releasing == set(), w.central_store.alarms()
    assert not [a for a in w.central_store.alarms(active_only=True) if a["source"] == f"write:{pv}"]
    truth = w.host.truth(pv)
    assert truth["limit_w"] is None and truth["export_limit_w"] is not None  # its installer configuration
    audit = edge.ctl.store.audit_log()
    assert any(a["action"] == "device-control" and a["who"] == "central" for a in audit)

    switch_control(w.central, pv, True, "mara")
    await w.step(10)
    await w.until(lambda: pv not in edge.ctl.device_control.monitor_only, what="the device controlled again")
    for _ in range(2):
        await w.step(10)
    assert w.host.truth(pv)["limit_w"] == pytest.approx(0.3 * site.pv.rating_w, rel=0.02)  # the stage again


async def test_an_edge_of_revision_1_is_reported_as_unable_to_take_the_switch(world):
    w = world
    site = w.cfg.sites[2]
    pv = next(d.id for d in site.devices if d.kind == "pv_inverter")
    edge_id = w.cfg.broker.edge_of(site.id).id
    await w.step(10)
    w.hub.handle(m.state_topic(edge_id), m.encode(m.StateMsg(edge_id, True, w.clock.now(), [site.id], revision=1)))
    switch_control(w.central, pv, False, "mara")
    await w.step(10)
    assert f"write:{pv}" in w.central.alarms.open

    def alarm() -> dict | None:
        return next((a for a in w.central_store.alarms(active_only=True) if a["source"] == f"write:{pv}"), None)

    await w.until(lambda: alarm() is not None, what="the write alarm stored")
    assert "revision 1" in alarm()["message"] and "update the edge" in alarm()["message"]
    assert pv in w.central.device_control.releasing
