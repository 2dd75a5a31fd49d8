"""The simulated control-box I/O module: served by the fleet host for each relay input of the fleet
file, contacts and faults set on the control channel, read as discrete inputs over Modbus TCP."""

from __future__ import annotations

import asyncio
import contextlib
import json

import httpx
import pytest

from sparcs.config.schema import validate_config
from sparcs.drivers.errors import DeviceTimeoutError, DeviceUnreachableError, ModbusError
from sparcs.drivers.io_module import DiscreteInputLink
from sparcs.simulators.cli import serve_fleet
from sparcs.simulators.clock import SimClock
from sparcs.simulators.control import ControlServer
from sparcs.simulators.fleet import FleetHost
from tests.controller.conftest import small_fleet_data
from tests.ports import free_ports

pytestmark = pytest.mark.asyncio(loop_scope="function")


async def test_contacts_and_faults_set_on_the_control_channel_are_what_a_modbus_client_reads():
    data = small_fleet_data(1)
    data["relay_inputs"] = [{"id": "box", "port": 1, "unit": 3, "address": 20}]
    host = FleetHost(validate_config(data), clock=SimClock(0.0, stepped=True), auto_ports=True)
    await host.start()
    control = ControlServer(host)
    url = await control.start()
    link = DiscreteInputLink("127.0.0.1", host.config.relay_inputs[0].port, 0.5)
    try:
        assert await link.read_discrete(3, 20, 4) == [False] * 4
        async with httpx.AsyncClient(base_url=url) as http:
            r = await http.post("/io/box/contacts", json={"closed": [False, False, True, False]})
            assert r.status_code == 200 and r.json()["contacts"] == [False, False, True, False]
            assert await link.read_discrete(3, 20, 4) == [False, False, True, False]
            assert await link.read_discrete(3, 22, 1) == [True]
            r = await http.post("/io/box/contacts", json={"closed": [True]})
            assert r.status_code == 422 and "4 contacts" in r.text
            assert (await http.post("/io/nope/contacts", json={"closed": [True]})).status_code == 404

            await http.post("/io/box/fault", json={"mode": "exception"})
            with pytest.raises(ModbusError):
                await link.read_discrete(3, 20, 4)
            await http.post("/io/box/fault", json={"mode": "offline"})
            link.drop()
            with pytest.raises((DeviceUnreachableError, DeviceTimeoutError)):
                await link.read_discrete(3, 20, 4)
            r = await http.post("/io/box/fault", json={"mode": None})
            assert r.json()["fault"] is None
            assert await link.read_discrete(3, 20, 4) == [False, False, True, False]
    finally:
        link.drop()
        await control.stop()
        await host.stop()


async def test_sparcs_simulate_lists_each_io_module_before_the_control_channel():
    data = small_fleet_data(1)
    devices = data["sites"][0]["devices"]
    ports = free_ports(len(devices) + 2)
    for d, port in zip(devices, ports, strict=False):
        d["port"] = port
    data["simulation"]["control_port"] = ports[-1]
    data["relay_inputs"] = [{"id": "box", "port": ports[-2], "unit": 2}]
    lines: list[str] = []
    task = asyncio.create_task(serve_fleet(validate_config(data), as_json=True, stepped=True, out=lines.append))
    try:
        for _ in range(200):
            if lines and "control" in json.loads(lines[-1]):
                break
            await asyncio.sleep(0.05)
        *_, io_line, control = (json.loads(line) for line in lines)
        assert io_line == {"io_module": "box", "host": "127.0.0.1", "port": ports[-2], "unit": 2}
        assert "control" in control and len(lines) == len(devices) + 2
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
