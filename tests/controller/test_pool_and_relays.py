"""The swarm as one plant to the outside, end to end on loopback against the simulated fleet on a
stepped clock: an independent SunSpec client (pysunspec2) on the pool interface, and a control
box's relay contacts on a simulated Modbus I/O module.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
import pytest_asyncio
import sunspec2.modbus.client as ssc
from sunspec2.modbus.modbus import ModbusClientException

from sparcs.config.grid_rules import STAGE_OUTPUT
from sparcs.config.schema import validate_config
from sparcs.controller.cycle import Controller
from sparcs.controller.pool_server import PoolServer
from sparcs.controller.store import Store
from sparcs.factory import build_controller
from sparcs.simulators.clock import SimClock
from sparcs.simulators.fleet import FleetHost
from tests.controller.conftest import small_fleet_data

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]
NOON = dt.datetime(2026, 6, 21, 10, 0, tzinfo=dt.UTC).timestamp()  # 12:00 in Leipzig
GROUP = "feeder-a"
POOL_UNIT = 2


def fleet_data() -> dict:
    """Three demo sites; the first two form the group: no feed-in cap, batteries full (so the group
    exports well above half its rating at noon and a pool limit has to bite)."""
    data = small_fleet_data(3)
    data["simulation"]["weather"]["cloudiness"] = 0.0
    for site in data["sites"][:2]:
        site["grid"]["feed_in_cap_pct"] = None
        site["battery"]["soc_initial"] = site["battery"].get("soc_max", 0.95)
    group_sites = [s["id"] for s in data["sites"][:2]]
    data["groups"] = [{"id": GROUP, "kind": "feeder", "sites": group_sites, "pool_unit": POOL_UNIT}]
    data["pool"] = {"host": "127.0.0.1", "port": 0}
    data["relay_inputs"] = [{"id": "box", "port": 1, "group": GROUP}]
    return data


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def rig(tmp_path_factory):
    clock = SimClock(NOON, stepped=True)
    host = FleetHost(validate_config(fleet_data()), clock=clock, auto_ports=True)
    await host.start()
    store = Store(data_dir=tmp_path_factory.mktemp("store"))
    ctl = build_controller(host.config, store, clock)
    assert host.config.pool is not None
    pool = PoolServer.of(ctl, host.config.pool)
    await pool.start()
    try:
        await ctl.cycle(dispatch=True)
        yield host, ctl, pool
    finally:
        await pool.stop()
        await ctl.close()
        store.close()
        await host.stop()


async def cycle(host: FleetHost, ctl: Controller, seconds: float = 10.0) -> None:
    """Step the simulators by ``seconds`` (one poll interval) and run one poll cycle."""
    await host.step(seconds)
    await ctl.cycle(dispatch=ctl.replan_due(ctl.clock.now()))
    assert ctl.history.writer.flush()  # the store is written by its own thread: read what this cycle left


def group_sites(ctl: Controller) -> list[str]:
    return ctl.cfg.group(GROUP).sites


def group_export_w(host: FleetHost, ctl: Controller) -> float:
    """Ground truth: the group's gross export at its meters (W ≥ 0)."""
    return sum(max(0.0, -host.site_truth(s)["grid_w"]) for s in group_sites(ctl))


def group_rating_w(ctl: Controller) -> float:
    return sum(ctl.cfg.site(s).pv.rating_w for s in group_sites(ctl))


def client(port: int, unit: int) -> ssc.SunSpecModbusClientDeviceTCP:
    d = ssc.SunSpecModbusClientDeviceTCP(slave_id=unit, ipaddr="127.0.0.1", ipport=port, timeout=5)
    d.scan()
    return d


async def sunspec(fn, *args):
    """Run a blocking pysunspec2 call while the event loop serves the pool."""
    return await asyncio.to_thread(fn, *args)


