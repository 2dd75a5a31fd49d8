"""`sparcs run` with a `pool` section: the SunSpec pool interface is served by the API process, not by
the control process (so its clients' load cannot delay polling), from the snapshot, and a limit
written to it takes the command path to the control process (stored, audited, in force)."""

from __future__ import annotations

import psutil
import pytest
import sunspec2.modbus.client as ssc
import yaml

from tests.controller.test_run import Running, fleet_file
from tests.ports import free_ports

pytestmark = pytest.mark.slow


def listening_on(proc: psutil.Process, port: int) -> bool:
    return any(c.laddr.port == port and c.status == psutil.CONN_LISTEN for c in proc.net_connections("tcp"))


def test_the_pool_interface_is_served_by_the_api_process_and_its_limit_takes_the_command_path(tmp_path):
    path = fleet_file(tmp_path)
    data = yaml.safe_load(path.read_text())
    pool_port = free_ports(1)[0]
    data["pool"] = {"host": "127.0.0.1", "port": pool_port}
    path.write_text(yaml.safe_dump(data))
    r = Running(path, tmp_path / "data")
    try:
        assert f"SunSpec pool interface: 127.0.0.1:{pool_port}, units [1]" in r.lines
        r.wait_for(lambda: (now := r.http.get("/api/v1/fleet").json()["now"]) and now["online"] == now["total"])
        control = psutil.Process(r.proc.pid)
        serving = [p for p in control.children(recursive=True) if listening_on(p, pool_port)]
        assert not listening_on(control, pool_port) and len(serving) == 1
        assert serving[0].nice() > control.nice()  # the API process, niced below control

        d = ssc.SunSpecModbusClientDeviceTCP(slave_id=1, ipaddr="127.0.0.1", ipport=pool_port, timeout=5)
        try:
            d.scan()
            assert d.models[120][0].WRtg.cvalue > 0
            c = d.models[123][0]
            c.WMaxLimPct.cvalue = 40
            c.WMaxLimPct_RvrtTms.value = 600
            c.WMaxLim_Ena.value = 1
            c.write()
        finally:
            d.close()
        (limit,) = [c for c in r.http.get("/api/v1/commands").json() if c["kind"] == "pool_limit"]
        assert limit["params"]["limit_pct"] == 40 and limit["who"] == "pool:127.0.0.1"
        assert r.http.get("/api/v1/audit").json()[0]["action"] == "pool_limit"
    finally:
        r.close()
