"""The central cycle leaves to the edges what they do on every poll themselves (docs/edges.md "Benchmark").

A site behind an edge stays in the central's fleet state, plan, history and API; its export guard
and its setpoints are its edge's (edge/node.py), so the central's cycle computes neither for it.
A fake poller and writer stand for the two transports: no broker is needed to see what the cycle
computes and hands to the writer.
"""

from __future__ import annotations

import math

import pytest

from sparcs.config.grid_rules import feed_in_cap_w
from sparcs.config.schema import validate_config
from sparcs.controller.commands import CommandBook
from sparcs.controller.cycle import Controller
from sparcs.controller.device_control import DeviceControl
from sparcs.controller.plan import Plan
from sparcs.controller.read_model import ControllerView
from sparcs.controller.state import FleetState
from sparcs.controller.store import Store
from sparcs.drivers.telemetry import Telemetry
from sparcs.drivers.writer import Setpoint, WriteResult
from sparcs.edge import messages as m
from sparcs.factory import build_controller
from sparcs.optimizer.forecast_quality import QualityRow
from tests.controller.conftest import make_plan, site_telemetry, small_fleet_data
from tests.edge.conftest import edge_fleet_data

EXPORT_W = 14000.0  # above every small-fleet site's feed-in cap: the guard acts on each site it checks
EDGE_SITE = "lej-003"


class Clock:
    def now(self) -> float:
        return 100.0  # the read time of tests.controller.conftest.tel


class Poller:
    def __init__(self, telemetry: dict[str, Telemetry]):
        self.telemetry = telemetry

    async def poll_once(self) -> dict[str, Telemetry]:
        return self.telemetry

    def state(self, device_id: str) -> object:
        return type("State", (), {"attempt_failures": 0})()

    async def close(self) -> None:
        pass


class Writer:
    """Records the setpoints the cycle hands over."""

    def __init__(self) -> None:
        self.applied: list[dict[str, Setpoint]] = []

    async def apply(self, setpoints: dict[str, Setpoint]) -> dict[str, WriteResult]:
        self.applied.append(dict(setpoints))
        return {}

    async def refresh_due(self) -> dict[str, WriteResult]:
        return {}

    async def release(self, device_ids: list[str]) -> dict[str, WriteResult]:
        return {}


class FixedPlanner:
    def __init__(self, plan: Plan):
        self.fixed = plan

    def observe(self, state: FleetState) -> None:
        pass

    def restore(self, plan: Plan) -> None:
        pass

    async def plan(self, state: FleetState, commands: CommandBook, now_s: float) -> Plan | None:
        return self.fixed

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass

    def forecast_quality(self) -> list[QualityRow]:
        return []


@pytest.mark.asyncio
@pytest.mark.parametrize("edge_sites", [frozenset(), frozenset({EDGE_SITE})])
async def test_the_cycle_neither_guards_nor_writes_an_edge_site_but_keeps_it_in_state_plan_and_api(
    tmp_path, edge_sites
):
    cfg = validate_config(small_fleet_data(3))
    assert all(feed_in_cap_w(s) < EXPORT_W for s in cfg.sites)
    telemetry = {k: v for s in cfg.sites for k, v in site_telemetry(s, pv=16000.0, grid=-EXPORT_W).items()}
    store = Store(data_dir=tmp_path)
    clock = Clock()
    writer = Writer()
    plan = make_plan(0.0, [900.0], {s.id: ([2000.0], [0.0]) for s in cfg.sites})
    ctl = Controller(
        cfg,
        store,
        clock,
        poller=Poller(telemetry),
        writer=writer,
        planner=FixedPlanner(plan),
        device_control=DeviceControl(store, cfg, clock.now),
        edge_sites=edge_sites,
    )
    try:
        report = await ctl.cycle(dispatch=True)
        written = {s.id for s in cfg.sites if s.id not in edge_sites}
        # the edge site is in the fleet state and the plan like the others
        assert set(ctl.state.sites) == {s.id for s in cfg.sites} and ctl.state.sites[EDGE_SITE].grid_w == -EXPORT_W
        assert report.dispatched and set(ctl.plan.sites) == {s.id for s in cfg.sites}
        # guarded and written only where this controller writes
        assert set(report.guarded_sites) == set(ctl.guard_w) == written
        devices = {d.id for s in cfg.sites if s.id in written for d in s.devices if d.kind != "meter"}
        assert set(ctl.setpoints) == devices == set(writer.applied[-1])
        pv = next(d.id for d in cfg.site("lej-001").devices if d.kind == "pv_inverter")
        assert ctl.setpoints[pv].pv_limit_w is not None and ctl.setpoints[pv].pv_limit_w <= 2000.0
        # the API shows the edge site's measurements; its guard and setpoints are its edge's
        view = ControllerView.of(ctl)
        site = next(s for s in view.sites() if s["id"] == EDGE_SITE)
        assert site["now"]["grid_w"] == -EXPORT_W
        assert (site.get("guard_limit_w") is None) == (EDGE_SITE in edge_sites)
        edge_pv = f"{EDGE_SITE}-pv"
        dev = view.device(edge_pv)
        assert dev is not None and dev["values"]["pv_w"]["value"] == 16000.0
        assert (dev.get("setpoint") is None) == (EDGE_SITE in edge_sites)
        assert math.isfinite(ctl.export_cap_w(EDGE_SITE, clock.now()) or 0.0)  # its caps are still answered
    finally:
        await ctl.close()
        store.close()


