"""An independent SunSpec client (pysunspec2) scans, reads and writes every simulated variant over TCP."""

from __future__ import annotations

import pytest
import sunspec2.modbus.client as sclient
from sunspec2.modbus.modbus import ModbusClientError

from tests.simulators.conftest import FleetThread


def scanned(fleet: FleetThread, dev_id: str) -> sclient.SunSpecModbusClientDeviceTCP:
    ep = fleet.endpoints[dev_id]
    d = sclient.SunSpecModbusClientDeviceTCP(slave_id=ep.unit, ipaddr=ep.host, ipport=ep.port, timeout=5)
    d.scan()
    return d


def model_ids(d: sclient.SunSpecModbusClientDeviceTCP) -> set[int]:
    return {k for k in d.models if isinstance(k, int)}


@pytest.mark.parametrize(
    ("dev_id", "models", "base", "common_len"),
    [
        ("cls-pv", {1, 103, 120, 121, 122, 123}, 40000, 66),
        ("cls-bat", {1, 103, 120, 121, 124, 713}, 40000, 66),
        ("cls-meter", {1, 203}, 40000, 66),
        ("der-pv", {1, 701, 702, 704}, 40000, 66),
        ("der-bat", {1, 701, 702, 704, 713}, 40000, 66),
        ("der-meter", {1, 203}, 0, 65),
        ("flt-pv", {1, 113, 120, 121, 122, 123}, 50000, 66),
        ("flt-bat", {1, 113, 120, 121, 124, 713}, 40000, 66),
        ("flt-meter", {1, 203}, 40000, 66),
        ("b0-pv", {1, 103, 120, 121, 122, 123}, 0, 65),
    ],
)
def test_scan_finds_each_variants_models_at_its_base(fleet, dev_id, models, base, common_len):
    d = scanned(fleet, dev_id)
    assert model_ids(d) == models
    assert d.base_addr == base
    assert d.models[1][0].len == common_len
    assert d.common[0].SN.cvalue == dev_id


def test_gateway_serves_three_unit_ids_on_one_port(fleet):
    ports = {fleet.endpoints[i].port for i in ("flt-pv", "flt-bat", "flt-meter")}
    units = sorted(fleet.endpoints[i].unit for i in ("flt-pv", "flt-bat", "flt-meter"))
    assert len(ports) == 1 and units == [1, 2, 3]
    assert model_ids(scanned(fleet, "flt-meter")) == {1, 203}


@pytest.mark.parametrize(
    ("dev_id", "model", "energy"), [("cls-pv", 103, "WH"), ("flt-pv", 113, "WH"), ("der-pv", 701, "TotWhInj")]
)
def test_pv_measurements_match_the_physics(fleet, dev_id, model, energy):
    fleet.step(30)
    d = scanned(fleet, dev_id)
    inv = d.models[model][0]
    inv.read()
    truth = fleet.truth(dev_id)
    assert truth["pv_w"] > 500
    assert inv.W.cvalue == pytest.approx(truth["pv_w"], abs=1.0)
    assert getattr(inv, energy).cvalue == pytest.approx(truth["energy_wh"], abs=1.0)
    assert inv.Hz.cvalue == pytest.approx(50.0)


def test_battery_and_meter_measurements_match_the_physics(fleet):
    fleet.step(30)
    bat = scanned(fleet, "cls-bat")
    storage, soc, inv = bat.models[124][0], bat.models[713][0], bat.models[103][0]
    for m in (storage, soc, inv):
        m.read()
    truth = fleet.truth("cls-bat")
    assert inv.W.cvalue == pytest.approx(truth["battery_w"], abs=1.0)
    assert storage.ChaState.cvalue == pytest.approx(truth["soc"] * 100, abs=0.06)
    assert soc.SoC.cvalue == pytest.approx(truth["soc"] * 100, abs=0.06)
    meter = scanned(fleet, "cls-meter").models[203][0]
    meter.read()
    m = fleet.truth("cls-meter")
    assert meter.W.cvalue == pytest.approx(m["grid_w"], abs=1.0)
    assert meter.TotWhImp.cvalue == pytest.approx(m["import_wh"], abs=1.0)
    assert meter.TotWhExp.cvalue == pytest.approx(m["export_wh"], abs=1.0)
    assert m["grid_w"] == pytest.approx(m["load_w"] - m["pv_w"] - m["battery_w"], abs=1e-6)


