"""Revert timers (123, 704, 124, 704 WSet), ramps and the installer configuration, on the stepped clock."""

from __future__ import annotations

import pytest
import sunspec2.modbus.client as sclient

from tests.simulators.conftest import FleetThread, site


@pytest.fixture(scope="module")
def fleet():
    f = FleetThread(
        {
            "simulation": {
                "seed": 3,
                "weather": {"cloudiness": 0.0},
                "variants": {"der-pv": {"models": "der"}, "der-bat": {"models": "der"}},
            },
            "sites": [
                site("cls", 31000, kwp=10.0, cap=60),
                site("der", 31010, kwp=10.0),
                site("inst", 31020, kwp=10.0, battery=False, cap=None, installer_limit_pct=70),
                site("ramp", 31030, kwp=10.0, battery=False, cap=None),
            ],
        }
    )
    try:
        yield f
    finally:
        f.close()


def scanned(fleet: FleetThread, dev_id: str) -> sclient.SunSpecModbusClientDeviceTCP:
    ep = fleet.endpoints[dev_id]
    d = sclient.SunSpecModbusClientDeviceTCP(slave_id=ep.unit, ipaddr=ep.host, ipport=ep.port, timeout=5)
    d.scan()
    return d


def test_123_limit_reverts_when_its_timer_expires_and_a_rewrite_restarts_it(fleet):
    ctl = scanned(fleet, "cls-pv").models[123][0]
    ctl.read()
    ctl.WMaxLimPct.cvalue = 30.0
    ctl.WMaxLim_Ena.value = 1
    ctl.WMaxLimPct_RvrtTms.value = 120
    ctl.write()
    fleet.step(60)
    truth = fleet.truth("cls-pv")
    assert truth["limit_w"] == pytest.approx(3000.0)
    assert truth["revert_s"] == pytest.approx(60.0)
    ctl.WMaxLimPct.write()  # the refresh: same value, timer restarts
    fleet.step(100)
    assert fleet.truth("cls-pv")["limit_w"] == pytest.approx(3000.0)
    fleet.step(21)
    truth = fleet.truth("cls-pv")
    assert truth["revert_s"] is None
    assert truth["limit_w"] is None or truth["limit_w"] > 3000.0
    ctl.read()
    assert ctl.WMaxLim_Ena.value == 0
    assert ctl.WMaxLimPct.cvalue == pytest.approx(100.0)


def test_after_revert_a_capped_site_keeps_its_export_limitation(fleet):
    """The installer configuration on a 60 % site holds export at the cap, never unlimited output."""
    ctl = scanned(fleet, "cls-pv").models[123][0]
    storage = scanned(fleet, "cls-bat").models[124][0]
    storage.read()
    storage.InWRte.cvalue = 0.0  # keep the battery from soaking up the surplus
    storage.StorCtl_Mod.value = 1
    storage.write()
    ctl.read()
    ctl.WMaxLimPct.cvalue = 100.0
    ctl.WMaxLim_Ena.value = 1
    ctl.WMaxLimPct_RvrtTms.value = 60
    ctl.write()
    fleet.step(30)
    assert fleet.truth("cls-meter")["grid_w"] < -6000.0  # controller limit at 100 %: export beyond the cap
    fleet.step(60)
    pv = fleet.truth("cls-pv")
    assert pv["export_limit_w"] == pytest.approx(6000.0)
    assert fleet.truth("cls-meter")["grid_w"] == pytest.approx(-6000.0, abs=1.0)
    storage.StorCtl_Mod.value = 0
    storage.write()


def test_704_limit_reverts_to_its_reversion_settings(fleet):
    ctl = scanned(fleet, "der-pv").models[704][0]
    ctl.read()
    ctl.WMaxLimPct.cvalue = 20.0
    ctl.WMaxLimPctEna.value = 1
    ctl.WMaxLimPctRvrtTms.value = 90
    ctl.write()
    fleet.step(60)
    ctl.read()
    assert ctl.WMaxLimPctRvrtRem.value == 30
    assert fleet.truth("der-pv")["limit_w"] == pytest.approx(2000.0)
    fleet.step(31)
    ctl.read()
    assert ctl.WMaxLimPctEna.value == 0
    assert ctl.WMaxLimPct.cvalue == pytest.approx(100.0)
    assert fleet.truth("der-pv")["revert_s"] is None


