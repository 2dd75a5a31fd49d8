"""The edge protocol's messages: round trips, refusals, and the plan an edge follows."""

from __future__ import annotations

import math

import pytest

from sparcs.config.schema import validate_config
from sparcs.controller.store import Store
from sparcs.drivers.telemetry import MISSING, NO_LIMIT, Reading, Telemetry
from sparcs.edge import messages as m
from sparcs.edge.central import site_plan
from sparcs.edge.follow import FollowPlanner, plan_from_sites
from sparcs.edge.outbox import Outbox
from tests.controller.conftest import make_plan, small_fleet_data

T0 = 1_750_500_000.0


def test_telemetry_round_trips_to_the_same_records():
    values = {
        "pv_w": Reading(3012.5, "good"),
        "pv_limit_w": NO_LIMIT,
        "wmax_w": Reading(5000.0, "good"),
        "rating_w": MISSING,
        "energy_wh": Reading(1e7, "bad"),
        "operating_state": MISSING,
        "alarms": MISSING,
    }
    t = Telemetry("pv-1", "s1", "pv_inverter", T0, "online", values, T0, None, [1, 103, 120])
    stale = Telemetry("pv-2", "s1", "pv_inverter", T0, "stale", dict(values), T0 - 60, "no reply", [])
    stale.values.update(pv_w=MISSING)
    msg = m.TelemetryMsg("e1", "s1", 7, T0, {"pv-1": t, "pv-2": stale})
    back = m.decode(m.site_topic("s1", "telemetry"), m.encode(msg), {"pv-1": "pv_inverter", "pv-2": "pv_inverter"})
    assert back == msg


def test_every_message_kind_round_trips():
    stage = m.EdgeCommand(3, "stage", T0, T0 + 60, {"stage": "K2"})
    written = {"pv-1": m.DeviceAck("limit", True, False, 2500.0, "ok")}
    kinds: list[tuple[str, m.Message]] = [
        (m.site_topic("s1", "plan"), m.SitePlanMsg("s1", T0, "optimal", T0, [900.0], T0 + 900, [None], [-5.0], [80.0])),
        (
            m.site_topic("s1", "plan"),
            m.SitePlanMsg("s1", T0, "optimal", T0, [900.0], T0 + 900, [None], [-5.0], [80.0], [0.0]),
        ),
        (m.site_topic("s1", "commands"), m.CommandsMsg("s1", T0, [stage])),
        (m.site_topic("s1", "ack"), m.AckMsg("e1", "s1", T0, T0, [3], written)),
        (m.site_topic("s1", "alarm"), m.AlarmMsg("e1", "s1", T0, "device:pv-1", True, "warning", "stale")),
        (m.state_topic("e1"), m.StateMsg("e1", True, T0, ["s1"])),
    ]
    for topic, msg in kinds:
        assert m.decode(topic, m.encode(msg), {}) == msg


@pytest.mark.parametrize(
    ("topic", "payload"),
    [
        ("sparcs/v1/s1/telemetry", b'{"v": 2, "e": "e1"}'),
        ("sparcs/v1/s1/telemetry", b"not json"),
        ("sparcs/v1/s1/telemetry", b'{"v": 1, "e": "e1", "seq": 1, "ts": 0, "d": {"unknown-dev": {}}}'),
        ("sparcs/v2/s1/telemetry", b'{"v": 1}'),
        ("sparcs/v1/s1/whatever", b'{"v": 1}'),
    ],
)
def test_a_message_of_another_version_or_shape_is_refused_naming_its_topic(topic, payload):
    with pytest.raises(m.MessageError, match=topic.split("/")[0]):
        m.decode(topic, payload, {})


def test_the_site_plan_covers_the_coming_hours_and_the_edge_releases_after_its_validity():
    plan = make_plan(T0, [900.0] * 8, {"s1": ([1000.0] * 8, [None] * 8)})
    sent = site_plan(plan, "s1", T0, hours=1.0)
    assert sent is not None and len(sent.period_s) == 4 and sent.valid_until == T0 + 3600
    msg = m.decode(m.site_topic("s1", "plan"), m.encode(sent), {})
    assert msg == sent
    planner = FollowPlanner()
    assert planner.receive(msg)
    followed = plan_from_sites(planner.sites)
    assert followed.setpoint("s1", T0 + 3599).pv_limit_w == 1000.0
    # the battery's frame: the planned grid exchange and the forecast PV the plan limit is judged by
    assert followed.setpoint("s1", T0 + 3599) == plan.setpoint("s1", T0 + 3599)
    assert followed.pv_available_at("s1", T0 + 3599) == plan.pv_available_at("s1", T0 + 3599)
    assert followed.setpoint("s1", T0 + 3600) is None  # after the validity end: released
    assert not planner.receive(msg), "an old plan again is ignored"


def test_site_plans_of_different_dispatches_join_on_the_newest_grid():
    a = site_plan(make_plan(T0, [900.0] * 4, {"a": ([100.0, 200.0, 300.0, 400.0], [None] * 4)}), "a", T0, 1.0)
    b = site_plan(make_plan(T0 + 900, [900.0] * 4, {"b": ([1.0] * 4, [5.0] * 4)}), "b", T0 + 900, 1.0)
    plan = plan_from_sites({"a": a, "b": b})
    assert plan.start_s == T0 + 900
    assert plan.setpoint("a", T0 + 1000).pv_limit_w == 200.0
    ended = plan.setpoint("a", T0 + 3700)  # a's plan ended: released
    assert ended is not None and ended.pv_limit_w is None and ended.battery_w is None
    assert plan.setpoint("b", T0 + 3700).battery_w == 5.0


def test_the_store_keeps_each_edge_poll_once(tmp_path):
    store = Store(data_dir=tmp_path)
    row = {"site_id": "s1", "seq": 1, "ts": T0, "received_at": T0, "edge_id": "e1", "devices": {}}
    assert store.add_edge_polls([row, {**row, "seq": 2, "ts": T0 + 10}]) == 2
    assert store.add_edge_polls([row, {**row, "seq": 3, "ts": T0 + 20}, {**row, "seq": 3, "ts": T0 + 20}]) == 1
    assert [r["seq"] for r in store.edge_polls("s1", 0, math.inf)] == [1, 2, 3]
    store.close()


def test_the_outbox_is_oldest_first_and_keeps_sequence_numbers_across_restarts(tmp_path):
    box = Outbox(tmp_path / "o.db")
    assert box.next_seqs(["a", "b"]) == {"a": 1, "b": 1}
    box.add([("t/a", b"1"), ("t/b", b"2")], {"a": 1, "b": 1})
    box.add([("t/a", b"3")], {"a": 2})
    first = box.oldest(2)
    assert [p.payload for p in first] == [b"1", b"2"]
    box.done([first[0].id])
    box.close()
    again = Outbox(tmp_path / "o.db")
    assert again.next_seqs(["a", "b"]) == {"a": 3, "b": 2}
    assert [p.payload for p in again.oldest(10)] == [b"2", b"3"]
    again.close()


def test_the_broker_section_names_unknown_and_shared_sites():
    data = small_fleet_data(2)
    ids = [s["id"] for s in data["sites"]]
    data["broker"] = {"edges": [{"id": "e1", "sites": [ids[0], "nope"]}, {"id": "e2", "sites": [ids[0]]}]}
    with pytest.raises(Exception) as exc:
        validate_config(data)
    text = str(exc.value)
    assert "unknown site 'nope'" in text and f"site '{ids[0]}' is polled by edge 'e1' already" in text
