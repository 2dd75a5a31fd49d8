"""Wiring: one controller from a fleet config, a store and a clock, with the real drivers and planner."""

from __future__ import annotations

from config.schema import FleetConfig
from controller.cycle import Clock, Controller
from controller.metrics import Metrics
from controller.planning import FleetPlanner
from controller.store import Store
from drivers.poller import FleetPoller
from drivers.writer import SetpointWriter
from optimizer.solver import PlanningWorker


def build_controller(
    cfg: FleetConfig, store: Store, clock: Clock, *, worker: PlanningWorker | None = None
) -> Controller:
    """A controller for ``cfg``'s devices; the solver process starts on the first dispatch."""
    poller = FleetPoller(cfg.devices(), cfg.dispatch, clock.now)
    writer = SetpointWriter(poller, cfg.dispatch, clock.now)
    return Controller(
        cfg, store, clock, poller=poller, writer=writer, planner=FleetPlanner(cfg, worker), metrics=Metrics()
    )
