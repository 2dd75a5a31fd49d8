"""Wiring: one controller from a fleet config, a store and a clock, with the real drivers and planner."""

from __future__ import annotations

from sparcs.config.schema import FleetConfig
from sparcs.controller.cycle import Clock, Controller
from sparcs.controller.metrics import Metrics
from sparcs.controller.planning import FleetPlanner
from sparcs.controller.store import Store
from sparcs.drivers.poller import FleetPoller
from sparcs.drivers.writer import SetpointWriter
from sparcs.optimizer.solver import PlanningWorker


def build_controller(
    cfg: FleetConfig, store: Store, clock: Clock, *, worker: PlanningWorker | None = None
) -> Controller:
    """A controller for ``cfg``'s devices; the solver process starts on the first dispatch."""
    poller = FleetPoller(cfg.devices(), cfg.dispatch, clock.now)
    writer = SetpointWriter(poller, cfg.dispatch, clock.now)
    return Controller(
        cfg, store, clock, poller=poller, writer=writer, planner=FleetPlanner(cfg, worker), metrics=Metrics()
    )