def test_124_storage_command_reverts_to_self_consumption(fleet):
    storage = scanned(fleet, "cls-bat").models[124][0]
    storage.read()
    storage.OutWRte.cvalue = 50.0
    storage.StorCtl_Mod.value = 2
    storage.InOutWRte_RvrtTms.value = 90
    storage.write()
    fleet.step(60)
    assert fleet.truth("cls-bat")["battery_w"] == pytest.approx(2500.0)
    fleet.step(31)
    storage.read()
    truth = fleet.truth("cls-bat")
    assert storage.StorCtl_Mod.value == 0
    assert truth["commanded_w"] is None and truth["revert_s"] is None
    assert truth["battery_w"] <= 0.0  # noon surplus: self-consumption charges


def test_704_wset_reverts(fleet):
    ctl = scanned(fleet, "der-bat").models[704][0]
    ctl.read()
    ctl.WSet.cvalue = 3000
    ctl.WSetMod.value = 1
    ctl.WSetEna.value = 1
    ctl.WSetRvrtTms.value = 45
    ctl.write()
    fleet.step(30)
    assert fleet.truth("der-bat")["battery_w"] == pytest.approx(3000.0)
    fleet.step(16)
    ctl.read()
    assert ctl.WSetEna.value == 0
    assert fleet.truth("der-bat")["commanded_w"] is None


def test_limit_ramps_over_rmptms(fleet):
    ctl = scanned(fleet, "ramp-pv").models[123][0]
    ctl.read()
    ctl.WMaxLimPct_RmpTms.value = 100
    ctl.WMaxLimPct.cvalue = 0.0
    ctl.WMaxLim_Ena.value = 1
    ctl.write()
    fleet.step(50)
    assert fleet.truth("ramp-pv")["limit_w"] == pytest.approx(5000.0, abs=1.0)
    fleet.step(50)
    truth = fleet.truth("ramp-pv")
    assert truth["limit_w"] == pytest.approx(0.0, abs=1e-6) and truth["pv_w"] == pytest.approx(0.0, abs=1e-6)


def test_wmax_above_the_installer_limit_never_lifts_it_and_reverts(fleet):
    d = scanned(fleet, "inst-pv")
    settings, ctl = d.models[121][0], d.models[123][0]
    settings.read()
    assert settings.WMax.cvalue == pytest.approx(7000.0)
    settings.WMax.cvalue = 10000.0
    settings.WMax.write()
    fleet.step(30)
    truth = fleet.truth("inst-pv")
    assert truth["wmax_w"] == pytest.approx(10000.0)
    assert truth["pv_w"] <= 7000.0 + 1e-6
    ctl.read()
    ctl.WMaxLimPct.cvalue = 50.0
    ctl.WMaxLim_Ena.value = 1
    ctl.WMaxLimPct_RvrtTms.value = 30
    ctl.write()
    fleet.step(31)
    settings.read()
    assert settings.WMax.cvalue == pytest.approx(7000.0)


def test_conn_disconnects_and_its_timer_reconnects(fleet):
    ctl = scanned(fleet, "ramp-pv").models[123][0]
    ctl.read()
    ctl.WMaxLim_Ena.value = 0
    ctl.Conn_RvrtTms.value = 40
    ctl.Conn.value = 0
    ctl.write()
    fleet.step(30)
    assert fleet.truth("ramp-pv")["pv_w"] == 0.0
    fleet.step(11)
    ctl.read()
    assert ctl.Conn.value == 1
    fleet.step(120)  # output ramps back up after reconnecting
    assert fleet.truth("ramp-pv")["pv_w"] > 1000.0
