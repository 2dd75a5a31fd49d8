"""Wiring: one controller from a fleet config, a store and a clock, with the real drivers.

The one place that assembles poller, writer, planner and :class:`~sparcs.controller.cycle.Controller`:
`sparcs run` uses it with the production planner, the twin (:mod:`sparcs.twin.replay`) with its
strategy's planner. It imports no simulator: the devices behind ``cfg`` are real or simulated alike.
"""

from __future__ import annotations

from sparcs.config.schema import FleetConfig
from sparcs.controller.cycle import Clock, Controller, Planner
from sparcs.controller.device_control import DeviceControl
from sparcs.controller.metrics import Metrics
from sparcs.controller.planning import FleetPlanner
from sparcs.controller.prices import PriceSource
from sparcs.controller.store import Store
from sparcs.controller.weather import weather_service
from sparcs.drivers.poller import FleetPoller
from sparcs.drivers.writer import SetpointWriter
from sparcs.optimizer.solver import PlanningWorker


def build_controller(
    cfg: FleetConfig,
    store: Store,
    clock: Clock,
    *,
    planner: Planner | None = None,
    worker: PlanningWorker | None = None,
) -> Controller:
    """A controller for ``cfg``'s devices on ``clock``.

    ``planner``: the planner to use; default the production planner
    (:class:`~sparcs.controller.planning.FleetPlanner` with ``worker``, whose solver process starts on
    the first dispatch unless started before, and the weather forecast ``cfg.forecast`` names).
    Give one of the two, not both.
    """
    if planner is not None and worker is not None:
        raise ValueError("give a planner or a worker for the production planner, not both")
    poller = FleetPoller(cfg.devices(), cfg.dispatch, clock.now)
    device_control = DeviceControl(store, cfg, clock.now)
    writer = SetpointWriter(poller, cfg.dispatch, clock.now, monitor_only=device_control.monitor_only)
    prices = PriceSource(cfg.market)  # one source for the planner and the export guard
    return Controller(
        cfg,
        store,
        clock,
        poller=poller,
        writer=writer,
        planner=planner
        if planner is not None
        else FleetPlanner(cfg, worker, weather=weather_service(cfg), prices=prices),
        device_control=device_control,
        metrics=Metrics(),
        prices=prices,
    )
