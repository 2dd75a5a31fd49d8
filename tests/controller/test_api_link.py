"""The link between the control process and the API process, both ends in one test: the API serves the
snapshot the control end publishes, a command goes to the control end's one command path and is in
force in the API's answers as soon as it is acknowledged, a refused one names its field, a device's
control switch and a reload of the fleet file take the same path (the switch is in the snapshot,
the reloaded configuration reaches the API end), and a lost control loop turns /healthz and commands
into 503s."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import threading
import time

import httpx
import pytest
import yaml

from sparcs.config.schema import load_config
from sparcs.controller.api import build_app
from sparcs.controller.api_link import TELEMETRY_CHUNK, ApiLink, PublishedControl, RemoteCommands, follow
from sparcs.controller.auth import TokenBook, create_token
from sparcs.controller.cycle import WallClock
from sparcs.controller.read_model import ControllerView
from sparcs.controller.reload import Reloader
from sparcs.controller.state import FleetState
from sparcs.controller.store import Store
from sparcs.drivers.telemetry import Reading, Telemetry
from sparcs.factory import build_controller
from tests.controller.conftest import make_plan, small_fleet_data


async def until(check, timeout_s: float = 20.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if got := await check():
            return got
        await asyncio.sleep(0.05)
    raise AssertionError("timed out waiting")


@pytest.mark.timeout(120)
def test_the_api_end_serves_the_published_snapshot_and_commands_take_the_control_path(tmp_path):
    asyncio.run(_scenario(tmp_path))


async def _scenario(tmp_path):
    data = small_fleet_data()
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(data))
    cfg = load_config(path)
    api_cfg = cfg.model_copy(deep=True)  # the API process has its own copy, as after a spawn
    store = Store(data_dir=tmp_path)
    ctl = build_controller(cfg, store, WallClock())
    api_store = Store(data_dir=tmp_path)  # the API process's own connection to the same database
    token = create_token(store, "op", "operator", 0.0)
    admin = create_token(store, "root", "admin", 0.0)
    send, down = socket.socketpair()
    receive, up = socket.socketpair()
    link = ApiLink(ctl, send, receive, Reloader(ctl, path))
    await link.start()
    loop = asyncio.get_running_loop()
    _, writer = await asyncio.open_connection(sock=up)
    source, commands = PublishedControl(), RemoteCommands(writer)

    def answer(call_id, payload):
        loop.call_soon_threadsafe(commands.answer, call_id, payload)

    def gone():
        loop.call_soon_threadsafe(commands.disconnected)

    view = ControllerView(api_cfg, api_store, source)

    def configure(new):
        loop.call_soon_threadsafe(view.reconfigure, new)

    reader = threading.Thread(target=follow, args=(down, source, answer, gone, configure), daemon=True)
    reader.start()
    app = build_app(view, commands, TokenBook(api_store, source.now), api_cfg.api)
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

        dev = cfg.sites[0].devices[0].id
        r = await client.put(f"/api/v1/devices/{dev}/control", json={"controlled": False})
        assert r.status_code == 200, r.text
        assert r.json()["control"]["switch"] == "monitor-only" and r.json()["control"]["switched_by"] == "op"
        assert not ctl.device_control.controlled(dev)  # in the control end
        shown = (await client.get(f"/api/v1/devices/{dev}")).json()  # and shown at once, from the snapshot
        assert shown["control"] is False and shown["control_switch"]["switch"] == "monitor-only"
        r = await client.put("/api/v1/devices/nowhere/control", json={"controlled": False})
        assert r.status_code == 404 and "nowhere" in r.json()["error"]

        as_admin = {"Authorization": f"Bearer {admin}"}
        data["sites"][0]["name"] = "renamed by a reload"
        path.write_text(yaml.safe_dump(data))
        r = await client.post("/api/v1/admin/reload", headers=as_admin)
        assert r.status_code == 200 and r.json()["applied"] == [f"sites[0:{cfg.sites[0].id}].name"], r.text
        site = (await client.get(f"/api/v1/sites/{cfg.sites[0].id}")).json()
        assert site["name"] == "renamed by a reload"  # the API end reads the reloaded configuration
        path.write_text("sites: [")
        r = await client.post("/api/v1/admin/reload", headers=as_admin)
        assert r.status_code == 422 and r.json()["errors"], r.text

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


@pytest.mark.timeout(60)
def test_a_plan_crosses_the_link_once_and_every_snapshot_after_it_carries_it(tmp_path):
    asyncio.run(_plan_once(tmp_path))


async def _plan_once(tmp_path):
    cfg = load_config(_fleet_file(tmp_path))
    store = Store(data_dir=tmp_path)
    ctl = build_controller(cfg, store, WallClock())
    ctl.plan = make_plan(time.time(), [900.0] * 4, {cfg.sites[0].id: ([1000.0] * 4, [0.0] * 4)})
    link, up, source, kinds = _watched_link(ctl)
    try:
        await link.start()
        for _ in range(3):
            await until(lambda: _true(kinds.count("snapshot") >= 1))
            n = kinds.count("snapshot")
            link.publish()
            await until(lambda n=n: _true(kinds.count("snapshot") > n))
            assert source.snapshot().plan is not None and source.snapshot().plan.start_s == ctl.plan.start_s
        assert kinds.count("plan") == 1
        ctl.plan = make_plan(time.time() + 900, [900.0] * 4)  # a new dispatch
        link.publish()
        await until(lambda: _true(kinds.count("plan") == 2))
        await until(
            lambda: _true(source.snapshot().plan is not None and source.snapshot().plan.start_s == ctl.plan.start_s)
        )
    finally:
        await link.close()
        up.close()
        await ctl.close()
        store.close()


@pytest.mark.timeout(60)
def test_a_fleet_state_crosses_the_link_once_in_chunks_and_arrives_whole(tmp_path):
    asyncio.run(_state_once(tmp_path))


def _state(ts: float, devices: int) -> FleetState:
    telemetry = {
        f"d{i}": Telemetry(f"d{i}", "s", "meter", ts, "online", {"grid_w": Reading(float(i), "good")})
        for i in range(devices)
    }
    return FleetState(ts, {}, telemetry)


async def _state_once(tmp_path):
    cfg = load_config(_fleet_file(tmp_path))
    store = Store(data_dir=tmp_path)
    ctl = build_controller(cfg, store, WallClock())
    devices = 2 * TELEMETRY_CHUNK + 7  # three chunks
    ctl.state = _state(time.time(), devices)
    link, up, source, kinds = _watched_link(ctl)
    try:
        await link.start()
        for _ in range(3):  # the writes after a poll: new snapshots, the same fleet state
            n = kinds.count("snapshot")
            ctl.setpoints = {}
            link.publish()
            await until(lambda n=n: _true(kinds.count("snapshot") > n))
        assert kinds.count("state") == 1
        got = source.snapshot().state
        assert got is not None and got.telemetry == ctl.state.telemetry
        ctl.state = _state(time.time() + 5, devices)  # the next poll
        link.publish()
        await until(lambda: _true(kinds.count("state") == 2))
        await until(lambda: _true((s := source.snapshot().state) is not None and s.ts == ctl.state.ts))
        assert source.snapshot().state.telemetry == ctl.state.telemetry
    finally:
        await link.close()
        up.close()
        await ctl.close()
        store.close()


def _watched_link(ctl):
    """A link from ``ctl`` to an API end followed on a thread: the link, the API end's socket, the
    API end's source and the kinds of message it took, in order."""
    send, down = socket.socketpair()
    receive, up = socket.socketpair()
    source, kinds = PublishedControl(), []

    class Seen(PublishedControl):
        def receive(self, msg):
            kinds.append(msg[0])
            source.receive(msg)

    threading.Thread(target=follow, args=(down, Seen(), ignore, ignore, ignore), daemon=True).start()
    return ApiLink(ctl, send, receive), up, source, kinds


def ignore(*_args) -> None:
    """A callback of :func:`follow` this test does not follow."""


def _fleet_file(tmp_path):
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(small_fleet_data()))
    return path