def test_pv_limit_written_over_123_shows_in_the_measurements(fleet):
    d = scanned(fleet, "cls-pv")
    ctl, inv, settings = d.models[123][0], d.models[103][0], d.models[121][0]
    settings.read()
    ctl.read()
    ctl.WMaxLimPct.cvalue = 5.0
    ctl.WMaxLim_Ena.value = 1
    ctl.WMaxLimPct_RvrtTms.value = 900
    ctl.write()
    fleet.step(60)
    inv.read()
    ctl.read()
    wmax = settings.WMax.cvalue
    assert fleet.truth("cls-pv")["available_w"] > 0.05 * wmax + 100
    assert ctl.WMaxLimPct.cvalue == pytest.approx(5.0)
    assert inv.W.cvalue == pytest.approx(0.05 * wmax, abs=1.0)
    assert inv.St.value == 5  # THROTTLED
    ctl.WMaxLim_Ena.value = 0
    ctl.write()
    fleet.step(60)
    inv.read()
    assert inv.W.cvalue > 0.05 * wmax + 100


def test_pv_limit_written_over_704_shows_in_the_measurements(fleet):
    d = scanned(fleet, "der-pv")
    ctl, meas = d.models[704][0], d.models[701][0]
    ctl.read()
    ctl.WMaxLimPct.cvalue = 10.0
    ctl.WMaxLimPctEna.value = 1
    ctl.WMaxLimPctRvrtTms.value = 900
    ctl.write()
    fleet.step(60)
    meas.read()
    truth = fleet.truth("der-pv")
    assert truth["limit_w"] == pytest.approx(0.1 * truth["wmax_w"])
    assert meas.W.cvalue == pytest.approx(min(truth["available_w"], 0.1 * truth["wmax_w"]), abs=1.0)
    ctl.WMaxLimPctEna.value = 0
    ctl.write()


def test_battery_setpoints_over_124_charge_and_discharge(fleet):
    d = scanned(fleet, "cls-bat")
    storage, inv = d.models[124][0], d.models[103][0]
    storage.read()
    soc0 = fleet.truth("cls-bat")["soc"]
    storage.OutWRte.cvalue = 40.0  # % of MaxDisChaRte (5 kW)
    storage.StorCtl_Mod.value = 2
    storage.InOutWRte_RvrtTms.value = 900
    storage.write()
    fleet.step(300)
    inv.read()
    storage.read()
    assert inv.W.cvalue == pytest.approx(2000.0, abs=1.0)
    assert storage.ChaSt.value == 3  # DISCHARGING
    assert storage.ChaState.cvalue < soc0 * 100
    storage.InWRte.cvalue = 20.0  # % of WChaMax (5 kW)
    storage.StorCtl_Mod.value = 1
    storage.write()
    fleet.step(60)
    inv.read()
    assert inv.W.cvalue == pytest.approx(-1000.0, abs=1.0)
    storage.StorCtl_Mod.value = 0
    storage.write()


def test_battery_setpoint_over_704_wset(fleet):
    d = scanned(fleet, "der-bat")
    ctl, meas = d.models[704][0], d.models[701][0]
    ctl.read()
    ctl.WSet.cvalue = -1500
    ctl.WSetMod.value = 1
    ctl.WSetEna.value = 1
    ctl.write()
    fleet.step(60)
    meas.read()
    assert meas.W.cvalue == pytest.approx(-1500.0, abs=1.0)
    assert fleet.truth("der-bat")["battery_w"] == pytest.approx(-1500.0)
    ctl.WSetEna.value = 0
    ctl.write()


def test_write_out_of_range_is_refused_with_exception_3_and_changes_nothing(fleet):
    d = scanned(fleet, "cls-pv")
    ctl = d.models[123][0]
    ctl.read()
    before = ctl.WMaxLimPct.value
    ctl.WMaxLimPct.cvalue = 150.0
    with pytest.raises(ModbusClientError, match="exception: 3"):
        ctl.WMaxLimPct.write()
    ctl.read()
    assert ctl.WMaxLimPct.value == before
    storage = scanned(fleet, "cls-bat").models[124][0]
    storage.read()
    storage.StorCtl_Mod.value = 9
    with pytest.raises(ModbusClientError, match="exception: 3"):
        storage.StorCtl_Mod.write()
    storage.read()
    assert storage.StorCtl_Mod.value == 0
    assert fleet.truth("cls-bat")["commanded_w"] is None


def test_write_to_a_measurement_is_refused_with_exception_2(fleet):
    inv = scanned(fleet, "cls-pv").models[103][0]
    inv.read()
    inv.W.value = 1
    with pytest.raises(ModbusClientError, match="exception: 2"):
        inv.W.write()
