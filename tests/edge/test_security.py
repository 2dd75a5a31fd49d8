"""Security: one credential per edge, an ACL per edge at the broker, and the central's own check of
every message's sender."""

from __future__ import annotations

import math

import pytest

from sparcs.config.schema import BrokerConfig, EdgeConfig
from sparcs.controller.store import Store
from sparcs.edge import messages as m
from sparcs.edge.central import START_GRACE_S
from sparcs.edge.link import Credential, client
from sparcs.edge.mosquitto import Mosquitto, acl_text, write_broker_files
from sparcs.factory import build_edge
from tests.controller.conftest import small_fleet_data
from tests.edge.conftest import PASSWORDS

pytestmark = pytest.mark.slow


def forged_telemetry(w, sender: str, site_id: str, seq: int = 1) -> bytes:
    site = w.cfg.site(site_id)
    tel = {d.id: t for d, t in ((d, w.hub.latest.get(d.id)) for d in site.devices) if t is not None}
    return m.encode(m.TelemetryMsg(sender, site_id, seq, w.clock.now(), tel))


async def test_an_edge_with_a_wrong_credential_is_refused_and_alarmed(world):
    w = world
    (w.folder / "edge-2.pw").write_text("not-the-password\n")
    await w.stop_edge("edge-2")
    store = Store(data_dir=w.folder / "rogue")
    node = build_edge(w.host.config, "edge-2", store, w.clock, w.folder / "rogue")
    try:
        await node.start()
        await w.until(lambda: node.link_error is not None, what="the broker's refusal")
        assert "refused the credential" in node.link_error
        assert "broker" in node.ctl.alarms.open  # the edge's own alarm
        for _ in range(int(START_GRACE_S / 10) + 2):  # past the central's start-up grace for devices never heard of
            await w.step(10)
        # the central hears nothing from it: its site's devices are stale and alarmed there
        site = w.cfg.site(w.cfg.broker.edge("edge-2").sites[0])
        open_alarms = {a["source"] for a in w.central_store.alarms(active_only=True)}
        assert all(f"device:{d.id}" in open_alarms for d in site.devices), open_alarms
    finally:
        await node.close()
        store.close()


async def test_the_acl_lets_an_edge_publish_only_its_own_sites(world):
    w = world
    await w.step(10)
    own = w.cfg.broker.edge("edge-2").sites[0]
    other = w.cfg.broker.edge("edge-1").sites[0]
    w.hub.flush()
    before = len(w.central_store.edge_polls(other, 0, math.inf))
    async with client(w.cfg.broker, Credential("edge-2", PASSWORDS["edge-2"], "edge-2-probe")) as c:
        # another edge's site: the broker drops it (ACL), the central never sees it
        await c.publish(m.site_topic(other, "telemetry"), forged_telemetry(w, "edge-2", other, 999), qos=1)
        await c.publish(m.site_topic(own, "ack"), m.encode(m.AckMsg("edge-2", own, w.clock.now(), None, [])), qos=1)
        # it reads its own site's retained commands, and not another edge's
        await c.subscribe(m.site_topic(other, "commands"), qos=1)
        await c.subscribe(m.site_topic(own, "commands"), qos=1)
        got = []
        async for msg in c.messages:
            got.append(str(msg.topic))
            if str(msg.topic) == m.site_topic(own, "commands"):
                break
        assert got == [m.site_topic(own, "commands")]
    await w.until(lambda: own in w.hub.acks, what="the edge's own ack")
    w.hub.flush()
    assert len(w.central_store.edge_polls(other, 0, math.inf)) == before
    assert w.hub.refused == 0


async def test_the_central_refuses_and_alarms_a_message_for_a_site_of_another_edge(tmp_path, world):
    """Behind a broker whose ACL is too wide (a misconfiguration), the central's own check holds."""
    w = world
    await w.step(10)
    other = w.cfg.broker.edge("edge-1").sites[0]
    loose = w.cfg.broker.model_copy(deep=True)
    port = w.broker.port
    w.broker.stop()
    acl = acl_text(loose) + "\nuser edge-2\ntopic write sparcs/v1/#\n"
    files = write_broker_files(w.broker.files.folder, loose, PASSWORDS, port=port)
    files.folder.joinpath("acl").write_text(acl)
    w.broker = Mosquitto(files, port)
    w.broker.start()
    broker = w.cfg.broker.model_copy(update={"ca_file": files.ca})
    await w.until(lambda: w.hub.connected, 30, "central reconnected")
    async with client(broker, Credential("edge-2", PASSWORDS["edge-2"], "edge-2-probe")) as c:
        await c.publish(m.site_topic(other, "telemetry"), forged_telemetry(w, "edge-2", other, 999), qos=1)
    await w.until(lambda: w.hub.refused > 0, what="the central's refusal")
    alarms = [a for a in w.central_store.alarms(active_only=True) if a["source"] == "edge:edge-2:refused"]
    assert alarms and other in alarms[0]["message"] and "edge-1" in alarms[0]["message"]
    w.hub.flush()
    assert 999 not in {r["seq"] for r in w.central_store.edge_polls(other, 0, math.inf)}


def test_the_acl_names_each_edge_and_its_sites_only():
    ids = [s["id"] for s in small_fleet_data(3)["sites"]]
    b = BrokerConfig(edges=[EdgeConfig(id="e1", sites=ids[:2]), EdgeConfig(id="e2", sites=ids[2:])])
    text = acl_text(b)
    e2 = text.split("user e2")[1]
    assert f"topic write sparcs/v1/{ids[2]}/telemetry" in e2 and f"topic read sparcs/v1/{ids[2]}/commands" in e2
    assert ids[0] not in e2 and "#" not in e2
    assert "pattern write sparcs/v1/@edge/%u/state" in text