async def test_a_sunspec_client_limits_the_groups_export_and_the_limit_reverts(rig):
    host, ctl, pool = rig
    for _ in range(3):
        await cycle(host, ctl)
    rating = group_rating_w(ctl)
    before = group_export_w(host, ctl)
    assert before > 0.6 * rating, "the group must export above the limit for the test to mean anything"

    d = await sunspec(client, pool.port, POOL_UNIT)
    assert {1, 701, 120, 123, 713} <= set(d.models)
    mmt, plate, ctl123 = d.models[701][0], d.models[120][0], d.models[123][0]
    assert plate.WRtg.cvalue == pytest.approx(rating, rel=0.01)
    net = sum(-ctl.state.sites[s].grid_w for s in group_sites(ctl))
    assert mmt.W.cvalue == pytest.approx(net, abs=20.0)  # the last poll's state
    assert ctl123.WMaxLim_Ena.value == 0
    assert ctl123.WMaxLimPct.cvalue == pytest.approx(100.0)

    def limit() -> None:
        ctl123.WMaxLimPct.cvalue = 50
        ctl123.WMaxLimPct_RvrtTms.value = 120
        ctl123.WMaxLim_Ena.value = 1
        ctl123.write()

    await sunspec(limit)
    audit = ctl.store.audit_log(limit=5)
    entry = next(a for a in audit if a["action"] == "pool_limit")
    assert entry["who"] == "pool:127.0.0.1" and entry["params"]["limit_pct"] == 50
    assert entry["params"]["group"] == GROUP
    for _ in range(2):  # within two polls
        await cycle(host, ctl)
    assert group_export_w(host, ctl) <= 0.51 * rating, (group_export_w(host, ctl), rating)
    await sunspec(ctl123.read)
    assert ctl123.WMaxLim_Ena.value == 1 and ctl123.WMaxLimPct.cvalue == pytest.approx(50.0)
    assert ctl123.WMaxLimPct_RvrtTms.value == 120

    for _ in range(11):  # past the revert timer (120 s)
        await cycle(host, ctl)
    assert ctl.commands.pool_limit(GROUP, ctl.clock.now()) is None
    await sunspec(ctl123.read)
    assert ctl123.WMaxLim_Ena.value == 0
    for _ in range(3):
        await cycle(host, ctl)
    assert group_export_w(host, ctl) > 0.6 * rating  # released: the PV runs free again
    d.close()


async def test_the_pool_refuses_writes_outside_its_controls_and_values_out_of_range(rig):
    _host, ctl, pool = rig
    d = await sunspec(client, pool.port, POOL_UNIT)
    c = d.models[123][0]
    c.WMaxLimPct.cvalue = 150
    c.WMaxLim_Ena.value = 1
    with pytest.raises(ModbusClientException, match="exception: 3"):  # illegal value
        await sunspec(c.write)
    assert ctl.commands.pool_limit(GROUP, ctl.clock.now()) is None
    with pytest.raises(ModbusClientException, match="exception: 2"):  # illegal address: not a pool control
        await sunspec(d.write, d.models[120][0].model_addr + 3, b"\x00\x01")
    d.close()


async def test_relay_contacts_k3_k2_none_reach_the_devices_within_two_polls(rig):
    host, ctl, _pool = rig
    box = host.io_modules["box"]
    sites = group_sites(ctl)
    outside = [s.id for s in ctl.cfg.sites if s.id not in sites]

    def relay_entries() -> list[dict]:
        return [a for a in ctl.store.audit_log(limit=50) if a["action"] == "relay"]

    start = len(relay_entries())
    for closed, stage in (
        ([False, False, True, False], "K3"),
        ([False, True, False, False], "K2"),
        ([False] * 4, None),
    ):
        box.set_contacts(closed)
        for _ in range(2):  # within two polls
            await cycle(host, ctl)
        for s in sites:
            pv = host.site_truth(s)["pv_w"]
            if stage is not None:
                assert pv <= STAGE_OUTPUT[stage] * ctl.cfg.site(s).pv.rating_w * 1.01, (stage, s, pv)
            assert ctl.commands.stage(s, ctl.clock.now()) == stage
        assert all(ctl.commands.stage(s, ctl.clock.now()) is None for s in outside)
    entries = relay_entries()
    assert len(entries) - start == 3  # one audit entry per change
    assert [e["params"]["stage"] for e in entries[:3]] == [None, "K2", "K3"]  # newest first


async def test_an_io_module_that_stops_answering_keeps_the_last_stage_and_alarms(rig):
    host, ctl, _pool = rig
    box = host.io_modules["box"]
    box.set_contacts([False, True, False, False])  # K2
    await cycle(host, ctl)
    box.set_fault("offline")
    box.set_contacts([False] * 4)  # a change nobody can read
    for _ in range(3):
        await cycle(host, ctl)
    assert all(ctl.commands.stage(s, ctl.clock.now()) == "K2" for s in group_sites(ctl))
    assert any(a["source"] == "relay:box" for a in ctl.store.alarms(active_only=True))
    for s in group_sites(ctl):
        assert host.site_truth(s)["pv_w"] <= 0.3 * ctl.cfg.site(s).pv.rating_w * 1.01
    box.set_fault(None)
    await cycle(host, ctl)
    assert not any(a["source"] == "relay:box" for a in ctl.store.alarms(active_only=True))
    assert all(ctl.commands.stage(s, ctl.clock.now()) is None for s in group_sites(ctl))
