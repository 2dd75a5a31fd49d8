"""`sparcs simulate`: run a fleet's simulated devices until Ctrl-C or SIGTERM.

Prints every endpoint (``--json``: one JSON object a line with id, site, kind, host, port, unit)
and the control channel's URL (``--json``: ``{"control": "http://127.0.0.1:PORT"}``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from dataclasses import asdict

from sparcs.config.register_map import ProfileError
from sparcs.config.schema import FleetConfig, SimulationConfig
from sparcs.simulators.clock import SimClock
from sparcs.simulators.control import ControlServer
from sparcs.simulators.fleet import EndpointError, FleetHost, raise_nofile_limit


class SimulateError(Exception):
    """A problem a user can fix (port in use, bad option); ``lines`` name what and what to do."""

    def __init__(self, lines: list[str]):
        super().__init__("\n".join(lines))
        self.lines = lines


def _clock(sim: SimulationConfig, speed: float | None, stepped: bool) -> SimClock:
    start = sim.start.timestamp() if sim.start is not None else time.time()
    return SimClock(start, speed=speed if speed is not None else sim.speed, stepped=stepped)


async def serve_fleet(
    cfg: FleetConfig, *, speed: float | None = None, as_json: bool = False, stepped: bool = False, out=print
) -> None:
    """Start the fleet and its control channel, print them, serve until SIGINT/SIGTERM, stop cleanly."""
    if speed is not None and not 0 < speed <= 10_000:
        raise SimulateError([f"--speed: must be > 0 and ≤ 10000 sim seconds per wall second, got {speed}"])
    raise_nofile_limit()
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    sim = cfg.simulation or SimulationConfig()
    try:
        host = FleetHost(cfg, clock=_clock(sim, speed, stepped))
    except ProfileError as exc:
        raise SimulateError(str(exc).splitlines()) from None
    control = ControlServer(host, sim.host, sim.control_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        try:
            await host.start()
        except EndpointError as exc:
            raise SimulateError([str(exc)]) from None
        try:
            url = await control.start()
        except OSError as exc:
            raise SimulateError(
                [
                    f"simulation.control_port: cannot listen on {sim.host}:{sim.control_port}: {exc.strerror}; "
                    "free the port or choose another"
                ]
            ) from None
        for ep in host.endpoints():
            if as_json:
                out(json.dumps(asdict(ep)))
            else:
                out(f"{ep.id:<24} {ep.site:<16} {ep.kind:<12} {ep.host}:{ep.port} unit {ep.unit}")
        for r in host.config.relay_inputs:  # the simulated control-box I/O modules
            io = {"io_module": r.id, "host": r.host, "port": r.port, "unit": r.unit}
            out(json.dumps(io) if as_json else f"{r.id:<24} {'':<16} {'io_module':<12} {r.host}:{r.port} unit {r.unit}")
        out(json.dumps({"control": url}) if as_json else f"control: {url}")
        await stop.wait()
    finally:
        await control.stop()
        await host.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def run_simulate(cfg: FleetConfig, *, speed: float | None, as_json: bool, stepped: bool) -> None:
    """Blocking entry point for the CLI; raises SimulateError for problems a user can fix."""

    def out(line: str) -> None:
        print(line, flush=True)

    asyncio.run(serve_fleet(cfg, speed=speed, as_json=as_json, stepped=stepped, out=out))
