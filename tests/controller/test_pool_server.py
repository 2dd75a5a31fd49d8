"""The SunSpec pool interface without a fleet behind it (no poll yet): what a client reads before the
first poll, the allow-list, read-only mode, release by WMaxLim_Ena = 0, and the fleet's own unit."""

from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio
import sunspec2.modbus.client as ssc
from sunspec2.modbus.modbus import ModbusClientException

from sparcs.config.schema import PoolConfig, validate_config
from sparcs.controller.cycle import WallClock
from sparcs.controller.pool_server import PoolServer, scale_exponent
from sparcs.controller.store import Store
from sparcs.factory import build_controller
from tests.controller.conftest import small_fleet_data


@pytest_asyncio.fixture
async def ctl(tmp_path):
    data = small_fleet_data(3)
    data["groups"] = [{"id": "g", "sites": [data["sites"][0]["id"]], "pool_unit": 7}]
    store = Store(data_dir=tmp_path)
    c = build_controller(validate_config(data), store, WallClock())
    yield c
    await c.close()
    store.close()


async def serve(ctl, **pool) -> PoolServer:
    server = PoolServer.of(ctl, PoolConfig(port=0, **pool))
    await server.start()
    return server


def scan(port: int, unit: int) -> ssc.SunSpecModbusClientDeviceTCP:
    d = ssc.SunSpecModbusClientDeviceTCP(slave_id=unit, ipaddr="127.0.0.1", ipport=port, timeout=3)
    d.scan()
    return d


async def test_before_the_first_poll_the_fleet_unit_reads_its_rating_and_no_power(ctl):
    server = await serve(ctl)
    try:
        d = await asyncio.to_thread(scan, server.port, 1)
        rating = sum(s.pv.rating_w for s in ctl.cfg.sites)
        assert d.common[0].Mn.value == "SPARCS" and d.common[0].SN.value == "pool-fleet"
        assert d.models[120][0].WRtg.cvalue == pytest.approx(rating, rel=0.01)
        assert d.models[701][0].W.cvalue == 0 and d.models[701][0].St.value == 0  # nothing read: OFF
        assert d.models[713][0].WHRtg.cvalue == pytest.approx(
            sum(s.battery.capacity_kwh * 1000 for s in ctl.cfg.sites if s.battery), rel=0.01
        )
        g = await asyncio.to_thread(scan, server.port, 7)
        assert g.models[120][0].WRtg.cvalue == pytest.approx(ctl.cfg.sites[0].pv.rating_w, rel=0.01)
        d.close()
        g.close()
    finally:
        await server.stop()


async def test_enable_then_disable_is_a_pool_command_and_its_audited_cancel(ctl):
    server = await serve(ctl)
    try:
        d = await asyncio.to_thread(scan, server.port, 7)
        c = d.models[123][0]

        def write(pct: float | None, rvrt: int | None, ena: int) -> None:
            if pct is not None:
                c.WMaxLimPct.cvalue = pct
            if rvrt is not None:
                c.WMaxLimPct_RvrtTms.value = rvrt
            c.WMaxLim_Ena.value = ena
            c.write()

        await asyncio.to_thread(write, 30, 600, 1)
        limit = ctl.commands.pool_limit("g", ctl.clock.now())
        assert limit is not None and limit.params["limit_pct"] == 30 and limit.who == "pool:127.0.0.1"
        assert limit.expires_s == pytest.approx(ctl.clock.now() + 600, abs=5)
        await asyncio.to_thread(write, None, None, 0)
        assert ctl.commands.pool_limit("g", ctl.clock.now()) is None
        assert [a["action"] for a in ctl.store.audit_log()] == ["cancel", "pool_limit"]
        await asyncio.to_thread(c.read)
        assert c.WMaxLim_Ena.value == 0 and c.WMaxLimPct.cvalue == pytest.approx(30.0)  # as last written
        d.close()
    finally:
        await server.stop()


async def test_read_only_mode_refuses_every_write(ctl):
    server = await serve(ctl, read_only=True)
    try:
        d = await asyncio.to_thread(scan, server.port, 1)
        c = d.models[123][0]
        c.WMaxLimPct.cvalue = 10
        c.WMaxLim_Ena.value = 1
        with pytest.raises(ModbusClientException, match="exception: 1"):
            await asyncio.to_thread(c.write)
        assert ctl.commands.pool_limit(None, ctl.clock.now()) is None and ctl.store.audit_log() == []
        d.close()
    finally:
        await server.stop()


async def test_a_client_not_on_the_allow_list_is_refused(ctl):
    server = await serve(ctl, allow=["192.0.2.10"])
    try:
        with pytest.raises((ssc.SunSpecModbusClientError, ModbusClientException, OSError)):
            await asyncio.to_thread(scan, server.port, 1)
        assert server.allowed("192.0.2.10") and not server.allowed("127.0.0.1")
        assert server.allowed("::ffff:192.0.2.10")
    finally:
        await server.stop()


def test_scale_factors_make_a_large_pool_fit_its_16_bit_points():
    assert scale_exponent(32_766) == 0 and scale_exponent(32_767) == 1
    assert scale_exponent(500_000) == 2  # a 500 kW pool reads in 100 W steps
    assert scale_exponent(65_534, bits=16) == 0 and scale_exponent(65_535, bits=16) == 1
