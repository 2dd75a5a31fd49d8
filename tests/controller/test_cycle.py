"""The control cycle end to end over Modbus TCP against the simulated fleet, on a stepped clock.

One small fleet (3 demo sites) serves the whole module. The controller polls, plans in the real
solver process, writes setpoints, guards the meters, and keeps going when a device fails mid-run.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import gc

import httpx
import pytest
import pytest_asyncio

from sparcs.config.grid_rules import feed_in_cap_w
from sparcs.config.schema import FaultSpec
from sparcs.controller.api import create_app
from sparcs.controller.cycle import Controller
from sparcs.controller.plan_codec import pack_plan, unpack_plan
from sparcs.controller.read_model import ControllerView
from sparcs.controller.setpoints import ZERO_CAP_MARGIN
from sparcs.factory import build_controller
from sparcs.simulators.fleet import FleetHost
from tests.controller.conftest import small_fleet_data
from tests.controller.serving import simulated

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]
NOON = dt.datetime(2026, 6, 21, 10, 0, tzinfo=dt.UTC).timestamp()  # 12:00 in Leipzig, clear-ish sky


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fleet(tmp_path_factory):
    data = small_fleet_data(3)
    data["simulation"]["weather"]["cloudiness"] = 0.0
    async with simulated(data, tmp_path_factory.mktemp("store"), NOON) as fleet:
        yield fleet


async def run(host: FleetHost, ctl: Controller, seconds: float, *, dispatch_first: bool = False):
    """Step the simulators by ``seconds`` and run one cycle; its history is stored when this returns."""
    await host.step(seconds)
    report = await ctl.cycle(dispatch=dispatch_first)
    ctl.history.writer.flush()
    return report


def capped_sites(host):
    return [(s, feed_in_cap_w(s)) for s in host.config.sites if s.grid.feed_in_cap_pct]


async def test_poll_plan_write_and_guard_keep_the_caps(fleet):
    host, ctl, _clock = fleet
    report = await ctl.cycle(dispatch=True)
    ctl.history.writer.flush()
    assert report.dispatched and report.plan_path == "optimal", ctl.store.alarms()
    assert report.online == sum(len(s.devices) for s in host.config.sites) and report.stale == 0
    assert ctl.store.last_plan().path == "optimal"
    for _ in range(6):
        await run(host, ctl, 10)
    assert capped_sites(host), "the small fleet needs a site with a feed-in cap"
    for site, cap in capped_sites(host):
        export = -host.site_truth(site.id)["grid_w"]
        assert export <= cap * 1.01, (site.id, export, cap)
    # the state the API shows agrees with the simulators' truth at the meters
    for site in host.config.sites:
        measured = ctl.state.sites[site.id].grid_w
        assert measured == pytest.approx(host.site_truth(site.id)["grid_w"], abs=150.0)
    assert ctl.store.fleet_history(0, NOON + 86_400)


async def test_a_device_failing_mid_run_goes_stale_leaves_the_plan_and_comes_back(fleet):
    host, ctl, _clock = fleet
    victim_site = host.config.sites[1]
    victim = next(d.id for d in victim_site.devices if d.kind == "pv_inverter")
    host.inject_fault(FaultSpec(device=victim, mode="offline"))
    for _ in range(ctl.cfg.dispatch.stale_after_polls + 1):
        await run(host, ctl, 10)
    assert ctl.state.telemetry[victim].status == "stale"
    assert not ctl.state.sites[victim_site.id].controllable
    others = [d.id for s in host.config.sites for d in s.devices if d.id != victim]
    assert all(ctl.state.telemetry[d].status == "online" for d in others)
    assert any(a["source"] == f"device:{victim}" for a in ctl.store.alarms(active_only=True))
    report = await run(host, ctl, 10, dispatch_first=True)
    assert report.dispatched and victim_site.id not in ctl.plan.sites
    assert set(ctl.plan.sites) == {s.id for s in host.config.sites if s.id != victim_site.id}

    host.clear_fault(victim)
    for _ in range(12):
        await run(host, ctl, 30)
        if ctl.state.telemetry[victim].status == "online" and ctl.state.telemetry[victim].values["pv_w"].value:
            break
    assert ctl.state.sites[victim_site.id].controllable
    assert not any(a["source"] == f"device:{victim}" for a in ctl.store.alarms(active_only=True))


async def test_a_site_outside_the_plan_keeps_its_pv_at_most_at_its_cap(fleet, monkeypatch):
    host, ctl, clock = fleet
    site, cap = next((s, c) for s, c in capped_sites(host) if any(d.kind == "battery" for d in s.devices))
    battery = next(d.id for d in site.devices if d.kind == "battery")
    pvs = [d.id for d in site.devices if d.kind == "pv_inverter"]
    host.inject_fault(FaultSpec(device=battery, mode="offline"))
    try:
        # the battery's failure is seen at its next read (tiered polling), stale after stale_after_polls polls
        for _ in range(ctl.cfg.dispatch.polls_between_reads("battery") + ctl.cfg.dispatch.stale_after_polls):
            await run(host, ctl, 10)
        assert not ctl.state.sites[site.id].controllable
        # its battery runs on its own now and may stop absorbing PV at any moment: the PV alone stays legal
        assert sum(ctl.setpoints[d].pv_limit_w for d in pvs) <= cap + 1e-6
        await run(host, ctl, 10)
        assert host.site_truth(site.id)["pv_w"] <= cap * 1.01
        assert site.grid.negative_price_rule
        with monkeypatch.context() as m:
            m.setattr(ctl, "price_now", lambda now: -10.0)  # a negative-price quarter-hour: its cap is 0 W
            assert sum(ctl.desired_setpoints(clock.now())[d].pv_limit_w for d in pvs) == 0.0
    finally:
        host.clear_fault(battery)
    for _ in range(12):
        await run(host, ctl, 30)
        if ctl.state.sites[site.id].controllable:
            break
    assert ctl.state.sites[site.id].controllable


async def test_at_a_zero_cap_a_curtailing_plan_keeps_an_import_margin(fleet, monkeypatch):
    host, ctl, clock = fleet
    now = clock.now()
    site = next(s for s in host.config.sites if s.grid.negative_price_rule and s.id in ctl.plan.sites)
    pvs = [d.id for d in site.devices if d.kind == "pv_inverter"]
    plan = copy.deepcopy(ctl.plan)
    plan.sites[site.id].pv_limit_w[plan.period_at(now)] = 2000.0
    monkeypatch.setattr(ctl, "plan", plan)
    monkeypatch.setattr(ctl, "guard_w", {})
    assert sum(ctl.desired_setpoints(now)[d].pv_limit_w for d in pvs) == pytest.approx(2000.0)
    monkeypatch.setattr(ctl, "price_now", lambda now: -10.0)  # a negative-price quarter-hour: its cap is 0 W
    limit = sum(ctl.desired_setpoints(now)[d].pv_limit_w for d in pvs)
    assert limit == pytest.approx(2000.0 - ZERO_CAP_MARGIN * site.pv.rating_w)


async def test_a_stage_curtails_at_once_even_while_paused(fleet):
    host, ctl, clock = fleet
    from sparcs.controller.commands import PauseRequest, StageRequest

    site = host.config.sites[0]
    pv = next(d.id for d in site.devices if d.kind == "pv_inverter")
    now = clock.now()
    ctl.commands.submit_pause(PauseRequest(reason="test"), "op", now)
    expires = dt.datetime.fromtimestamp(now + 3600, dt.UTC)
    ctl.commands.submit_stage(StageRequest(stage="K2", sites=[site.id], expires_at=expires), "op", now)
    for _ in range(4):
        await run(host, ctl, 15)
    assert host.truth(pv)["pv_w"] <= 0.3 * site.pv.rating_w * 1.02
    assert ctl.setpoints[pv].pv_limit_w == pytest.approx(0.3 * site.pv.rating_w, rel=1e-6)
    report = await run(host, ctl, 10, dispatch_first=True)
    assert not report.dispatched  # paused: the optimizer is stopped
    ctl.commands.resume("op", clock.now())
    for c in ctl.commands.active(clock.now()):
        ctl.commands.cancel([c.id], "op", clock.now())


async def test_a_setpoint_that_cannot_be_written_is_an_alarm_until_it_is(fleet):
    from sparcs.controller.commands import StageRequest

    host, ctl, clock = fleet
    site = host.config.sites[2]
    pv = next(d.id for d in site.devices if d.kind == "pv_inverter")
    expires = dt.datetime.fromtimestamp(clock.now() + 3600, dt.UTC)
    stage = ctl.commands.submit_stage(StageRequest(stage="K3", sites=[site.id], expires_at=expires), "op", clock.now())
    await run(host, ctl, 10)
    host.inject_fault(FaultSpec(device=pv, mode="exception", code=4))
    await run(host, ctl, 10)
    alarm = next(a for a in ctl.store.alarms(active_only=True) if a["source"] == f"write:{pv}")
    assert "Modbus exception 4" in alarm["message"]
    host.clear_fault(pv)
    for _ in range(12):
        await run(host, ctl, 30)
        if not any(a["source"] == f"write:{pv}" for a in ctl.store.alarms(active_only=True)):
            break
    assert not any(a["source"] == f"write:{pv}" for a in ctl.store.alarms(active_only=True))
    assert host.truth(pv)["limit_w"] == pytest.approx(0.6 * site.pv.rating_w, rel=0.02)
    ctl.commands.cancel([stage.id], "op", clock.now())


async def test_solver_failure_gives_the_fallback_and_an_alarm(fleet):
    host, ctl, _clock = fleet
    ctl.planner.worker.inject_fault("fail")
    report = await run(host, ctl, 10, dispatch_first=True)
    assert report.dispatched and report.plan_path in ("fallback_shifted", "fallback_rules")
    alarm = next(a for a in ctl.store.alarms(active_only=True) if a["source"] == "dispatch")
    assert "injected solver failure" in alarm["message"]
    assert ctl.store.last_plan().path == report.plan_path
    report = await run(host, ctl, 10, dispatch_first=True)
    assert report.plan_path == "optimal"
    assert not any(a["source"] == "dispatch" for a in ctl.store.alarms(active_only=True))


async def test_an_overrunning_dispatch_does_not_stack_and_polling_goes_on(fleet):
    host, ctl, _clock = fleet
    ctl.cfg.dispatch.solve_timeout_s = 3.0
    ctl.planner.worker.inject_fault("hang")
    try:
        first = asyncio.create_task(ctl.cycle(dispatch=True))
        while not ctl.dispatching:
            await asyncio.sleep(0.01)
        skipped = 0
        while not first.done():
            await host.step(10)
            second = await ctl.cycle(dispatch=True)  # a dispatch tick while the first still runs
            if second.dispatched:
                assert first.done()  # it may only plan once the first has finished
            else:
                skipped += 1
                assert second.online > 0  # it still polled
        report = await first
        ctl.history.writer.flush()
    finally:
        ctl.cfg.dispatch.solve_timeout_s = 30.0
    assert skipped >= 1
    assert report.dispatched and report.plan_path.startswith("fallback")
    assert any("timed out" in a["message"] for a in ctl.store.alarms() if a["source"] == "dispatch")


async def test_the_api_shows_what_the_cycle_did(fleet):
    host, ctl, clock = fleet
    from sparcs.controller.auth import create_token

    await run(host, ctl, 10, dispatch_first=True)
    for _ in range(3):
        await run(host, ctl, 60)
    token = create_token(ctl.store, f"viewer-{int(clock.now())}", "viewer", clock.now())
    transport = httpx.ASGITransport(app=create_app(ctl))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://sparcs", headers={"Authorization": f"Bearer {token}"}
    ) as http:
        fleet_body = (await http.get("/api/v1/fleet")).json()
        assert fleet_body["in_fallback"] is False and fleet_body["data_stale"] is False
        fleet_now = fleet_body["now"]
        assert fleet_now["online"] == fleet_now["total"] == sum(len(s.devices) for s in host.config.sites)
        truth_pv = sum(host.site_truth(s.id)["pv_w"] for s in host.config.sites)
        assert fleet_now["pv_w"] == pytest.approx(truth_pv, rel=0.1)
        assert fleet_now["flex_up_w"] >= 0 and fleet_now["flex_down_w"] > 0

        pv_id = next(d.id for d in host.config.sites[0].devices if d.kind == "pv_inverter")
        dev = (await http.get(f"/api/v1/devices/{pv_id}")).json()
        assert dev["status"] == "online" and dev["values"]["pv_w"]["quality"] == "good"
        assert dev["last_seen"].endswith("+00:00") and "setpoint" in dev and dev["actual"]["pv_w"] is not None
        assert dev["fail_safe"]["kind"] == "revert_timer" and "123 WMaxLimPct_RvrtTms" in dev["fail_safe"]["note"]

        site = (await http.get(f"/api/v1/sites/{host.config.sites[0].id}")).json()
        assert site["now"]["controllable"] and len(site["devices"]) == len(host.config.sites[0].devices)
        assert site["curtailed"] == (
            site["now"]["pv_limit_w"] is not None and site["now"]["pv_limit_w"] < 0.99 * site["pv_rating_w"]
        )

        plan = (await http.get("/api/v1/plan")).json()["plan"]
        assert plan["path"] == "optimal" and len(plan["period_s"]) == 97
        forecast = (await http.get("/api/v1/forecast")).json()
        assert len(forecast["price_eur_per_mwh"]) == 97 and set(forecast["sites"]) == set(plan["sites"])

        end = dt.datetime.fromtimestamp(clock.now() + 1, dt.UTC).isoformat()
        hist = (await http.get("/api/v1/history", params={"end": end, "resolution_s": 120})).json()
        assert hist["points"] and all(p["ts"].endswith("+00:00") for p in hist["points"])
        assert len({p["ts"] for p in hist["points"]}) == len(hist["points"])
        dev_hist = (await http.get("/api/v1/history", params={"end": end, "device": pv_id})).json()
        assert dev_hist["points"] and "pv_w" in dev_hist["points"][-1]
        alarms = (await http.get("/api/v1/alarms")).json()
        assert any(a["source"].startswith("device:") and a["cleared_at"] for a in alarms)

    text = ctl.metrics.render().decode()
    for name in (
        "sparcs_poll_cycle_duration_seconds_bucket",
        "sparcs_dispatch_duration_seconds_count",
        'sparcs_dispatch_total{path="optimal"}',
        "sparcs_plan_objective_eur",
        'sparcs_telemetry_values{quality="good"}',
        'sparcs_devices{status="online"}',
        'sparcs_modbus_errors_total{kind="connection"}',
        'sparcs_fleet_power_watts{quantity="pv"}',
        'sparcs_curtailment_stage_sites{stage="K2"}',
    ):
        assert name in text, name


async def test_after_a_restart_a_failing_solve_falls_back_to_the_stored_plan(fleet):
    host, ctl, clock = fleet
    report = await run(host, ctl, 10, dispatch_first=True)
    assert report.plan_path == "optimal"
    again = build_controller(host.config, ctl.store, clock)  # a restarted controller on the same store
    try:
        assert again.plan.to_record() == unpack_plan(pack_plan(ctl.plan)).to_record()  # the stored (float32) form
        again.planner.worker.inject_fault("fail")
        await host.step(60)
        report = await again.cycle(dispatch=True)
        assert report.plan_path == "fallback_shifted", again.plan.reason
    finally:
        await again.close()


async def test_the_poll_cycle_metric_includes_the_writes(fleet, monkeypatch):
    host, ctl, _clock = fleet
    await run(host, ctl, 10)  # past the first poll's staggered start
    real_apply = ctl.writer.apply

    async def slow_apply(setpoints):
        await asyncio.sleep(0.3)
        return await real_apply(setpoints)

    monkeypatch.setattr(ctl.writer, "apply", slow_apply)
    before = ctl.metrics.poll_seconds.collect()[0]
    total = next(s.value for s in before.samples if s.name.endswith("_sum"))
    await run(host, ctl, 10)
    after = next(s.value for s in ctl.metrics.poll_seconds.collect()[0].samples if s.name.endswith("_sum"))
    assert after - total >= 0.3


@pytest.mark.parametrize("dispatch", [False, True])
async def test_no_garbage_collection_starts_while_a_cycle_reads_or_writes(fleet, monkeypatch, dispatch):
    """Regression: a full collection (200–270 ms at 1,000 devices) landed inside poll cycles every
    10–15 s and set the poll cycle's tail; it now waits for the cycle's reads and writes to end."""
    host, ctl, _clock = fleet
    inside = {"now": False}
    events: list[str] = []  # "inside" / "outside": a collection started; "step": a read or write ended

    def watch(phase: str, info: dict) -> None:
        if phase == "start":
            events.append("inside" if inside["now"] else "outside")

    def marked(step):
        async def run_marked(*args):
            inside["now"] = True
            try:
                return await step(*args)
            finally:
                inside["now"] = False
                events.append("step")

        return run_marked

    monkeypatch.setattr(ctl.poller, "poll_once", marked(ctl.poller.poll_once))
    monkeypatch.setattr(ctl, "_write", marked(ctl._write))
    threshold = gc.get_threshold()
    gc.set_threshold(1, 1, 1)  # every allocation makes a collection due, the oldest generation each third
    gc.callbacks.append(watch)
    try:
        await host.step(30)
        await ctl.cycle(dispatch=dispatch)
    finally:
        gc.callbacks.remove(watch)
        gc.set_threshold(*threshold)
    ctl.history.writer.flush()
    assert events.count("step") == 2 and "inside" not in events
    assert "outside" in events[events.index("step") + 1 :], "the due collections ran once the cycle ended"
    assert gc.isenabled()


async def test_a_broken_history_store_does_not_stop_control(fleet, caplog):
    """Runs last in this module: it breaks the store for good."""
    host, ctl, _clock = fleet
    with ctl.store.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE telemetry")
        conn.exec_driver_sql("DROP TABLE plans")
    ctl.history._last_bucket.clear()  # force a history write on the next poll
    await host.step(60)
    report = await ctl.cycle(dispatch=True)
    for _ in range(200):  # the writer thread tries the write and reports it failed
        if not ctl.store_ok:
            break
        await asyncio.sleep(0.05)
    assert report.dispatched and report.plan_path == "optimal"
    assert report.online == sum(len(s.devices) for s in host.config.sites)
    assert "history store fails (history write)" in caplog.text  # the plan waits behind it in the writer's queue
    assert ctl.plan is not None and ctl.last_poll_s == report.ts
    text = ctl.metrics.render().decode()
    assert not ctl.store_ok and "sparcs_store_ok 0.0" in text  # the metrics say the store fails
    assert any("history writes fail" in p for p in ControllerView.of(ctl).readiness_problems())  # so does /readyz
    assert 'sparcs_store_errors_total{what="history"}' in text
    assert [a["source"] for a in ctl.store.alarms(active_only=True)][:1] == ["store"]  # the store's own alarm