def test_the_factory_hands_the_sites_behind_edges_to_the_cycle(tmp_path):
    cfg = validate_config(edge_fleet_data(tmp_path, 1883, None))
    assert cfg.broker is not None
    store = Store(data_dir=tmp_path / "central")
    try:
        ctl = build_controller(cfg, store, Clock(), planner=FixedPlanner(make_plan(0.0, [900.0])))
        assert ctl.edge_sites == {sid for e in cfg.broker.edges for sid in e.sites} != set()
        plain = build_controller(cfg.model_copy(update={"broker": None}), store, Clock(), planner=ctl.planner)
        assert plain.edge_sites == frozenset()
    finally:
        store.close()


class PublishingClient:
    """What :meth:`EdgeHub.publish` needs of the broker connection: every message acknowledged at once."""

    def __init__(self) -> None:
        self.topics: list[str] = []

    async def publish(self, topic: str, payload: bytes, **_kw: object) -> None:
        self.topics.append(topic)


@pytest.mark.asyncio
async def test_the_hub_counts_the_sites_whose_edge_acknowledged_the_plan_in_force(tmp_path):
    cfg = validate_config(edge_fleet_data(tmp_path, 1883, None))
    assert cfg.broker is not None
    store = Store(data_dir=tmp_path / "central")
    try:
        ctl = build_controller(cfg, store, Clock(), planner=FixedPlanner(make_plan(0.0, [900.0])))
        hub = ctl.writer.edge.hub  # type: ignore[attr-defined]
        client = PublishingClient()
        hub._client = client  # connected, as after its session's subscriptions
        sites = [s.id for s in cfg.sites]

        def ack(site: str, plan_id: float | None) -> None:
            edge = hub.edge_of_site[site]
            hub.handle(m.site_topic(site, "ack"), m.encode(m.AckMsg(edge, site, 100.0, plan_id, [])))

        ctl.plan = make_plan(0.0, [900.0] * 4, {s: ([1000.0] * 4, [0.0] * 4) for s in sites})
        await hub.publish(100.0)
        first = hub.plan_id
        assert first == 100.0 and sum(t.endswith("/plan") for t in client.topics) == len(sites)
        ack(sites[0], first)
        ack(sites[1], None)  # an edge that follows no plan yet
        assert hub.plan_acked == {sites[0]}
        ctl.plan = make_plan(0.0, [900.0] * 4, {s: ([2000.0] * 4, [0.0] * 4) for s in sites})
        await hub.publish(110.0)
        assert hub.plan_id == 110.0 and hub.plan_acked == set()
        ack(sites[0], first)  # late, of the plan before
        ack(sites[2], 110.0)
        assert hub.plan_acked == {sites[2]}
    finally:
        store.close()
