"""`sparcs scan` and discovery across base addresses, over TCP: a device silent at 40000, refusing 0,
with its SunSpec map at 50000 (as some gateways are) is found, each base reported, and a config
snippet printed that check-config accepts.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import struct
import sys

import pytest
import pytest_asyncio
import yaml

from sparcs.config.schema import DeviceConfig, DispatchConfig, validate_config
from sparcs.drivers.poller import FleetPoller
from sparcs.drivers.scan import format_scan, run_scan
from sparcs.simulators.proxy import FORWARD, FaultProxy, FrameAction

pytestmark = pytest.mark.asyncio(loop_scope="module")

START = dt.datetime(2026, 6, 21, 10, 0, tzinfo=dt.UTC).timestamp()
SETTINGS = DispatchConfig(modbus_timeout_s=0.3, stale_after_polls=2, poll_interval_s=10)
SITE = {"id": "s", "location": {"lat": 51.34, "lon": 12.37}, "pv": {"kwp": 5.0}}
FLEET = {
    "sites": [SITE | {"devices": [{"id": "s-pv", "kind": "pv_inverter", "port": 1}]}],
    "simulation": {"variants": {"s-pv": {"base_address": 50000}}},
}


def _silent_at_40000(_unit: int, pdu: bytes) -> FrameAction | None:
    """Requests at 40000 get no reply at all (no exception): the client times out there."""
    if pdu[0] == 3 and struct.unpack(">H", pdu[1:3])[0] == 40000:
        return FrameAction(drop=True)
    return None


@pytest_asyncio.fixture(loop_scope="module")
async def silent_proxy(fleet):
    host, _clock = fleet
    ep = next(e for e in host.endpoints() if e.id == "s-pv")
    proxy = FaultProxy("127.0.0.1", 0, ep.port, lambda unit: FORWARD, pdu_action=_silent_at_40000)
    await proxy.open()
    try:
        yield proxy, ep.unit
    finally:
        await proxy.stop()


async def test_scan_tries_every_base_and_reports_each(silent_proxy) -> None:
    proxy, unit = silent_proxy
    report = await run_scan("127.0.0.1", proxy.port, unit, timeout_s=0.3)
    assert report["base"] == 50000 and report["kind"] == "pv_inverter"
    assert [(b["address"], b["result"]) for b in report["bases"]] == [
        (40000, "timeout"),
        (0, "exception"),
        (50000, "sunspec"),
    ]
    text = format_scan(report)
    assert "base 40000: timeout" in text and "base 50000: sunspec" in text


async def test_scan_prints_a_config_snippet_check_config_accepts(silent_proxy) -> None:
    proxy, unit = silent_proxy
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sparcs",
        "scan",
        f"127.0.0.1:{proxy.port}",
        "--unit",
        str(unit),
        "--timeout",
        "0.3",
        "--snippet",
        "roof-pv",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    (entry,) = yaml.safe_load(out.decode())
    assert entry == {
        "id": "roof-pv",
        "kind": "pv_inverter",
        "host": "127.0.0.1",
        "port": proxy.port,
        "unit": unit,
        "protocol": "sunspec",
    }
    validate_config({"sites": [SITE | {"devices": [entry]}]})


async def test_the_poller_discovers_past_a_silent_base(silent_proxy) -> None:
    proxy, unit = silent_proxy
    cfg = validate_config({"sites": [SITE | {"devices": [{"id": "x", "kind": "pv_inverter", "port": proxy.port}]}]})
    site = cfg.sites[0]
    dev: DeviceConfig = site.devices[0].model_copy(update={"unit": unit})
    poller = FleetPoller([(site, dev)], SETTINGS, lambda: START)
    try:
        tel = (await poller.poll_once())["x"]
        assert tel.status == "online" and tel.values["pv_w"].quality == "good", tel
    finally:
        await poller.close()
