"""A fleet behind edges on a real Mosquitto (TLS, password file, ACL) on a free loopback port.

:class:`EdgeWorld` runs in one event loop: the simulated sites (a stepped sim clock, shared by the
edges and the central), two edges polling them over Modbus TCP, the broker, and the central
controller. Messages cross the broker in real time; :meth:`EdgeWorld.until` waits for them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio

from sparcs.config.schema import FleetConfig, validate_config
from sparcs.controller.cycle import Controller
from sparcs.controller.store import Store
from sparcs.edge.central import EdgeHub
from sparcs.edge.mosquitto import Mosquitto, write_broker_files
from sparcs.edge.node import EdgeNode
from sparcs.factory import build_controller, build_edge
from sparcs.simulators.clock import SimClock
from sparcs.simulators.fleet import FleetHost
from tests.controller.conftest import small_fleet_data
from tests.ports import free_ports

NOON = dt.datetime(2026, 6, 21, 10, 0, tzinfo=dt.UTC).timestamp()  # 12:00 in Leipzig
EDGES = {"edge-1": [0, 1], "edge-2": [2]}  # edge id → indices of its sites in the small fleet
PASSWORDS = {"central": "central-secret", "edge-1": "edge-1-secret", "edge-2": "edge-2-secret"}


def edge_fleet_data(
    folder: Path,
    port: int,
    ca: Path | None,
    n_sites: int = 3,
    tiers: dict[str, float] | None = None,
    soc_initial: dict[int, float] | None = None,
) -> dict:
    """The small demo fleet with a broker section: edge-1 polls the first two sites, edge-2 the third.
    ``tiers``: ``dispatch.device_poll_interval_s`` (default none: every device at every poll);
    ``soc_initial``: the batteries' initial SoC by site index, where not the small fleet's."""
    data = small_fleet_data(n_sites)
    for i, soc in (soc_initial or {}).items():
        data["sites"][i]["battery"]["soc_initial"] = soc
    data["simulation"]["weather"]["cloudiness"] = 0.0
    # by default every device at every poll: most tests count polls and stale windows in poll intervals
    data["dispatch"]["device_poll_interval_s"] = tiers or {}
    for user, pw in PASSWORDS.items():
        (folder / f"{user}.pw").write_text(pw + "\n")
    ids = [s["id"] for s in data["sites"]]
    data["broker"] = {
        "host": "127.0.0.1",
        "port": port,
        "ca_file": str(ca) if ca else None,
        "password_file": str(folder / "central.pw"),
        "edges": [
            {"id": e, "sites": [ids[i] for i in idx], "password_file": str(folder / f"{e}.pw")}
            for e, idx in EDGES.items()
        ],
    }
    return data


@dataclass
class EdgeWorld:
    folder: Path
    broker: Mosquitto
    host: FleetHost
    clock: SimClock
    cfg: FleetConfig
    central_store: Store
    central: Controller
    edges: dict[str, EdgeNode] = field(default_factory=dict)

    @property
    def hub(self) -> EdgeHub:
        hub = self.central.writer.edge.hub  # type: ignore[attr-defined]
        assert isinstance(hub, EdgeHub)
        return hub

    async def until(self, cond: Callable[[], bool], timeout_s: float = 20.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout_s
        while not cond():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await asyncio.sleep(0.02)

    async def step(self, seconds: float = 10.0, *, dispatch: bool = False, central: bool = True):
        """Advance the simulators, run every edge's cycle, wait for their telemetry at the central,
        then run the central's cycle."""
        await self.host.step(seconds)
        for e in self.edges.values():
            await e.cycle()
        if not central:
            return None
        # what each edge holds after this poll (under tiered polling an inverter or battery is read
        # every n-th poll and keeps its last reading's time in between)
        held = {
            dev: tel.read_at
            for e in self.edges.values()
            if e.connected and e.ctl.state is not None
            for dev, tel in e.ctl.state.telemetry.items()
        }
        await self.until(
            lambda: all(
                self.hub.latest.get(d) is not None and self.hub.latest[d].read_at >= at for d, at in held.items()
            ),
            what="edge telemetry at the central",
        )
        return await self.central.cycle(dispatch=dispatch)

    def start_edge(self, edge_id: str) -> EdgeNode:
        store = Store(data_dir=self.folder / edge_id)
        node = build_edge(self.host.config, edge_id, store, self.clock, self.folder / edge_id)
        self.edges[edge_id] = node
        return node

    async def stop_edge(self, edge_id: str) -> None:
        node = self.edges.pop(edge_id)
        await node.close()
        node.ctl.store.close()


async def make_world(
    folder: Path,
    *,
    edges: bool = True,
    tiers: dict[str, float] | None = None,
    soc_initial: dict[int, float] | None = None,
) -> EdgeWorld:
    port = free_ports(1)[0]
    probe = validate_config(edge_fleet_data(folder, port, None, tiers=tiers, soc_initial=soc_initial))
    assert probe.broker is not None
    files = write_broker_files(folder / "broker", probe.broker, PASSWORDS, port=port)
    broker = Mosquitto(files, port)
    broker.start()
    cfg = validate_config(edge_fleet_data(folder, port, files.ca, tiers=tiers, soc_initial=soc_initial))
    clock = SimClock(NOON, stepped=True)
    host = FleetHost(cfg, clock=clock, auto_ports=True)
    await host.start()
    store = Store(data_dir=folder / "central")
    central = build_controller(host.config, store, clock)
    world = EdgeWorld(folder, broker, host, clock, host.config, store, central)
    world.hub.start()  # the central's persistent session exists before the first edge message
    await world.until(lambda: world.hub.connected, what="central connected")
    if edges:
        for e in EDGES:
            await world.start_edge(e).start()
        await world.until(lambda: all(e.connected for e in world.edges.values()), what="edges connected")
    return world


async def close_world(world: EdgeWorld) -> None:
    try:
        for e in list(world.edges):
            await world.stop_edge(e)
        await world.central.close()
        world.central_store.close()
        await world.host.stop()
    finally:
        world.broker.stop()  # a failed close leaks no broker process


def require_mosquitto() -> None:
    """Mosquitto's tools; missing, the test fails under CI (CI=true) and is skipped on a developer's machine."""
    path = f"{os.environ.get('PATH', '')}:/usr/sbin"
    if shutil.which("mosquitto", path=path) and shutil.which("mosquitto_passwd", path=path):
        return
    message = "mosquitto is not installed: install Debian's 'mosquitto' package (it is listed in .ci/apt-packages)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(autouse=True)
def _broker_tools(request):
    if request.node.get_closest_marker("slow") is not None:  # the tests with a real broker
        require_mosquitto()


@pytest_asyncio.fixture
async def world(tmp_path):
    w = await make_world(tmp_path)
    try:
        yield w
    finally:
        await close_world(w)
