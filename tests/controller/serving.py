"""A controller's API served by a real uvicorn server on a free loopback port, for tests that talk HTTP."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import uvicorn

from sparcs.config.schema import FleetConfig, validate_config
from sparcs.controller.api import create_app
from sparcs.controller.api_server import server_config
from sparcs.controller.cycle import Controller, WallClock
from sparcs.controller.reload import Reloader
from sparcs.controller.store import Store
from sparcs.factory import build_controller
from sparcs.simulators.clock import SimClock
from sparcs.simulators.fleet import FleetHost
from tests.ports import free_ports


@dataclass
class Served:
    ctl: Controller
    store: Store
    base_url: str


@contextlib.asynccontextmanager
async def serving(
    cfg: FleetConfig, data_dir, *, reloader_path=None, ctl: Controller | None = None
) -> AsyncIterator[Served]:
    """Serve ``cfg``'s controller (built on a store in ``data_dir`` unless ``ctl`` is given) with the
    uvicorn settings of `sparcs run` (:func:`server_config`: TLS from ``cfg.api``)."""
    store = ctl.store if ctl is not None else Store(data_dir=data_dir)
    ctl = ctl or build_controller(cfg, store, WallClock())
    reloader = Reloader(ctl, reloader_path) if reloader_path is not None else None
    config = server_config(create_app(ctl, reloader), cfg.api)
    config.host, config.port = "127.0.0.1", free_ports(1)[0]
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(200):
            if server.started or task.done():
                break
            await asyncio.sleep(0.05)
        assert server.started, "the API server did not start"
        scheme = "https" if cfg.api.tls_cert_file is not None else "http"
        yield Served(ctl, store, f"{scheme}://127.0.0.1:{config.port}")
    finally:
        server.should_exit = True
        await task
        await ctl.close()
        store.close()


@contextlib.asynccontextmanager
async def simulated(data: dict, data_dir, start_s: float) -> AsyncIterator[tuple[FleetHost, Controller, SimClock]]:
    """The simulated fleet of the fleet-file ``data`` on a stepped clock from ``start_s`` (free ports),
    and the real controller over it on a store in ``data_dir``; all stopped afterwards."""
    clock = SimClock(start_s, stepped=True)
    host = FleetHost(validate_config(data), clock=clock, auto_ports=True)
    await host.start()
    store = Store(data_dir=data_dir)
    ctl = build_controller(host.config, store, clock)
    try:
        yield host, ctl, clock
    finally:
        await ctl.close()
        store.close()
        await host.stop()
