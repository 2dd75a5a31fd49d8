"""The API process of `sparcs run` as a process: a reload of the fleet file that changes ``logging``
changes the API process's log (level and format) too, uvicorn's records included."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest
import yaml

from sparcs.config.schema import load_config
from sparcs.controller.api_link import ApiLink
from sparcs.controller.api_process import ApiProcess
from sparcs.controller.cycle import WallClock
from sparcs.controller.reload import Reloader
from sparcs.controller.store import Store
from sparcs.factory import build_controller
from tests.controller.conftest import small_fleet_data

INVALID = "Invalid HTTP request received."
"""What uvicorn logs (WARNING, logger uvicorn.error) for bytes that are not HTTP."""


async def not_http(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"NOT HTTP AT ALL\r\n\r\n")
    await writer.drain()
    await reader.read()  # uvicorn answers 400 and closes
    writer.close()


@pytest.mark.timeout(120)
def test_a_reload_that_changes_logging_reaches_the_api_process(tmp_path, capfd):
    asyncio.run(_reload_logging(tmp_path, capfd))


async def _reload_logging(tmp_path, capfd):
    data = small_fleet_data()
    data["logging"] = {"level": "error", "format": "text"}
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(data))
    cfg = load_config(path)
    store = Store(data_dir=tmp_path)
    ctl = build_controller(cfg, store, WallClock())
    listen = socket.create_server(("127.0.0.1", 0))
    listen.setblocking(False)
    port = listen.getsockname()[1]
    api = ApiProcess(cfg, tmp_path, listen)  # no --log-level/--log-format: the file's section
    send, receive = api.start()
    link = ApiLink(ctl, send, receive, Reloader(ctl, path))
    try:
        await link.start()
        assert await link.ready(60)
        await not_http(port)
        await asyncio.sleep(1.0)
        assert INVALID not in capfd.readouterr().err  # at level error, a warning is not written

        data["logging"] = {"level": "warning", "format": "json"}
        path.write_text(yaml.safe_dump(data))
        report = Reloader(ctl, path).reload("test")
        assert report.applied == ["logging.level", "logging.format"], report
        link.reloaded()  # as after SIGHUP or POST /api/v1/admin/reload
        seen = ""
        deadline = time.monotonic() + 20.0
        while time.monotonic() < deadline and INVALID not in seen:
            await not_http(port)
            await asyncio.sleep(0.2)
            seen += capfd.readouterr().err
        line = next(line for line in seen.splitlines() if INVALID in line)
        record = json.loads(line)
        assert record["level"] == "WARNING" and record["logger"] == "uvicorn.error"
    finally:
        await link.close()
        await api.stop()
        listen.close()
        await ctl.close()
        store.close()
