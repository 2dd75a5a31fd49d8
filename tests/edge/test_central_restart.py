"""The central (`sparcs run` with a broker section) killed with -9: the edges go on safely on their
stored plan and commands; the central restarted resumes with its plan and commands."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from sparcs.config.grid_rules import feed_in_cap_w, stage_ceiling_w
from sparcs.config.schema import validate_config
from sparcs.controller.auth import create_token
from sparcs.controller.store import Store
from sparcs.edge.mosquitto import Mosquitto, write_broker_files
from sparcs.factory import build_edge
from sparcs.simulators.clock import SimClock
from sparcs.simulators.fleet import FleetHost
from tests.edge.conftest import EDGES, PASSWORDS, edge_fleet_data
from tests.ports import free_ports

pytestmark = pytest.mark.slow
SPARCS = [sys.executable, "-m", "sparcs"]


class Central:
    """One `sparcs run` process of the central, with an operator token made in its store beforehand."""

    def __init__(self, config: Path, data_dir: Path, token: str):
        self.port = free_ports(1)[0]
        self.proc = subprocess.Popen(
            [*SPARCS, "run", "--config", str(config), "--port", str(self.port), "--data-dir", str(data_dir)],
            stdout=subprocess.DEVNULL,
            stderr=open(data_dir / "central.log", "ab"),  # noqa: SIM115 - closed with the process
            cwd=Path(__file__).resolve().parents[2],
            start_new_session=True,
        )
        self.http = httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}", headers={"Authorization": f"Bearer {token}"}, timeout=30
        )

    async def ready(self) -> None:
        await until(lambda: self._get("/api/v1/session") is not None, 60, "the central's API")

    def _get(self, path: str):
        try:
            r = self.http.get(path)
        except httpx.HTTPError:
            return None
        return r.json() if r.status_code == 200 else None

    def kill(self) -> None:
        self.proc.kill()  # SIGKILL: no clean-up at all
        self.proc.wait(30)
        self.http.close()


async def until(cond, timeout_s: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def test_the_central_killed_and_restarted_resumes_while_the_edges_go_on(tmp_path):
    port = free_ports(1)[0]
    probe = validate_config(edge_fleet_data(tmp_path, port, None))
    files = write_broker_files(tmp_path / "broker", probe.broker, PASSWORDS, port=port)
    data = edge_fleet_data(tmp_path, port, files.ca)
    data["dispatch"] = {"poll_interval_s": 2, "dispatch_interval_s": 10, "solve_timeout_s": 20}
    data["simulation"]["start"] = None
    cfg = validate_config(data)
    clock = SimClock(time.time(), speed=1.0)
    host = FleetHost(cfg, clock=clock, auto_ports=True)
    broker = Mosquitto(files, port)
    broker.start()
    await host.start()
    central_data = {k: v for k, v in data.items() if k != "simulation"}
    central_data["sites"] = host.config.model_dump(mode="json")["sites"]
    central_file = tmp_path / "central.yaml"
    central_file.write_text(yaml.safe_dump(central_data))
    central_dir = tmp_path / "central"
    central_dir.mkdir()
    store = Store(data_dir=central_dir)
    token = create_token(store, "test-operator", "operator", time.time())
    store.close()

    stop = asyncio.Event()
    edges, tasks, stores = {}, [], []
    central = Central(central_file, central_dir, token)
    try:
        await central.ready()
        for e in EDGES:
            s = Store(data_dir=tmp_path / e)
            stores.append(s)
            edges[e] = build_edge(host.config, e, s, clock, tmp_path / e)
            tasks.append(asyncio.create_task(edges[e].run(stop)))
        sites = [s.id for s in cfg.sites]
        await until(lambda: all(n.ctl.plan is not None for n in edges.values()), 90, "the central's plan at the edges")
        expires = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=30)).isoformat()
        r = central.http.post(
            "/api/v1/commands/stage", json={"stage": "K2", "sites": [sites[0]], "expires_at": expires}
        )
        assert r.status_code == 201, r.text
        edge1 = edges["edge-1"]
        await until(lambda: edge1.ctl.commands.stage(sites[0], clock.now()) == "K2", 30, "the stage at the edge")
        plan_before = {e: n.ctl.plan for e, n in edges.items()}

        central.kill()
        t_kill = clock.now()
        while clock.now() < t_kill + 8:
            await asyncio.sleep(1)
            for site in host.config.sites:
                cap = feed_in_cap_w(site)
                if cap is not None:
                    assert -host.site_truth(site.id)["grid_w"] <= cap * 1.01 + 1.0, site.id
        # the edges went on: polling, on their stored plan, the stage still in force at the inverter
        assert all(n.ctl.last_poll_s is not None and n.ctl.last_poll_s > t_kill for n in edges.values())
        assert all(n.ctl.plan is plan_before[e] for e, n in edges.items())
        ceiling = stage_ceiling_w("K2", host.config.site(sites[0]).pv.rating_w)
        pv = next(d.id for d in host.config.site(sites[0]).devices if d.kind == "pv_inverter")
        assert host.truth(pv)["limit_w"] is not None and host.truth(pv)["limit_w"] <= ceiling + 20.0

        central = Central(central_file, central_dir, token)
        await central.ready()
        active = central._get("/api/v1/commands")
        assert any(c["kind"] == "stage" for c in (active.get("commands") if isinstance(active, dict) else active))
        assert central._get("/api/v1/plan") is not None
        # it publishes again: a new plan reaches the edges, the stage stays in force there
        await until(lambda: all(n.ctl.plan is not plan_before[e] for e, n in edges.items()), 60, "a new plan")
        assert edge1.ctl.commands.stage(sites[0], clock.now()) == "K2"
    finally:
        stop.set()
        for t in tasks:
            with contextlib.suppress(Exception):
                await t
        for n in edges.values():
            await n.close()
        for s in stores:
            s.close()
        if central.proc.poll() is None:
            central.kill()
        await host.stop()
        broker.stop()
