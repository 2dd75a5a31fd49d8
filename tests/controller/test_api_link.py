"""The link between the control process and the API process, both ends in one test: the API serves the
snapshot the control end publishes, a command goes to the control end's one command path and is in
force in the API's answers as soon as it is acknowledged, a refused one names its field, and a lost
control loop turns /healthz and commands into 503s."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import threading
import time

import httpx
import pytest

from sparcs.controller.api import build_app
from sparcs.controller.api_link import ApiLink, PublishedControl, RemoteCommands, follow
from sparcs.controller.auth import TokenBook, create_token
from sparcs.controller.cycle import WallClock
from sparcs.controller.read_model import ControllerView
from sparcs.controller.store import Store
from sparcs.factory import build_controller


async def until(check, timeout_s: float = 20.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if got := await check():
            return got
        await asyncio.sleep(0.05)
    raise AssertionError("timed out waiting")


@pytest.mark.timeout(120)
def test_the_api_end_serves_the_published_snapshot_and_commands_take_the_control_path(tmp_path, small_cfg):
    asyncio.run(_scenario(tmp_path, small_cfg))


async def _scenario(tmp_path, cfg):
    store = Store(data_dir=tmp_path)
    ctl = build_controller(cfg, store, WallClock())
    api_store = Store(data_dir=tmp_path)  # the API process's own connection to the same database
    token = create_token(store, "op", "operator", 0.0)
    send, down = socket.socketpair()
    receive, up = socket.socketpair()
    link = ApiLink(ctl, send, receive)
    await link.start()
    loop = asyncio.get_running_loop()
    _, writer = await asyncio.open_connection(sock=up)
    source, commands = PublishedControl(), RemoteCommands(writer)

    def answer(call_id, payload):
        loop.call_soon_threadsafe(commands.answer, call_id, payload)

    def gone():
        loop.call_soon_threadsafe(commands.disconnected)

    reader = threading.Thread(target=follow, args=(down, source, answer, gone), daemon=True)
    reader.start()
    app = build_app(ControllerView(cfg, api_store, source), commands, TokenBook(api_store, source.now), cfg.api)
    headers = {"Authorization": f"Bearer {token}"}
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api", headers=headers)
    try:
        await until(lambda: _ok(client, "/healthz"))
        assert (await client.get("/api/v1/commands")).json() == []
        expires = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
        sites = [s.id for s in cfg.sites]

        r = await client.post("/api/v1/commands/stage", json={"stage": "K2", "sites": sites[:1], "expires_at": expires})
        assert r.status_code == 201, r.text
        cid = r.json()["command"]["id"]
        assert [c.id for c in ctl.commands.active(time.time())] == [cid]  # in the control end's book
        assert [c["id"] for c in (await client.get("/api/v1/commands")).json()] == [cid]  # and shown at once
        caps = {c["site"]: c["stage"] for c in (await client.get("/api/v1/caps")).json()["sites"]}
        assert caps[sites[0]] == "K2" and caps[sites[1]] is None
        assert (await client.get("/api/v1/audit")).json()[0]["params"]["command_id"] == cid

        nowhere = {"stage": "K2", "sites": ["nowhere"], "expires_at": expires}
        r = await client.post("/api/v1/commands/stage", json=nowhere)
        assert r.status_code == 422 and r.json()["fields"][0]["field"] == "sites[0]"
        r = await client.post("/api/v1/commands/stage", json={"stage": "K9", "expires_at": expires})
        assert r.status_code == 422  # refused by the API itself, counted by the control end within a second

        def rejected() -> float:
            labels = {"type": "stage", "result": "rejected"}
            return ctl.metrics.registry.get_sample_value("sparcs_commands_total", labels) or 0.0

        await until(lambda: _true(rejected() >= 2))
        assert b"sparcs_commands_total" in (await until(lambda: _metrics(client)))

        r = await client.delete(f"/api/v1/commands/{cid}")
        assert r.status_code == 200 and r.json() == {"cancelled": [cid]}
        assert (await client.get("/api/v1/commands")).json() == []

        await link.close()  # the control process went away
        await until(lambda: _status(client, "/healthz", 503))
        r = await client.post("/api/v1/commands/dispatch-now")
        assert r.status_code == 503 and "not connected" in r.json()["error"]
        assert "control process: not connected" in (await client.get("/readyz")).json()["problems"]
    finally:
        await client.aclose()
        writer.close()
        await ctl.close()
        api_store.close()
        store.close()


async def _ok(client, path):
    return (await client.get(path)).status_code == 200


async def _status(client, path, code):
    return (await client.get(path)).status_code == code


async def _true(value):
    return value


async def _metrics(client):
    r = await client.get("/metrics", headers={"Authorization": client.headers["Authorization"]})
    return r.content if r.status_code == 200 and r.content else None
