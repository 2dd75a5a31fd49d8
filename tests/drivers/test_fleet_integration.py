"""Drivers against the simulated fleet over real Modbus TCP on loopback (simulators.fleet.FleetHost).

One stepped-clock fleet serves the module: every variant (classic 103/123, float 113, DER
701/704; base address 0, 40000, 50000; common model L=65 and 66), a gateway with several unit ids
on one port, and sites with an installer limit. Each test builds its own poller, so back-off and
staleness start fresh, and steps the shared clock forward.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys

import pytest

from sparcs.config.schema import DispatchConfig, FaultSpec, validate_config
from sparcs.drivers.poller import FleetPoller
from sparcs.drivers.telemetry import MISSING, NO_LIMIT
from sparcs.drivers.writer import BATTERY_DEADBAND_W, Setpoint, SetpointWriter
from sparcs.simulators.clock import SimClock
from sparcs.simulators.fleet import FleetHost
from tests.drivers.conftest import good, step_and_poll

pytestmark = pytest.mark.asyncio(loop_scope="module")

START = dt.datetime(2026, 6, 21, 10, 0, tzinfo=dt.UTC).timestamp()  # noon in Leipzig: the sun is up
SETTINGS = DispatchConfig(modbus_timeout_s=0.3, stale_after_polls=2, revert_timeout_s=60, poll_interval_s=10)


def _site(sid: str, kwp: float, devices: list[dict], battery: bool = False, installer_pct: float = 100.0) -> dict:
    site = {
        "id": sid,
        "location": {"lat": 51.34, "lon": 12.37},
        "pv": {"kwp": kwp, "installer_limit_pct": installer_pct},
        "grid": {"feed_in_cap_pct": 60},
        "devices": devices,
    }
    if battery:
        site["battery"] = {"capacity_kwh": 10, "max_charge_w": 4000, "max_discharge_w": 4000}
    return site


def _dev(did: str, kind: str, port: int, unit: int = 1) -> dict:
    return {"id": did, "kind": kind, "port": port, "unit": unit}


FLEET = {
    "sites": [
        _site(
            "a",
            8.0,
            [_dev("a-pv", "pv_inverter", 1001), _dev("a-bat", "battery", 1002), _dev("a-m", "meter", 1003)],
            battery=True,
        ),
        _site("b", 6.0, [_dev("b-pv", "pv_inverter", 1011), _dev("b-bat", "battery", 1012)], battery=True),
        _site("c", 5.0, [_dev("c-pv", "pv_inverter", 1021)]),
        _site("d", 10.0, [_dev("d-pv", "pv_inverter", 1031)], installer_pct=70.0),
        # a gateway: three unit ids behind one port
        _site(
            "g",
            7.0,
            [_dev("g-pv", "pv_inverter", 1041, 1), _dev("g-bat", "battery", 1041, 2), _dev("g-m", "meter", 1041, 3)],
            battery=True,
        ),
        _site("f", 4.0, [_dev("f-pv", "pv_inverter", 1051)]),
    ],
    "simulation": {
        "seed": 5,
        "weather": {"cloudiness": 0.0},
        "variants": {
            "a-pv": {"models": "classic", "base_address": 40000, "common_len": 66},
            "a-bat": {"models": "classic", "base_address": 0},
            "b-pv": {"models": "der", "base_address": 0, "common_len": 65},
            "b-bat": {"models": "der", "base_address": 50000},
            "c-pv": {"models": "float", "base_address": 50000, "common_len": 65},
            "d-pv": {"models": "der", "base_address": 40000},
            "g-bat": {"models": "float"},
        },
    },
}


async def test_every_variant_discovered_and_values_equal_truth(fleet, poller) -> None:
    host, _ = fleet
    tel = await step_and_poll(host, poller)
    models = {i: t.models for i, t in tel.items()}
    assert {701, 704} <= set(models["b-pv"]) and {123, 103} <= set(models["a-pv"]) and 113 in models["c-pv"]
    assert 713 in models["b-bat"] and 124 in models["a-bat"]
    assert {s.driver.map.base for s in poller.devices.values()} == {0, 40000, 50000}
    for dev_id, t in tel.items():
        assert t.status == "online" and t.error is None, (dev_id, t.error)
        truth = host.truth(dev_id)
        if t.kind == "pv_inverter":
            assert good(t, "pv_w") == pytest.approx(truth["pv_w"], abs=1.0 + 1e-3 * truth["rating_w"])
            assert good(t, "rating_w") == pytest.approx(truth["rating_w"], rel=1e-3)
            assert good(t, "wmax_w") == pytest.approx(truth["wmax_w"], rel=1e-3)
            assert good(t, "energy_wh") == pytest.approx(truth["energy_wh"], abs=1.0)
            assert t.values["pv_limit_w"].value is None  # nothing written yet: no limit in force
        elif t.kind == "battery":
            assert good(t, "battery_w") == pytest.approx(truth["battery_w"], abs=1.0 + 1e-3 * truth["max_charge_w"])
            assert good(t, "soc") == pytest.approx(truth["soc"], abs=0.001)
            assert good(t, "capacity_wh") == pytest.approx(truth["capacity_wh"], rel=1e-3)
            assert good(t, "max_charge_w") == pytest.approx(truth["max_charge_w"], rel=1e-3)
        else:
            assert good(t, "grid_w") == pytest.approx(truth["grid_w"], abs=1.0)
            assert good(t, "import_wh") == pytest.approx(truth["import_wh"], abs=1.0)
            assert good(t, "export_wh") == pytest.approx(truth["export_wh"], abs=1.0)
    # 701/704 and 103/123 look the same; the classic set's 122 adds the device's clock offset
    assert tel["b-pv"].values.keys() == tel["a-pv"].values.keys() - {"clock_offset_s"}
    assert good(tel["a-pv"], "clock_offset_s") == pytest.approx(0.0, abs=1.5)


@pytest.mark.parametrize(
    ("mode", "quality"),
    [
        ("no_reply", "missing"),
        ("offline", "missing"),
        ("slow", "missing"),
        ("exception", "missing"),
        ("sentinel", "missing"),
        ("garbage", "bad"),
    ],
)
async def test_fault_gives_quality_and_leaves_the_rest_alone(fleet, poller, mode: str, quality: str) -> None:
    host, _ = fleet
    await step_and_poll(host, poller)
    # g-bat sits behind the gateway: its neighbours g-pv and g-m must not suffer.
    host.inject_fault(FaultSpec(device="g-bat", mode=mode, delay_s=1.0))
    for _ in range(SETTINGS.stale_after_polls):
        tel = await step_and_poll(host, poller)
    t = tel["g-bat"]
    assert t.values["battery_w"].quality == quality and t.values["soc"].quality == quality
    if quality == "missing":
        assert t.values["battery_w"].value is None  # never the previous reading
    if mode in ("no_reply", "offline", "slow", "exception"):
        assert t.status == "stale" and t.error
    for dev_id, other in tel.items():
        if dev_id != "g-bat":
            assert other.status == "online" and other.error is None, (dev_id, other.error)
            assert all(r.quality == "good" for r in other.values.values()), (dev_id, other.values)


async def test_frozen_counters_turn_bad(fleet, poller) -> None:
    host, _ = fleet
    await step_and_poll(host, poller, 60)
    host.inject_fault(FaultSpec(device="c-pv", mode="frozen"))
    qualities = []
    for _ in range(SETTINGS.stale_after_polls + 1):
        tel = await step_and_poll(host, poller, 60)
        qualities.append(tel["c-pv"].values["pv_w"].quality)
    assert qualities[0] == "good" and qualities[-1] == "bad"
    assert tel["c-pv"].values["energy_wh"].quality == "bad" and tel["c-pv"].status == "online"
    host.clear_fault("c-pv")
    tel = await step_and_poll(host, poller, 60)
    assert tel["c-pv"].values["pv_w"].quality == "good"


async def test_recovery_after_simulator_restart(fleet, poller) -> None:
    host, _ = fleet
    assert (await step_and_poll(host, poller))["f-pv"].status == "online"
    host.inject_fault(FaultSpec(device="f-pv", mode="reboot", duration_s=30))
    tel = await step_and_poll(host, poller)
    assert tel["f-pv"].values["pv_w"].quality == "missing"
    for _ in range(6):  # back-off grows, but the device is tried again within a few polls
        tel = await step_and_poll(host, poller, 20)
    assert tel["f-pv"].status == "online" and tel["f-pv"].values["pv_w"].quality == "good"


async def test_recovery_after_a_whole_simulator_restart() -> None:
    small = validate_config({"sites": [FLEET["sites"][2]], "simulation": {"seed": 5}})
    clock = SimClock(START, stepped=True)
    first = FleetHost(small, clock=clock, auto_ports=True)
    await first.start()
    ports = first.config  # the ports it bound; the restarted simulator binds the same ones
    poller = FleetPoller(ports.devices(), SETTINGS, clock.now)
    second = None
    try:
        assert (await poller.poll_once())["c-pv"].status == "online"
        await first.stop()
        for _ in range(SETTINGS.stale_after_polls):
            clock.step(10)
            t = (await poller.poll_once())["c-pv"]
        assert t.status == "stale" and t.values["pv_w"] == MISSING
        second = FleetHost(ports, clock=clock)
        await second.start()
        for _ in range(4):  # within the back-off the device is tried again
            await second.step(10)
            t = (await poller.poll_once())["c-pv"]
        assert t.status == "online" and t.values["pv_w"].quality == "good"
        assert t.values["pv_w"].value == pytest.approx(second.truth("c-pv")["pv_w"], abs=5)
    finally:
        await poller.close()
        if second is not None:
            await second.stop()


async def test_limit_clamped_refreshed_released(fleet, poller) -> None:
    host, clock = fleet
    await step_and_poll(host, poller)
    writer = SetpointWriter(poller, SETTINGS, clock.now)
    rating = host.truth("a-pv")["rating_w"]
    res = await writer.apply({"a-pv": Setpoint(pv_limit_w=10 * rating), "b-pv": Setpoint(pv_limit_w=0.0)})
    assert res["a-pv"].ok and res["a-pv"].clamped and res["a-pv"].written_w == pytest.approx(rating)
    assert res["b-pv"].ok and res["b-pv"].clamped  # 0 W is raised to the 1 % standby floor
    assert res["b-pv"].written_w == pytest.approx(0.01 * host.truth("b-pv")["wmax_w"])

    res = await writer.apply({"a-pv": Setpoint(pv_limit_w=2000.0), "b-pv": Setpoint(pv_limit_w=1500.0)})
    assert all(r.ok and r.action == "limit" and not r.mismatch for r in res.values())
    tel = await step_and_poll(host, poller)
    assert good(tel["a-pv"], "pv_limit_w") == pytest.approx(2000.0, rel=0.01)
    assert good(tel["b-pv"], "pv_limit_w") == pytest.approx(1500.0, rel=0.01)
    assert host.truth("a-pv")["pv_w"] <= 2000.0 * 1.01

    assert (await writer.apply({"a-pv": Setpoint(pv_limit_w=2000.0)}))["a-pv"].action == "unchanged"
    await host.step(0.4 * SETTINGS.revert_timeout_s - 10 - 1)  # not yet due
    assert await writer.refresh_due() == {}
    await host.step(2)
    refreshed = await writer.refresh_due()
    assert set(refreshed) == {"a-pv", "b-pv"} and all(r.ok for r in refreshed.values())
    assert host.truth("a-pv")["revert_s"] == pytest.approx(SETTINGS.revert_timeout_s, abs=1)

    # Without refreshes the device's own timer reverts the limit: what the refresh protects against.
    await host.step(SETTINGS.revert_timeout_s + 1)
    tel = await poller.poll_once()
    assert tel["b-pv"].values["pv_limit_w"] == NO_LIMIT

    res = await writer.apply({"a-pv": Setpoint(pv_limit_w=None)})
    assert res["a-pv"].ok and res["a-pv"].action == "release"
    tel = await step_and_poll(host, poller, 120)  # the inverter ramps back up to its installer configuration
    assert tel["a-pv"].values["pv_limit_w"] == NO_LIMIT and host.truth("a-pv")["limit_w"] is None


async def test_installer_limit_is_never_lifted(fleet, poller) -> None:
    host, clock = fleet
    await step_and_poll(host, poller)
    writer = SetpointWriter(poller, SETTINGS, clock.now)
    installer = host.truth("d-pv")["installer_w"]
    assert installer == pytest.approx(0.7 * host.truth("d-pv")["rating_w"])
    res = (await writer.apply({"d-pv": Setpoint(pv_limit_w=host.truth("d-pv")["rating_w"])}))["d-pv"]
    assert res.ok and res.clamped and res.written_w == pytest.approx(installer)
    res = (await writer.apply({"d-pv": Setpoint(pv_limit_w=None)}))["d-pv"]
    assert res.ok and res.action == "release"
    await host.step(30)
    assert host.truth("d-pv")["pv_w"] <= installer + 1.0


async def test_battery_setpoints_both_models(fleet, poller) -> None:
    host, clock = fleet
    await step_and_poll(host, poller)
    writer = SetpointWriter(poller, SETTINGS, clock.now)
    res = await writer.apply(
        {"a-bat": Setpoint(battery_w=-1500.0), "b-bat": Setpoint(battery_w=1200.0), "g-bat": Setpoint(battery_w=9e9)}
    )
    assert all(r.ok and r.action == "battery" for r in res.values()), res
    assert res["g-bat"].clamped and res["g-bat"].written_w == pytest.approx(4000.0)
    assert host.truth("a-bat")["commanded_w"] == pytest.approx(-1500.0, abs=5)
    assert host.truth("b-bat")["commanded_w"] == pytest.approx(1200.0, abs=5)
    assert res["a-bat"].readback_w == pytest.approx(-1500.0, abs=5)
    tel = await step_and_poll(host, poller)
    assert good(tel["a-bat"], "battery_w") == pytest.approx(host.truth("a-bat")["battery_w"], abs=5)
    res = await writer.apply({"a-bat": Setpoint(), "b-bat": Setpoint()})
    assert all(r.ok and r.action == "release" for r in res.values())
    assert host.truth("a-bat")["commanded_w"] is None and host.truth("b-bat")["commanded_w"] is None


async def test_battery_setpoint_within_the_deadband_below_the_request_is_not_rewritten(fleet, poller) -> None:
    host, clock = fleet
    await step_and_poll(host, poller)
    writer = SetpointWriter(poller, SETTINGS, clock.now)
    assert (await writer.apply({"a-bat": Setpoint(battery_w=-1000.0)}))["a-bat"].action == "battery"
    await step_and_poll(host, poller)

    async def action(w: float) -> str:
        r = (await writer.apply({"a-bat": Setpoint(battery_w=w)}))["a-bat"]
        assert r.ok and r.requested_w == w
        await step_and_poll(host, poller)
        return r.action

    # charging up to BATTERY_DEADBAND_W less than asked stands; never more than asked, nor further off
    assert await action(-1000.0 - BATTERY_DEADBAND_W) == "unchanged"
    assert host.truth("a-bat")["commanded_w"] == pytest.approx(-1000.0, abs=5)
    assert await action(-995.0) == "battery"  # in force −1000 W charges more than asked: rewritten
    assert host.truth("a-bat")["commanded_w"] == pytest.approx(-995.0, abs=5)
    assert await action(-995.0 - BATTERY_DEADBAND_W - 5.0) == "battery"
    assert await action(10.0) == "battery"  # the other direction is always written
    assert await action(10.0 + BATTERY_DEADBAND_W / 2) == "unchanged"
    # the timer still runs from the last write: 40 % of it on, the setpoint is rewritten as asked now
    await step_and_poll(host, poller, 0.4 * SETTINGS.revert_timeout_s)
    assert await action(10.0 + BATTERY_DEADBAND_W / 2) == "battery"
    assert host.truth("a-bat")["commanded_w"] == pytest.approx(20.0, abs=5)
    await writer.apply({"a-bat": Setpoint()})


async def test_writes_skip_monitor_only_and_stale_devices(fleet) -> None:
    host, clock = fleet
    cfg = host.config
    sites = [
        s.model_copy(update={"devices": [d.model_copy(update={"control": d.id != "c-pv"}) for d in s.devices]})
        for s in cfg.sites
    ]
    devices = [(s, d) for s in sites for d in s.devices]
    poller = FleetPoller(devices, SETTINGS, clock.now)
    try:
        host.inject_fault(FaultSpec(device="f-pv", mode="no_reply"))
        for _ in range(SETTINGS.stale_after_polls):
            await step_and_poll(host, poller)
        writer = SetpointWriter(poller, SETTINGS, clock.now)
        res = await writer.apply(
            {"c-pv": Setpoint(pv_limit_w=100.0), "f-pv": Setpoint(pv_limit_w=100.0), "nope": Setpoint(pv_limit_w=1.0)}
        )
        assert res["c-pv"].action == "skipped" and host.truth("c-pv")["limit_w"] is None
        assert res["f-pv"].action == "failed" and "stale" in res["f-pv"].detail
        assert res["nope"].action == "failed" and "unknown device 'nope'" in res["nope"].detail
    finally:
        host.clear_fault("f-pv")
        await poller.close()


async def test_monitor_only_at_run_time_gets_no_write_nor_refresh_only_a_release(fleet, poller) -> None:
    host, clock = fleet
    await step_and_poll(host, poller)
    switched: set[str] = set()
    writer = SetpointWriter(poller, SETTINGS, clock.now, monitor_only=switched)
    res = await writer.apply({"a-pv": Setpoint(pv_limit_w=2000.0), "d-pv": Setpoint(pv_limit_w=1000.0)})
    assert all(r.ok and r.action == "limit" for r in res.values())
    switched.update({"a-pv", "d-pv"})  # the controller's live set: switched to monitor-only
    res = await writer.apply({"a-pv": Setpoint(pv_limit_w=500.0)})
    assert res["a-pv"].action == "skipped" and "switched at run time" in res["a-pv"].detail
    await host.step(0.4 * SETTINGS.revert_timeout_s + 1)
    assert await writer.refresh_due() == {}  # a limit left behind is not kept alive
    released = await writer.release(["a-pv", "d-pv"])
    assert released["a-pv"].ok and released["a-pv"].action == "release"
    assert released["d-pv"].ok
    installer = host.truth("d-pv")["installer_w"]  # 70 % of the rating: a release never lifts it
    await host.step(30)
    assert host.truth("a-pv")["limit_w"] is None
    assert host.truth("d-pv")["pv_w"] <= installer + 1.0


async def test_failing_device_backs_off_and_is_skipped(fleet, poller) -> None:
    host, _ = fleet
    await step_and_poll(host, poller)
    host.inject_fault(FaultSpec(device="c-pv", mode="no_reply"))
    attempts = []
    for _ in range(6):
        await step_and_poll(host, poller)
        attempts.append(poller.state("c-pv").attempt_failures)
    # Tried at polls 1, 2, 4 (back-off 0.5, 1.5, 3.5 poll intervals), skipped in between.
    assert attempts == [1, 2, 2, 3, 3, 3]
    assert all(t.status == "online" for i, t in poller.devices.items() if i != "c-pv" for t in [t.telemetry])


async def _run_cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sparcs", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def test_scan_command_lists_models_and_points(fleet) -> None:
    host, _ = fleet
    ep = {e.id: e for e in host.endpoints()}
    g = ep["g-bat"]
    code, out, err = await _run_cli("scan", f"{g.host}:{g.port}", "--unit", str(g.unit), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert [m["id"] for m in report["models"]] == [1, 113, 120, 121, 124, 713]
    storage = next(m for m in report["models"] if m["id"] == 124)
    assert storage["points"]["WChaMax"]["units"] == "W" and storage["points"]["WChaMax"]["value"] == 4000
    b = ep["b-pv"]
    code, out, _ = await _run_cli("scan", f"{b.host}:{b.port}")
    assert code == 0 and "SunSpec at base 0" in out and "model 701 DERMeasureAC" in out and " W" in out
    code, _, err = await _run_cli("scan", f"{b.host}:{b.port}", "--unit", "9")
    assert code == 2 and "not a SunSpec device" in err and "Traceback" not in err


async def test_same_command_is_not_rewritten_until_the_device_lost_it(fleet, poller) -> None:
    host, clock = fleet
    await step_and_poll(host, poller)
    writer = SetpointWriter(poller, SETTINGS, clock.now)
    cmd = {"f-pv": Setpoint(pv_limit_w=1500.0), "a-bat": Setpoint(battery_w=-1000.0)}
    assert {r.action for r in (await writer.apply(cmd)).values()} == {"limit", "battery"}
    await step_and_poll(host, poller)
    assert {r.action for r in (await writer.apply(cmd)).values()} == {"unchanged"}
    # A reboot resets the inverter to its installer configuration: the next apply notices and rewrites.
    host.inject_fault(FaultSpec(device="f-pv", mode="reboot", duration_s=2))
    await step_and_poll(host, poller, 1)
    for _ in range(4):
        tel = await step_and_poll(host, poller, 10)
    assert tel["f-pv"].values["pv_limit_w"] == NO_LIMIT
    res = await writer.apply(cmd)
    assert res["f-pv"].action == "limit" and res["f-pv"].ok
    assert res["a-bat"].action == "battery"  # not lost, but 40 % of its 60 s timer has passed: rewritten
    await writer.apply({"f-pv": Setpoint(), "a-bat": Setpoint()})
