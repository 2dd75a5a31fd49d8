"""The demo fleet of `sparcs run`: with a `simulation` section the simulated devices run beside the
controller, in real time, on one machine, in a process of their own (so that neither the
controller's nor the API's load slows the devices down, and the devices' work never delays the
control loop: they stand in for hardware).

Only :mod:`sparcs.run` imports this module, and only for a config with a `simulation` section: the
production path (real devices) never imports the simulators.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import signal
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from sparcs.config.schema import FleetConfig
from sparcs.controller.heap import settle_heap
from sparcs.simulators.clock import SimClock
from sparcs.simulators.control import ControlServer
from sparcs.simulators.fleet import FleetHost, raise_nofile_limit

START_TIMEOUT_S = 300.0
"""How long the fleet process may take to bind every device (s; 1,000 devices take a few seconds)."""
STOP_TIMEOUT_S = 15.0


class DemoClock:
    """The controller's clock in the demo: the fleet process's sim clock, which runs in real time
    ``offset_s`` ahead of the wall clock (0 unless ``simulation.start`` is set). Unix s."""

    def __init__(self, offset_s: float):
        self.offset_s = offset_s

    def now(self) -> float:
        return time.time() + self.offset_s


@dataclass
class DemoFleet:
    """The running simulated fleet: ``config`` with the ports it bound, ``clock`` the controller's clock,
    ``control_url`` its control channel (faults, truth) when ``simulation.control_port`` is set."""

    process: BaseProcess
    link: Connection
    config: FleetConfig
    clock: DemoClock
    control_url: str | None = None

    async def stop(self) -> None:
        """Ask the fleet process to stop (close the link), wait for it; safe to call twice."""
        self.link.close()
        await asyncio.to_thread(self.process.join, STOP_TIMEOUT_S)
        if self.process.is_alive():
            self.process.terminate()
            await asyncio.to_thread(self.process.join, 5.0)
        if self.process.is_alive():
            self.process.kill()
            await asyncio.to_thread(self.process.join)


async def _serve(cfg: FleetConfig, origin_sim_s: float, origin_wall_s: float, link: Connection) -> None:
    sim = cfg.simulation
    assert sim is not None
    clock = SimClock(origin_sim_s + (time.time() - origin_wall_s), speed=1.0, wall=time.time)
    host = FleetHost(cfg, clock=clock)
    control: ControlServer | None = None
    try:
        try:
            await host.start()
        except OSError as exc:
            link.send(("error", str(exc)))
            return
        if sim.control_port is not None:
            control = ControlServer(host, sim.host, sim.control_port)
            try:
                await control.start()
            except OSError as exc:
                control = None
                link.send(
                    (
                        "error",
                        f"simulation.control_port: cannot listen on {sim.host}:{sim.control_port}: {exc.strerror}; "
                        "free the port or choose another",
                    )
                )
                return
        settle_heap()  # the simulated devices are held for good from here (sparcs.controller.heap)
        link.send(("ok", host.config, control.url if control else None))
        await asyncio.to_thread(_until_closed, link)
    finally:
        if control is not None:
            await control.stop()
        await host.stop()


def _until_closed(link: Connection) -> None:
    with contextlib.suppress(EOFError, OSError):
        while True:
            link.recv()


def fleet_main(cfg: FleetConfig, origin_sim_s: float, origin_wall_s: float, link: Connection) -> None:
    """The fleet process: deaf to Ctrl-C (the controller stops it by closing the link, or by dying)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise_nofile_limit()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    asyncio.run(_serve(cfg, origin_sim_s, origin_wall_s, link))


def _first_answer(link: Connection, timeout_s: float) -> tuple[object, ...] | None:
    with contextlib.suppress(EOFError, OSError):
        if link.poll(timeout_s):
            answer: tuple[object, ...] = link.recv()
            return answer
    return None


async def start_demo_fleet(cfg: FleetConfig) -> DemoFleet:
    """Serve ``cfg``'s simulated devices in real time (speed 1) from ``simulation.start`` or now, in a
    process of their own, with their control channel on ``simulation.control_port`` when it is set
    (as `sparcs simulate` does).

    Raises OSError naming the device's port or ``simulation.control_port`` when one is taken.
    """
    sim = cfg.simulation
    if sim is None:
        raise ValueError("the demo fleet needs a `simulation` section")
    origin_wall = time.time()
    origin_sim = sim.start.timestamp() if sim.start else origin_wall
    ctx = multiprocessing.get_context("spawn")
    mine, theirs = ctx.Pipe()
    process = ctx.Process(
        target=fleet_main, args=(cfg, origin_sim, origin_wall, theirs), name="sparcs-demo-fleet", daemon=False
    )
    process.start()
    theirs.close()
    answer = await asyncio.to_thread(_first_answer, mine, START_TIMEOUT_S)
    if answer is None or answer[0] != "ok":
        fleet = DemoFleet(process, mine, cfg, DemoClock(0.0))
        await fleet.stop()
        text = str(answer[1]) if answer else f"the simulated fleet did not start within {START_TIMEOUT_S:g} s"
        raise OSError(text)
    _, bound, url = answer
    assert isinstance(bound, FleetConfig)
    return DemoFleet(process, mine, bound, DemoClock(origin_sim - origin_wall), url if isinstance(url, str) else None)
