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
from sparcs.simulators.fleet import FleetHost


@dataclass
class DemoFleet:
    """The running simulated fleet: ``config`` with the ports it bound, ``clock`` the controller's clock."""

    host: FleetHost
    clock: SimClock

    @property
    def config(self) -> FleetConfig:
        return self.host.config

    async def stop(self) -> None:
        """Close every device's port; safe to call twice."""
        await self.host.stop()


async def start_demo_fleet(cfg: FleetConfig) -> DemoFleet:
    """Serve ``cfg``'s simulated devices in real time (speed 1) from ``simulation.start`` or now.

    Raises OSError (an :class:`~sparcs.simulators.fleet.EndpointError`) when a device's port is taken.
    """
    if cfg.simulation is None:
        raise ValueError("the demo fleet needs a `simulation` section")
    start = cfg.simulation.start
    clock = SimClock(start.timestamp() if start else time.time(), speed=1.0)
    host = FleetHost(cfg, clock=clock)
    await host.start()
    return DemoFleet(host, clock)
