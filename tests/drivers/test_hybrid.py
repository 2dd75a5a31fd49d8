"""A hybrid inverter (PV and battery behind one unit id, SunSpec 1/103/120/121/123/124/802/160) over
Modbus TCP: one device with two roles, read as both, planned and written as both.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from sparcs.cli import app
from sparcs.config.schema import DispatchConfig
from sparcs.controller.setpoints import SiteCommand, split_to_devices
from sparcs.controller.store import Store
from sparcs.drivers.writer import Setpoint, SetpointWriter
from sparcs.factory import build_controller
from tests.drivers.conftest import good, step_and_poll

pytestmark = pytest.mark.asyncio(loop_scope="module")

START = dt.datetime(2026, 6, 21, 10, 0, tzinfo=dt.UTC).timestamp()
SETTINGS = DispatchConfig(modbus_timeout_s=0.5, stale_after_polls=2, revert_timeout_s=120, poll_interval_s=10)
SITE = {
    "id": "h",
    "location": {"lat": 51.34, "lon": 12.37},
    "pv": {"kwp": 6.0},
    "battery": {"capacity_kwh": 10, "max_charge_w": 4000, "max_discharge_w": 4000},
    "grid": {"feed_in_cap_pct": 60},
    "devices": [{"id": "h-hy", "kind": "hybrid", "port": 1}, {"id": "h-m", "kind": "meter", "port": 2}],
}
FLEET = {
    "sites": [SITE],
    "simulation": {"weather": {"cloudiness": 0.0}, "variants": {"h-hy": {"mppt_strings": 2}}},
}


async def test_a_hybrid_is_read_in_both_roles(fleet, poller) -> None:
    host, _ = fleet
    t = (await step_and_poll(host, poller))["h-hy"]
    assert t.kind == "hybrid" and t.models == [1, 103, 120, 121, 123, 124, 802, 160]
    truth = host.truth("h-hy")
    assert good(t, "pv_w") == pytest.approx(truth["pv_w"], abs=3.0)
    assert good(t, "battery_w") == pytest.approx(truth["battery_w"], abs=2.0)
    assert good(t, "soc") == pytest.approx(truth["soc"], abs=0.001)
    assert good(t, "wmax_w") == 6000.0 and good(t, "max_charge_w") == 4000.0
    assert t.values["pv_limit_w"].value is None  # read, and no limit in force


async def test_a_hybrid_is_written_in_both_roles(fleet, poller) -> None:
    host, clock = fleet
    writer = SetpointWriter(poller, SETTINGS, clock.now)
    await step_and_poll(host, poller)
    r = (await writer.apply({"h-hy": Setpoint(pv_limit_w=2400.0, battery_w=-1500.0)}))["h-hy"]
    assert r.ok and r.action == "limit" and r.readback_w == pytest.approx(2400.0, abs=6), r
    assert r.battery is not None and r.battery.action == "battery" and r.battery.readback_w == pytest.approx(-1500.0)
    await step_and_poll(host, poller, 30)
    truth = host.truth("h-hy")
    assert truth["limit_w"] == pytest.approx(2400.0, abs=6) and truth["commanded_w"] == pytest.approx(-1500.0)
    again = (await writer.apply({"h-hy": Setpoint(pv_limit_w=2400.0, battery_w=-1500.0)}))["h-hy"]
    assert again.action == "unchanged" and again.battery is not None and again.battery.action == "unchanged"
    await step_and_poll(host, poller, 30)  # 60 s: both timers are due (40 % of 120 s)
    refreshed = (await writer.refresh_due())["h-hy"]
    assert refreshed.ok and refreshed.battery is not None and refreshed.battery.ok, refreshed
    r = (await writer.apply({"h-hy": Setpoint(pv_limit_w=None, battery_w=None)}))["h-hy"]
    assert r.ok and r.action == "release" and r.battery is not None and r.battery.action == "release", r
    await host.step(60)
    truth = host.truth("h-hy")
    assert truth["limit_w"] is None and truth["commanded_w"] is None


async def test_a_sites_command_splits_onto_a_hybrid_as_both() -> None:
    from sparcs.config.schema import validate_config

    cfg = validate_config({"sites": [SITE]})
    assert split_to_devices(cfg.sites[0], SiteCommand(pv_limit_w=3000.0, battery_w=-500.0)) == {
        "h-hy": (3000.0, -500.0)
    }


async def test_the_controller_plans_and_writes_a_hybrid_as_both(fleet, tmp_path) -> None:
    host, clock = fleet
    store = Store(data_dir=tmp_path)
    ctl = build_controller(host.config, store, clock)
    try:
        await host.step(10)
        await ctl.cycle(dispatch=True)
        assert ctl.plan is not None and "h" in ctl.plan.sites
        site = ctl.state.sites["h"]
        truth = host.site_truth("h")
        assert site.controllable and site.pv_w == pytest.approx(truth["pv_w"], abs=5)
        assert site.battery_w == pytest.approx(truth["battery_w"], abs=5) and site.soc is not None
        await host.step(10)
        await ctl.cycle()
        sp = ctl.setpoints["h-hy"]  # what this cycle wrote
        await host.step(2)
        hy = host.truth("h-hy")
        if sp.battery_w:  # the plan's battery power is the hybrid's battery role (0 W is 124's hold window)
            assert hy["commanded_w"] == pytest.approx(sp.battery_w, abs=8)  # 124 rates in 0.1 % of 4 kW
        elif sp.battery_w == 0.0:
            assert hy["battery_w"] == pytest.approx(0.0, abs=8)
        if sp.pv_limit_w is not None:
            assert hy["limit_w"] == pytest.approx(sp.pv_limit_w, rel=0.01)
        assert sp.pv_limit_w is not None or sp.battery_w is not None  # a capped noon: something to do
    finally:
        await ctl.close()
        store.close()


async def test_check_config_takes_a_hybrid_as_one_device_on_one_endpoint(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump({"sites": [SITE]}))
    run = CliRunner().invoke(app, ["check-config", str(path)])
    assert run.exit_code == 0 and run.stdout.strip().endswith("OK (1 sites, 2 devices)"), run.stdout + run.stderr
