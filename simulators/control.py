"""The control channel: a small HTTP API on loopback to step the clock, inject faults, read truth.

Endpoints (JSON): ``GET /clock``; ``POST /clock/step`` ``{"seconds": s}`` (stepped clocks only);
``GET /devices`` (the endpoints); ``GET /truth/{device}``; ``GET /sites/{site}/truth``;
``GET /faults``; ``POST /faults`` (a :class:`config.schema.FaultSpec`); ``DELETE /faults/{device}``;
the relay I/O modules: ``GET /io/{id}``, ``POST /io/{id}/contacts`` ``{"closed": [bool, ...]}``,
``POST /io/{id}/fault`` ``{"mode": "offline" | "no_reply" | "exception" | null}``.
Unknown devices answer 404, invalid bodies 422, stepping a free-running clock 409 — each with a
``detail`` that says what to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import socket
from dataclasses import asdict

import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

from sparcs.config.schema import FaultSpec
from sparcs.simulators.fleet import FleetHost
from sparcs.simulators.io_module import IoFault, IoModuleSim


class ContactsRequest(BaseModel):
    closed: list[bool] = Field(min_length=1, max_length=16, description="every contact in input order, True = closed")


class IoFaultRequest(BaseModel):
    mode: IoFault | None = Field(description="null clears the fault")


class StepRequest(BaseModel):
    seconds: float = Field(gt=0, le=7 * 86_400, description="sim seconds to advance")


def _clock(host: FleetHost) -> dict:
    now = host.clock.now()
    return {
        "now_s": now,
        "now": dt.datetime.fromtimestamp(now, dt.UTC).isoformat(),
        "speed": host.clock.speed,
        "stepped": host.clock.stepped,
    }


def control_app(host: FleetHost) -> FastAPI:
    """The control API of ``host``."""
    app = FastAPI(title="SPARCS simulator control", docs_url=None, redoc_url=None)

    def known(device: str) -> None:
        if device not in host.devices:
            raise HTTPException(404, f"unknown device '{device}'; GET /devices lists them")

    @app.get("/clock")
    async def get_clock() -> dict:
        return _clock(host)

    @app.post("/clock/step")
    async def step_clock(req: StepRequest) -> dict:
        if not host.clock.stepped:
            raise HTTPException(409, "the clock runs in real time; start the fleet with --stepped to step it")
        await host.step(req.seconds)
        return _clock(host)

    @app.get("/devices")
    async def devices() -> list[dict]:
        return [asdict(ep) for ep in host.endpoints()]

    @app.get("/truth/{device}")
    async def truth(device: str) -> dict:
        known(device)
        return host.truth(device)

    @app.get("/sites/{site}/truth")
    async def site_truth(site: str) -> dict:
        if site not in host.sites:
            raise HTTPException(404, f"unknown site '{site}'")
        return host.site_truth(site)

    @app.get("/faults")
    async def faults() -> list[dict]:
        active = (host.active_fault(d) for d in host.devices)
        return [f.model_dump(mode="json") for f in active if f is not None]

    @app.post("/faults")
    async def inject(spec: FaultSpec) -> dict:
        known(spec.device)
        host.inject_fault(spec)
        return spec.model_dump(mode="json")

    @app.delete("/faults/{device}")
    async def clear(device: str) -> dict:
        known(device)
        host.clear_fault(device)
        return {"device": device, "cleared": True}

    def io(io_id: str) -> IoModuleSim:
        if io_id not in host.io_modules:
            raise HTTPException(404, f"unknown io module '{io_id}'; the fleet file's relay_inputs name them")
        return host.io_modules[io_id]

    @app.get("/io/{io_id}")
    async def io_state(io_id: str) -> dict:
        return io(io_id).state()

    @app.post("/io/{io_id}/contacts")
    async def set_contacts(io_id: str, req: ContactsRequest) -> dict:
        module = io(io_id)
        try:
            module.set_contacts(req.closed)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        return module.state()

    @app.post("/io/{io_id}/fault")
    async def io_fault(io_id: str, req: IoFaultRequest) -> dict:
        module = io(io_id)
        module.set_fault(req.mode)
        return module.state()

    return app


class _Server(uvicorn.Server):
    def capture_signals(self):  # the caller owns SIGINT/SIGTERM
        return contextlib.nullcontext()


class ControlServer:
    """Serves :func:`control_app` with uvicorn inside the running event loop."""

    def __init__(self, host: FleetHost, bind: str = "127.0.0.1", port: int | None = None) -> None:
        # log_config=None: its records go through the process's log (sparcs.controller.logging_setup
        # configures it), not a format of uvicorn's own.
        config = uvicorn.Config(
            control_app(host), host=bind, port=port or 0, log_level="warning", lifespan="off", log_config=None
        )
        self._server = _Server(config)
        self._task: asyncio.Task | None = None
        self.bind = bind
        self._port = port or 0
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{self.bind}:{self.port}"

    async def start(self) -> str:
        """Start serving; returns the base URL. Binding here (not in uvicorn) keeps a port clash an OSError."""
        # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted sockets only when proto says TCP
        # (else Nagle with delayed ACK holds small replies on a kept-alive connection back ~40 ms).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.bind, self._port))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        self._task = asyncio.get_running_loop().create_task(self._server.serve(sockets=[sock]))
        while not self._server.started and not self._task.done():
            await asyncio.sleep(0.01)
        if self._task.done():
            self._task.result()
        return self.url

    async def stop(self) -> None:
        if self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
