"""The demo fleet of `sparcs run`: with a `simulation` section the simulated devices run beside the
controller, in real time, on one machine.

Only :mod:`sparcs.run` imports this module, and only for a config with a `simulation` section: the
production path (real devices) never imports the simulators.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sparcs.config.schema import FleetConfig
from sparcs.simulators.clock import SimClock
from sparcs.simulators.control import ControlServer
from sparcs.simulators.fleet import FleetHost


@dataclass
class DemoFleet:
    """The running simulated fleet: ``config`` with the ports it bound, ``clock`` the controller's clock,
    ``control`` its control channel (faults, truth) when ``simulation.control_port`` is set."""

    host: FleetHost
    clock: SimClock
    control: ControlServer | None = None

    @property
    def config(self) -> FleetConfig:
        return self.host.config

    async def stop(self) -> None:
        """Close the control channel and every device's port; safe to call twice."""
        if self.control is not None:
            await self.control.stop()
        await self.host.stop()


async def start_demo_fleet(cfg: FleetConfig) -> DemoFleet:
    """Serve ``cfg``'s simulated devices in real time (speed 1) from ``simulation.start`` or now, and
    their control channel on ``simulation.control_port`` when it is set (as `sparcs simulate` does).

    Raises OSError (an :class:`~sparcs.simulators.fleet.EndpointError`) when a device's port is taken,
    or one naming ``simulation.control_port`` when that one is.
    """
    sim = cfg.simulation
    if sim is None:
        raise ValueError("the demo fleet needs a `simulation` section")
    clock = SimClock(sim.start.timestamp() if sim.start else time.time(), speed=1.0)
    host = FleetHost(cfg, clock=clock)
    await host.start()
    fleet = DemoFleet(host, clock)
    if sim.control_port is not None:
        control = ControlServer(host, sim.host, sim.control_port)
        try:
            await control.start()
        except OSError as exc:
            await host.stop()
            raise OSError(
                f"simulation.control_port: cannot listen on {sim.host}:{sim.control_port}: {exc.strerror}; "
                "free the port or choose another"
            ) from None
        fleet.control = control
    return fleet
